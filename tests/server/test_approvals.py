"""Change requests and approvals with break-glass (issue 19, item 3) against a live server,
on SQLite and on a spawned redis-server: a guarded flag refuses a widening change (409, the
problem says to file a request, nothing changed); the requester cannot approve, nor can the
bootstrap token request or approve; a second person's approval applies the change on the
version it was filed on (else 412 and the request failed); disabling never waits, even with
a request pending, and is audited as break-glass; requests expire after 24 h; every step is
an audit entry of kind ``request``. The store's requests and policies follow one contract.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from flagport.engine import Flag
from flagport_server.stores import open_store
from flagport_server.stores.base import (
    ApprovalPolicy,
    AuditEntry,
    ChangeRequest,
    Mutation,
    Store,
)
from tests.support.server import RunningServer, running_server
from tests.support.stores import BACKENDS

REQUESTS = "/admin/v1/requests"


class People:
    """The bootstrap admin and two personal admin tokens on one live server."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.admin = server.admin(timeout=30.0)
        self.tokens: dict[str, str] = {}
        for name in ("alice", "bob"):
            made = self.admin.post(
                "/admin/v1/tokens", json={"name": name, "scope": "admin", "expires": "90d"}
            )
            assert made.status_code == 201, made.text
            self.tokens[name] = made.json()["secret"]
        self.alice = server.client(timeout=30.0, headers=self._bearer("alice"))
        self.bob = server.client(timeout=30.0, headers=self._bearer("bob"))

    def _bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def close(self) -> None:
        for client in (self.admin, self.alice, self.bob):
            client.close()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def people(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[People]:
    directory = tmp_path_factory.mktemp(request.param)
    with (
        BACKENDS[request.param](directory) as backend,
        running_server(directory / "server", store=backend.url) as server,
    ):
        server.store_url = backend.url  # type: ignore[attr-defined]
        found = People(server)
        try:
            yield found
        finally:
            found.close()


def _flag(people: People, key: str) -> dict[str, Any]:
    answer = people.admin.get(f"/admin/v1/flags/{key}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _file(client: httpx.Client, key: str, change: dict[str, Any], reason: str) -> httpx.Response:
    return client.post(REQUESTS, json={"key": key, "change": change, "reason": reason})


def _audit(people: People, key: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = people.admin.get(
        "/admin/v1/audit", params={"flag": key}
    ).json()["entries"]
    return entries


def test_a_guarded_flag_waits_for_a_second_person(people: People) -> None:
    admin, alice, bob = people.admin, people.alice, people.bob
    made = admin.post("/admin/v1/flags", json={"key": "checkout", "tags": ["payments"]})
    assert made.status_code == 201, made.text
    policy = admin.post("/admin/v1/approvals", json={"tag": "payments", "reason": "PCI"})
    assert policy.status_code == 201, policy.text
    assert admin.get("/admin/v1/approvals").json()["policies"][0]["id"] == "tag:payments"
    before = _flag(people, "checkout")

    # A widening change without a request: refused, for everyone, nothing changed.
    for client in (alice, admin):
        refused = client.post("/admin/v1/flags/checkout/enable", json={"percentage": 50})
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert problem["title"] == "Approval required"
        assert "flags request" in problem["detail"]
        assert "tag:payments" in problem["detail"]
    assert _flag(people, "checkout") == before

    # The bootstrap token neither requests nor approves.
    change = {"kind": "enable", "percentage": 50}
    assert _file(admin, "checkout", change, "launch").status_code == 403
    filed = _file(alice, "checkout", change, "launch to half of the portal")
    assert filed.status_code == 201, filed.text
    request = filed.json()["request"]
    assert request["status"] == "pending"
    assert request["requested_by"] == "alice"
    assert request["version"] == before["version"]
    request_id = request["id"]
    own = alice.post(f"{REQUESTS}/{request_id}/approve")
    assert own.status_code == 403, own.text
    assert "second person" in own.json()["detail"]
    assert admin.post(f"{REQUESTS}/{request_id}/approve").status_code == 403
    assert _flag(people, "checkout") == before

    approved = bob.post(f"{REQUESTS}/{request_id}/approve", json={"reason": "looks good"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["request"]["status"] == "applied"
    assert approved.json()["request"]["decided_by"] == "bob"
    after = _flag(people, "checkout")
    assert after["enabled"] is True
    assert after["percentage"] == 50.0
    again = bob.post(f"{REQUESTS}/{request_id}/approve")
    assert again.status_code == 409
    assert "already applied" in again.json()["detail"]

    trail = _audit(people, "checkout")
    actions = [(e.get("kind", "flag"), e["action"]) for e in trail[:3]]
    assert actions == [
        ("request", "request.approved"),
        ("flag", "enable"),
        ("request", "request.created"),
    ]
    applied = trail[1]
    assert applied["actor"] == "bob"
    assert applied["request_id"] == request_id
    assert "launch to half" in applied["reason"]


def test_disable_never_waits_and_a_stale_approval_is_refused(people: People) -> None:
    admin, alice, bob = people.admin, people.alice, people.bob
    admin.post("/admin/v1/flags", json={"key": "wallet", "tags": ["payments"]})
    assert people.admin.get("/admin/v1/approvals").json()["policies"]
    first = _file(alice, "wallet", {"kind": "enable", "percentage": 20}, "start small")
    bob.post(f"{REQUESTS}/{first.json()['request']['id']}/approve").raise_for_status()
    pending = _file(alice, "wallet", {"kind": "enable", "percentage": 100}, "all in")
    assert pending.status_code == 201, pending.text
    pending_id = pending.json()["request"]["id"]

    # The kill switch and a lower percentage apply at once, with a request pending, by
    # anyone (the bootstrap token too), audited as break-glass.
    lower = bob.post("/admin/v1/flags/wallet/enable", json={"percentage": 5})
    assert lower.status_code == 200, lower.text
    off = admin.post("/admin/v1/flags/wallet/disable", json={"reason": "errors spiking"})
    assert off.status_code == 200, off.text
    assert _flag(people, "wallet")["enabled"] is False
    trail = _audit(people, "wallet")
    assert [e["action"] for e in trail[:2]] == ["disable", "enable"]
    assert all(e.get("break_glass") is True for e in trail[:2])

    # The request was filed on a version that is gone: 412, the request failed, nothing
    # changed.
    stale = bob.post(f"{REQUESTS}/{pending_id}/approve")
    assert stale.status_code == 412, stale.text
    assert "file the request again" in stale.json()["detail"]
    assert _flag(people, "wallet")["enabled"] is False
    listed = {r["id"]: r for r in admin.get(REQUESTS).json()["requests"]}
    assert listed[pending_id]["status"] == "failed"
    assert _audit(people, "wallet")[0]["action"] == "request.failed"


def test_every_way_to_widen_a_guarded_flag_is_held(people: People) -> None:
    admin, alice, bob = people.admin, people.alice, people.bob
    admin.put("/admin/v1/segments/staff", json={"included": ["u1"]}).raise_for_status()
    rule = {
        "conditions": [{"attribute": "x", "op": "in_segment", "values": ["staff"]}],
        "variant": "on",
    }
    created = admin.post(
        "/admin/v1/flags", json={"key": "refunds", "tags": ["payments"], "rules": [rule]}
    )
    assert created.status_code == 201, created.text
    version = _flag(people, "refunds")["version"]
    widening = [
        ("PUT", "/admin/v1/flags/refunds/targets", {"targets": {"on": ["u9"]}}, {}),
        ("PUT", "/admin/v1/segments/staff", {"included": ["u1", "u2"]}, {}),
        ("POST", "/admin/v1/rollouts", {"key": "refunds", "steps": "10,100"}, {}),
        ("DELETE", "/admin/v1/flags/refunds", None, {}),
        (
            "PUT",
            "/admin/v1/flags/refunds",
            {"tags": [], "rules": [rule]},
            {"If-Match": f'"{version}"'},
        ),
    ]
    for method, path, body, headers in widening:
        answer = admin.request(method, path, json=body, headers=headers)
        assert answer.status_code == 409, f"{method} {path}: {answer.text}"
        assert answer.json()["title"] == "Approval required"
    exported = admin.get("/admin/v1/snapshot").json()
    exported["flags"]["refunds"]["enabled"] = True
    imported = admin.post("/admin/v1/snapshot", json=exported)
    assert imported.status_code == 409, imported.text
    assert _flag(people, "refunds")["version"] == version

    # The same change, requested and approved, goes through.
    filed = _file(alice, "staff", {"kind": "segment", "segment": {"included": ["u1", "u2"]}}, "QA")
    assert filed.status_code == 201, filed.text
    done = bob.post(f"{REQUESTS}/{filed.json()['request']['id']}/approve")
    assert done.status_code == 200, done.text
    assert admin.get("/admin/v1/segments/staff").json()["included"] == ["u1", "u2"]
    # Rejected requests change nothing and say who and why.
    other = _file(alice, "refunds", {"kind": "delete"}, "unused")
    rejected = bob.post(
        f"{REQUESTS}/{other.json()['request']['id']}/reject", json={"reason": "still used"}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["request"]["status"] == "rejected"
    assert rejected.json()["request"]["decision"] == "still used"
    assert _flag(people, "refunds")["version"] == version


def _write_directly(people: People, request: ChangeRequest, committed: list[Any]) -> None:
    """Write ``request`` into the server's store, then ``committed`` (a commit's mutations
    and entries) if any, as no API would: a request left by an older day, or by a server that
    stopped in the middle of an approval."""

    async def write() -> None:
        store = open_store(people.server.store_url)  # type: ignore[attr-defined]
        await store.open()
        try:
            await store.add_change_request(request, [])
            if committed:
                await store.commit(*committed)
        finally:
            await store.close()

    asyncio.run(write())


def test_a_request_expires_after_a_day(people: People) -> None:
    admin, bob = people.admin, people.bob
    admin.post("/admin/v1/flags", json={"key": "payouts", "tags": ["payments"]})
    old = ChangeRequest(
        id="0000expired0",
        key="payouts",
        change={"kind": "enable", "percentage": 100},
        reason="forgotten",
        requested_by="alice",
        requested_by_id="someone-else",
        created_at="2026-01-01T00:00:00.000Z",
        expires_at="2026-01-02T00:00:00.000Z",
        status="pending",
        version=1,
    )
    _write_directly(people, old, [])
    late = bob.post(f"{REQUESTS}/{old.id}/approve")
    assert late.status_code == 409, late.text
    assert "expired at 2026-01-02T00:00:00.000Z" in late.json()["detail"]
    assert _flag(people, "payouts")["enabled"] is False
    assert admin.get(f"{REQUESTS}/{old.id}").json()["status"] == "expired"
    assert next(e["action"] for e in _audit(people, "payouts")) == "request.expired"


# -- the store contract ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_policies_and_requests(store: Store, tmp_path: Path) -> None:
    policy = ApprovalPolicy(
        id="tag:payments", kind="tag", target="payments", created_at="t", created_by="alice"
    )
    assert await store.add_approval_policy(policy)
    assert not await store.add_approval_policy(msgspec.structs.replace(policy, reason="x"))
    assert await store.approval_policies() == [policy]
    assert await store.remove_approval_policy("tag:payments") == policy
    assert await store.remove_approval_policy("tag:payments") is None
    assert await store.approval_policies() == []

    first = ChangeRequest(
        id="r1",
        key="checkout",
        change={"kind": "enable"},
        reason="go",
        requested_by="alice",
        requested_by_id="a1",
        created_at="2026-01-01T00:00:00.000Z",
        expires_at="2026-01-02T00:00:00.000Z",
        status="pending",
        version=3,
    )
    second = msgspec.structs.replace(first, id="r2", created_at="2026-01-01T01:00:00.000Z")
    await store.add_change_request(first, [])
    await store.add_change_request(second, [])
    assert await store.change_requests() == [first, second]
    applied = msgspec.structs.replace(first, status="applied", decided_by="bob")
    assert await store.decide_change_request(applied, "pending")
    # Of two decisions from the same state, one wins.
    assert not await store.decide_change_request(
        msgspec.structs.replace(first, status="rejected"), "pending"
    )
    third = msgspec.structs.replace(first, id="r3", created_at="2026-01-01T02:00:00.000Z")
    await store.add_change_request(third, ["r1"])  # a decided one dropped with the add
    assert await store.change_requests() == [second, third]
    assert not await store.decide_change_request(msgspec.structs.replace(first), "pending")

    # A claim (applied, applying) is settled once: the compare is on both fields, so of two
    # readers settling it, or a reader and the approval finishing late, one wins.
    claimed = msgspec.structs.replace(second, status="applied", decided_by="bob", applying=True)
    assert await store.decide_change_request(claimed, "pending")
    settled = msgspec.structs.replace(claimed, applying=False)
    assert not await store.decide_change_request(settled, "applied")  # not as unclaimed
    assert await store.decide_change_request(settled, "applied", applying=True)
    assert not await store.decide_change_request(settled, "applied", applying=True)
    assert await store.change_requests() == [settled, third]


def test_an_approval_cut_short_is_settled_from_the_audit(people: People) -> None:
    """A server stopped between claiming an approved request and committing its change: a
    minute later a read says what happened, from the audit (the change's entries name the
    request, in the change's own commit)."""
    admin = people.admin
    claimed_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 120))
    for key in ("invoices", "receipts"):
        assert admin.post("/admin/v1/flags", json={"key": key}).status_code == 201
    claimed = ChangeRequest(
        id="00000000cut0",
        key="invoices",
        change={"kind": "enable", "percentage": 100},
        reason="go",
        requested_by="alice",
        requested_by_id="someone",
        created_at=claimed_at,
        expires_at="2099-01-01T00:00:00.000Z",
        status="applied",
        version=1,
        decided_by="bob",
        decided_by_id="someone-else",
        decided_at=claimed_at,
        applying=True,
    )
    _write_directly(people, claimed, [])
    failed = admin.get(f"{REQUESTS}/{claimed.id}").json()
    assert (failed["status"], failed.get("applying")) == ("failed", None), failed
    assert failed["decision"].startswith("interrupted: the server stopped"), failed
    assert _flag(people, "invoices")["enabled"] is False
    assert _audit(people, "invoices")[0]["action"] == "request.failed"
    assert admin.get(f"{REQUESTS}/{claimed.id}").json() == failed  # settled once

    made = msgspec.structs.replace(claimed, id="00000000cut1", key="receipts")
    flag = Flag(version=2, enabled=True)
    entry = AuditEntry(
        actor="bob",
        action="enable",
        key="receipts",
        at=claimed_at,
        request_id=made.id,
        after={"enabled": True},
    )
    _write_directly(people, made, [[Mutation("flag", "receipts", "put", flag, 1)], [entry]])
    applied = admin.get(f"{REQUESTS}/{made.id}").json()
    assert (applied["status"], applied.get("applying")) == ("applied", None), applied
    assert _audit(people, "receipts")[0]["action"] == "request.approved"
