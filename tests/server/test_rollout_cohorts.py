"""Cohort metadata on OFREP answers (docs/spec.md section 13, "Cohort metadata"), from a real
server (subprocess, SQLite, ``--no-driver``) whose store holds a running plan on the portal's
``ui-improvements`` at 50 %: the plan flag's answers and its children's carry the unit's
cohort of the plan, single and bulk alike; flags outside the plan carry none; a unit decided
by targets is in neither cohort."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from flagport import LocalClient
from flagport.engine import EvaluationResult, Flag, Prerequisite, Reason
from flagport.reporting import Read, close_reads, open_reads
from flagport.rollout.cohorts import cohort_of, plan_flag_of
from flagport.rollout.outcomes import Cohort
from flagport.rollout.plan import PlanSpec, new_plan, start
from flagport_server.stores import SQLiteStore
from flagport_server.stores.base import Mutation
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until

PLAN = "ui-improvements"
CHILD = "ui-improvements.dropdown-fixes"
ROLLOUT_KEYS = {"rolloutFlag", "rolloutCohort", "rolloutVariant"}


def test_cohort_rule() -> None:
    flag = Flag(enabled=True, percentage=50)

    def result(variant: str, reason: Reason, **metadata: Any) -> EvaluationResult:
        return EvaluationResult(PLAN, variant == "on", variant, reason, metadata=metadata or None)

    assert cohort_of(result("on", Reason.SPLIT), flag) is Cohort.TREATMENT
    assert cohort_of(result("off", Reason.SPLIT), flag) is Cohort.CONTROL
    assert cohort_of(result("on", Reason.STATIC), flag) is Cohort.TREATMENT
    # Decided by targets or rules, a gate, or the kill switch: in neither.
    assert cohort_of(result("on", Reason.TARGETING_MATCH), flag) is None
    assert cohort_of(result("off", Reason.SPLIT, gatedBy="parent"), flag) is None
    assert cohort_of(result("off", Reason.DISABLED), flag) is None


def test_which_flags_report_for_a_plan() -> None:
    flags = {
        "a": Flag(),
        "a.b": Flag(),
        "a.b.c": Flag(),
        "a.b.c.d": Flag(),
        "ab": Flag(),
        "x": Flag(prerequisites=[Prerequisite(key="a.b")]),
        "y": Flag(),
    }
    assert plan_flag_of(flags, {"a", "a.b.c", "gone"}) == {
        "a": "a",
        "a.b": "a",
        "a.b.c": "a.b.c",  # the nearest plan wins
        "a.b.c.d": "a.b.c",
    }
    assert plan_flag_of(flags, {"a.b"}) == {
        "a.b": "a.b",
        "a.b.c": "a.b",
        "a.b.c.d": "a.b",
        "x": "a.b",
    }
    assert plan_flag_of(flags, set()) == {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The server, its store holding the running plan (the driver is off: it stays as set)."""
    with running_server(
        tmp_path_factory.mktemp("server"), seed=PORTAL_FLAGS, workers=1, extra=["--no-driver"]
    ) as live:
        asyncio.run(_start_plan_in_store(live))
        yield live


async def _start_plan_in_store(server: RunningServer) -> None:
    store = SQLiteStore(server.workdir / "flagport.db")
    await store.open()
    try:
        state = await store.load()
        now = time.time()
        plan = start(new_plan(PlanSpec(key=PLAN, steps=(50.0,), hold=3600), now), now)
        flag = state.document.flags[PLAN]
        exposed = msgspec.structs.replace(
            flag, enabled=True, percentage=50.0, targets={"on": ["vip"]}, version=flag.version + 1
        )
        await store.commit(
            [
                Mutation("plan", PLAN, "put", plan, None),
                Mutation("flag", PLAN, "put", exposed, flag.version),
            ],
            [],
        )
    finally:
        await store.close()


def _metadata(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.get("metadata", {}).items() if k in ROLLOUT_KEYS}


def test_answers_carry_the_units_cohort_of_the_plan(server: RunningServer) -> None:
    users = [f"user-{n}" for n in range(60)]
    with server.client() as client:
        deadline = time.monotonic() + 15
        while True:
            answer = client.post(
                f"/ofrep/v1/evaluate/flags/{PLAN}", json={"context": {"targetingKey": "user-0"}}
            ).json()
            if _metadata(answer) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        seen = set()
        for user in users:
            context = {"context": {"targetingKey": user}}
            plan = client.post(f"/ofrep/v1/evaluate/flags/{PLAN}", json=context).json()
            child = client.post(f"/ofrep/v1/evaluate/flags/{CHILD}", json=context).json()
            bulk = {
                item["key"]: item
                for item in client.post("/ofrep/v1/evaluate/flags", json=context).json()["flags"]
            }
            expected = {
                "rolloutFlag": PLAN,
                "rolloutCohort": "treatment" if plan["variant"] == "on" else "control",
                "rolloutVariant": plan["variant"],
            }
            seen.add(expected["rolloutCohort"])
            assert _metadata(plan) == expected, plan
            assert _metadata(child) == expected, child  # a child reports for its parent
            assert _metadata(bulk[PLAN]) == expected
            assert _metadata(bulk[CHILD]) == expected
            assert _metadata(bulk["enhanced-mobile-nav"]) == {}  # no plan there
            # The child's value follows its parent, as without a plan.
            assert child["value"] is (plan["variant"] == "on")
        assert seen == {"treatment", "control"}
        # A targeted unit is decided by targets, not the split: in neither cohort.
        vip = client.post(
            f"/ofrep/v1/evaluate/flags/{PLAN}", json={"context": {"targetingKey": "vip"}}
        ).json()
        assert vip["reason"] == "TARGETING_MATCH"
        assert _metadata(vip) == {}


def test_a_local_client_reads_the_same_cohorts_and_reports_them(server: RunningServer) -> None:
    """In process, the same metadata on the same answers (the snapshot feed names the running
    plans), and a request's reads collected for the outcome middleware."""
    context = {"targetingKey": "user-0"}
    with LocalClient(server.url, report_exposures=False) as local, server.client() as client:
        assert wait_until(lambda: bool(_metadata(_local(local, PLAN, context))), timeout=15.0)
        for user in [f"user-{n}" for n in range(40)] + ["vip"]:
            context = {"targetingKey": user}
            for key in (PLAN, CHILD, "enhanced-mobile-nav"):
                remote = client.post(
                    f"/ofrep/v1/evaluate/flags/{key}", json={"context": context}
                ).json()
                assert _metadata(_local(local, key, context)) == _metadata(remote), (key, user)
        treated = next(
            f"user-{n}"
            for n in range(100)
            if local.evaluate(PLAN, {"targetingKey": f"user-{n}"}).variant == "on"
        )
        reads, token = open_reads()
        try:
            assert local.is_enabled(CHILD, {"targetingKey": treated}) is True
            local.is_enabled("enhanced-mobile-nav", {"targetingKey": treated})
        finally:
            close_reads(token)
        assert reads == {Read(PLAN, "on", "treatment")}


def _local(local: LocalClient, key: str, context: dict[str, Any]) -> dict[str, Any]:
    """The local answer as OFREP shapes it (metadata only)."""
    return {"metadata": local.evaluate(key, context).metadata or {}}
