"""An approval whose outcome a reader must settle (docs/adr/0029, "Approvals" in docs/spec.md),
in process on a real SQLite store whose commits the test holds: the claim is written, the
change's commit waits, and a reader comes by after the grace. Whatever the order, the request
ends saying what the store holds, with one audit entry per outcome it went through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flagport.engine import Flag
from flagport_server import approvals
from flagport_server.approvals import APPLY_GRACE_S, INTERRUPTED, ApprovalService
from flagport_server.auth import Actor
from flagport_server.errors import StoreUnavailable
from flagport_server.runtime import Runtime
from flagport_server.services import AdminService
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from flagport_server.stores.base import (
    AuditEntry,
    AuditQuery,
    ChangeRequest,
    CommitResult,
    Mutation,
    Store,
)
from flagport_server.wire.approvals_v1 import EnableChange

pytestmark = pytest.mark.anyio

ALICE = Actor("alice", "token-alice")
BOB = Actor("bob", "token-bob")


class HeldStore:
    """A real store whose next commit, once :attr:`held` is set, waits for :attr:`release`
    (:attr:`committed` is set when it has landed); any commit can fail after it landed (a
    timeout after the store ran it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.held = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.committed = asyncio.Event()
        self.fail_after_commit = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        holding, self.held = self.held, False
        if holding:
            self.entered.set()
            await self.release.wait()
        result = await self.store.commit(mutations, audit)
        if holding:
            self.committed.set()
        if self.fail_after_commit:
            raise StoreUnavailable("the store did not answer in time")
        return result


class Later:
    """``time`` as the approvals module reads it, :data:`APPLY_GRACE_S` and more ahead."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
async def setting(tmp_path: Path) -> AsyncIterator[tuple[HeldStore, ApprovalService]]:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'flagport.db'}", poll_interval=3600.0)
    held = HeldStore(open_store(settings.store_url))
    runtime = Runtime(settings, held)  # type: ignore[arg-type]
    await runtime.start()
    try:
        admin = AdminService(runtime)
        await admin.create_flag("invoices", Flag(), ALICE, None)
        yield held, ApprovalService(admin)
    finally:
        await runtime.stop()


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Later:
    clock = Later()
    monkeypatch.setattr(approvals, "time", clock)
    return clock


async def _actions(service: ApprovalService) -> list[str]:
    entries = await service.admin.audit(AuditQuery(key="invoices", limit=100))
    return [e.action for e in reversed(entries)]


async def test_an_approval_committed_after_a_reader_settled_it_ends_applied(
    setting: tuple[HeldStore, ApprovalService], later: Later
) -> None:
    """The reader found no change (failed, interrupted); the change then committed: the
    request is applied after all, and its history says both."""
    held, service = setting
    filed, _ = await service.file("invoices", EnableChange(percentage=100), "go", ALICE)
    held.held = True
    approving = asyncio.create_task(service.approve(filed.id, BOB, "ok"))
    await held.entered.wait()  # claimed; the commit waits
    later.ahead = APPLY_GRACE_S + 1
    settled = await service.request(filed.id)
    assert (settled.status, settled.decision, settled.applying) == ("failed", INTERRUPTED, False)
    held.release.set()
    done, _ = await approving
    assert done.status == "applied"
    now = await service.request(filed.id)
    assert (now.status, now.applying, now.decision) == ("applied", False, "ok")
    assert (await service.admin.document()).flags["invoices"].enabled
    actions = await _actions(service)
    assert actions[-3:] == ["request.failed", "enable", "request.approved"], actions


async def test_a_reader_and_the_approval_settle_one_claim_once(
    setting: tuple[HeldStore, ApprovalService], later: Later
) -> None:
    """The change committed; the approval's own write and a late reader's both want to end
    the claim: one does, and one ``request.approved`` is audited."""
    held, service = setting
    filed, _ = await service.file("invoices", EnableChange(percentage=100), "go", ALICE)
    held.held = True
    approving = asyncio.create_task(service.approve(filed.id, BOB, "ok"))
    await held.entered.wait()
    held.release.set()
    await held.committed.wait()  # the change is in the store and its audit
    later.ahead = APPLY_GRACE_S + 1
    readers = [service.request(filed.id) for _ in range(3)]
    results = await asyncio.gather(approving, *readers)
    assert all(r.status == "applied" for r in results[1:]), results
    assert (await _actions(service)).count("request.approved") == 1


async def _approved_unanswered(held: HeldStore, service: ApprovalService) -> ChangeRequest:
    """A request filed and approved, whose change the store committed without answering
    (the approval raised 503)."""
    filed, _ = await service.file("invoices", EnableChange(percentage=100), "go", ALICE)
    held.fail_after_commit = True
    with pytest.raises(StoreUnavailable):
        await service.approve(filed.id, BOB, "ok")
    held.fail_after_commit = False
    return filed


async def test_a_store_error_after_the_commit_leaves_the_claim_to_the_audit(
    setting: tuple[HeldStore, ApprovalService], later: Later
) -> None:
    """The store ran the commit but did not answer: the approval fails with 503, the
    request is not marked failed (its change is served), and once the grace is over a
    reader settles it applied from the audit."""
    held, service = setting
    filed = await _approved_unanswered(held, service)
    claimed = await service.request(filed.id)
    assert (claimed.status, claimed.applying) == ("applied", True)
    later.ahead = APPLY_GRACE_S + 1
    settled = await service.request(filed.id)
    assert (settled.status, settled.applying) == ("applied", False)
    assert (await _actions(service)).count("request.approved") == 1


async def test_the_change_is_found_behind_many_later_entries(
    setting: tuple[HeldStore, ApprovalService], later: Later
) -> None:
    """A busy key: more entries since the claim than one audit page holds, the change's the
    oldest. The settle pages back to it (read from the newest page only, it said failed)."""
    held, service = setting
    filed = await _approved_unanswered(held, service)
    at = (await service.admin.audit(AuditQuery(key="invoices", limit=1)))[0].at
    busy = [
        AuditEntry(actor="bob", action="note", key="invoices", at=at, after={"n": n})
        for n in range(1100)
    ]
    await held.store.commit([], busy)
    later.ahead = APPLY_GRACE_S + 1
    settled = await service.request(filed.id)
    assert (settled.status, settled.applying) == ("applied", False)
