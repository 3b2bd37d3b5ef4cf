"""Rollout plans through the admin API of a real server (subprocess, SQLite) started with
``--no-driver``: plans stay scheduled (nobody drives them) unless the test writes one into
the store. A person's change to a prerequisite or a segment pauses the plan in the same
commit; bad requests are refused naming the problem, nothing changed; readers need the
viewer scope, writers admin; ``/readyz`` and ``/metrics`` warn of a running plan without a
driver (docs/spec.md, "Guarded rollouts")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from flagport.rollout.plan import PlanSpec, new_plan, start
from flagport_server.stores import SQLiteStore
from flagport_server.stores.base import Mutation
from tests.server._admin import assert_problem
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(
        tmp_path_factory.mktemp("server"), seed=PORTAL_FLAGS, workers=1, extra=["--no-driver"]
    ) as live:
        yield live


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def plan_of(admin: httpx.Client, key: str) -> dict[str, Any]:
    answer = admin.get(f"/admin/v1/rollouts/{key}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def audit_of(admin: httpx.Client, key: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = admin.get("/admin/v1/audit", params={"key": key}).json()[
        "entries"
    ]
    return entries


def test_a_prerequisite_or_a_segment_change_pauses_the_plan_in_the_same_commit(
    server: RunningServer,
) -> None:
    with server.admin() as admin:
        made = [
            admin.post("/admin/v1/flags", json={"key": "base", "enabled": True}),
            admin.put("/admin/v1/segments/beta", json={"included": ["u1"]}),
            admin.post(
                "/admin/v1/flags",
                json={
                    "key": "dependent",
                    "prerequisites": [{"key": "base"}],
                    "rules": [
                        {"conditions": [{"op": "in_segment", "values": ["beta"]}], "variant": "off"}
                    ],
                },
            ),
        ]
        assert [a.status_code for a in made] == [201, 201, 201], [a.text for a in made]
        for _ in range(2):
            answer = admin.post("/admin/v1/rollouts", json={"key": "dependent", "hold": "1h"})
            assert answer.status_code == 201, answer.text
            assert plan_of(admin, "dependent")["status"] == "scheduled"
            if _ == 0:
                changed = admin.post("/admin/v1/flags/base/disable", json={"reason": "oops"})
                cause = "prerequisite 'base' of 'dependent' changed by admin"
                touched = "base"
            else:
                changed = admin.put("/admin/v1/segments/beta", json={"included": ["u2"]})
                cause = "segment 'beta' used by 'dependent' changed by admin"
                touched = "beta"
            assert changed.status_code in (200, 201), changed.text
            paused = plan_of(admin, "dependent")
            assert (paused["status"], paused["plan"]["reason"]) == ("paused", cause)
            (pause,) = [e for e in audit_of(admin, "dependent") if e["action"] == "plan-pause"][:1]
            (change,) = audit_of(admin, touched)[:1]
            assert pause["snapshot_version"] == change["snapshot_version"]
            assert pause["actor"] == "admin"
            aborted = admin.post("/admin/v1/rollouts/dependent/abort", json={})
            assert aborted.status_code == 200, aborted.text


def test_bad_requests_are_refused_naming_the_problem_and_change_nothing(
    server: RunningServer,
) -> None:
    with server.admin() as admin:
        before = admin.get("/admin/v1/flags").json()["snapshot_version"]
        assert_problem(admin.post("/admin/v1/rollouts", json={"key": "nope"}), 404, "nope")
        assert_problem(
            admin.post(
                "/admin/v1/rollouts",
                json={"key": "auth-improvements", "guards": ["error_rate >> 5% over 5m"]},
            ),
            400,
            "column",
        )
        assert_problem(
            admin.post("/admin/v1/rollouts", json={"key": "auth-improvements", "steps": "50,10"}),
            400,
            "steps must increase",
        )
        assert_problem(
            admin.post("/admin/v1/rollouts", json={"key": "auth-improvements", "hold": 30}),
            400,
            "hold",
        )
        assert_problem(
            admin.post("/admin/v1/rollouts", json={"key": "auth-improvements", "extra": 1}),
            400,
            "extra",
        )
        assert_problem(admin.post("/admin/v1/rollouts/auth-improvements/pause"), 404, "no plan")
        assert admin.get("/admin/v1/flags").json()["snapshot_version"] == before
        created = admin.post("/admin/v1/rollouts", json={"key": "auth-improvements"})
        assert created.status_code == 201, created.text
        assert_problem(
            admin.post("/admin/v1/rollouts", json={"key": "auth-improvements"}),
            409,
            "already has a plan",
        )
        assert_problem(admin.post("/admin/v1/rollouts/auth-improvements/resume"), 409, "scheduled")
        admin.post("/admin/v1/rollouts/auth-improvements/abort")


def test_reads_need_the_viewer_scope_and_writes_admin(server: RunningServer) -> None:
    with server.admin() as admin:
        made = admin.post("/admin/v1/tokens", json={"name": "rollout-viewer", "scope": "viewer"})
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as viewer:
        assert viewer.get("/admin/v1/rollouts").status_code == 200
        assert (
            viewer.post("/admin/v1/rollouts", json={"key": "auth-improvements"}).status_code == 403
        )
    with server.client() as anonymous:
        assert anonymous.get("/admin/v1/rollouts").status_code == 401


async def test_readyz_and_metrics_warn_of_a_running_plan_without_a_driver(
    server: RunningServer,
) -> None:
    store = SQLiteStore(server.workdir / "flagport.db")
    await store.open()
    try:
        state = await store.load()
        now = time.time()
        plan = start(
            new_plan(PlanSpec(key="enhanced-mobile-nav", steps=(10.0,), hold=60), now), now
        )
        flag = state.document.flags["enhanced-mobile-nav"]
        exposed = msgspec.structs.replace(
            flag, enabled=True, percentage=10.0, version=flag.version + 1
        )
        await store.commit(
            [
                Mutation("plan", "enhanced-mobile-nav", "put", plan, None),
                Mutation("flag", "enhanced-mobile-nav", "put", exposed, flag.version),
            ],
            [],
        )
    finally:
        await store.close()
    with server.client() as client:
        deadline = time.monotonic() + 10
        while True:
            warnings = client.get("/readyz").json()["warnings"]
            found = [w for w in warnings if "no driver" in w]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found == [
            "rollout plan(s) enhanced-mobile-nav running with no driver ever: "
            "start a server with --driver on this store"
        ]
        metrics = client.get("/metrics").text
    assert 'flagport_rollout_step{flag="enhanced-mobile-nav"} 1.0' in metrics
    assert "flagport_rollout_driver_missing{" in metrics
    missing = [
        line for line in metrics.splitlines() if line.startswith("flagport_rollout_driver_missing{")
    ]
    assert missing
    assert all(line.endswith(" 1.0") for line in missing), missing
