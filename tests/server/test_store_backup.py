"""Whole-store backup and restore, the store contract's part (every backend): a backup read at
one version, a restore that makes a store hold exactly the backup and goes on from it, and
the refusals (a non-empty store without ``replace``; a file that is not a backup)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import msgspec
import pytest

from flagport.engine import Flag, Segment
from flagport.rollout.plan import PlanSpec, new_plan
from flagport_server.errors import InvalidInput, StoreNotEmpty
from flagport_server.stores.backup import (
    BACKUP_FORMAT_VERSION,
    StoreBackup,
    read_backup,
    write_backup,
)
from flagport_server.stores.base import (
    ApprovalPolicy,
    AuditEntry,
    AuditQuery,
    ChangeRequest,
    Mutation,
    Store,
    TokenRecord,
)
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord
from tests.support.stores import Backend

pytestmark = pytest.mark.anyio

AT = "2026-11-20T10:00:00+00:00"


def _entry(key: str, action: str, actor: str = "alice", **fields: object) -> AuditEntry:
    return AuditEntry(actor=actor, action=action, key=key, at=AT, **fields)  # type: ignore[arg-type]


def _token(id_: str, name: str) -> TokenRecord:
    return TokenRecord(
        id=id_, name=name, scope="admin", secret_hash=f"{id_:0>64}", created_at=AT, scope_model=2
    )


async def _populate(store: Store) -> bytes:
    """A store with something of every kind; returns its server secret."""
    await store.commit(
        [
            Mutation(
                "flag", "checkout", "put", Flag(version=1, enabled=True, percentage=10.0), None
            ),
            Mutation("flag", "checkout.v2", "put", Flag(version=1), None),
            Mutation("segment", "staff", "put", Segment(version=1, included=["u1", "u2"]), None),
        ],
        [_entry("checkout", "create"), _entry("staff", "create", kind="segment")],
    )
    await store.commit(
        [Mutation("flag", "checkout", "put", Flag(version=2, enabled=True, percentage=25.0), 1)],
        [_entry("checkout", "enable", actor="bob", reason="going well")],
    )
    plan = new_plan(PlanSpec(key="checkout", steps=(10.0, 50.0, 100.0), hold=60), 1_800_000_000.0)
    await store.commit(
        [Mutation("plan", "checkout", "put", plan, None)], [_entry("checkout", "plan-create")]
    )
    await store.add_token(_token("t-alice", "alice"))
    await store.add_token(_token("t-bob", "bob"))
    await store.add_approval_policy(
        ApprovalPolicy(
            id="tag:payments", kind="tag", target="payments", created_at=AT, created_by="alice"
        )
    )
    await store.add_change_request(
        ChangeRequest(
            id="r-1",
            key="checkout",
            change={"kind": "enable", "percentage": 50},
            reason="ready",
            requested_by="alice",
            requested_by_id="t-alice",
            created_at=AT,
            expires_at="2026-11-21T10:00:00+00:00",
            status="pending",
            version=2,
        ),
        [],
    )
    hook = WebhookRecord(id="wh_1", url="https://hooks.example/x", secret="s" * 32, created_at=AT)
    assert await store.add_webhook(hook, 2, 20)
    for audit_id, status in ((3, "delivered"), (4, "dead")):
        delivery = WebhookDelivery(
            webhook_id="wh_1",
            audit_id=audit_id,
            event="flag.changed",
            status=status,  # type: ignore[arg-type]
            attempts=1,
            first_try_at=1.0,
            last_try_at=2.0,
        )
        assert await store.record_delivery("wh_1", delivery, audit_id)
    return await store.server_secret()


def _restore_entry(reason: str = "test") -> AuditEntry:
    return AuditEntry(
        actor="restore", action="restore", key="*", at=AT, kind="snapshot", reason=reason
    )


async def test_a_backup_restored_into_an_empty_store_holds_everything(
    store: Store, store_backend: Backend
) -> None:
    secret = await _populate(store)
    backup = await store.backup()
    assert [r.key for r in backup.flags] == ["checkout", "checkout.v2"]
    assert [r.key for r in backup.segments] == ["staff"]
    assert [r.key for r in backup.plans] == ["checkout"]
    assert [json.loads(e.body)["action"] for e in backup.audit] == [
        "create",
        "create",
        "enable",
        "plan-create",
    ]
    assert len(backup.tokens) == 2
    assert backup.server_secret == secret.hex()
    source = await store.load()

    other = await _empty_twin(store_backend)
    try:
        version = await other.restore(backup, _restore_entry(), replace=False)
        restored = await other.load()
        assert restored.store_id == source.store_id
        assert version == restored.document.version == source.document.version + 1
        assert restored.document.flags == source.document.flags
        assert restored.document.segments == source.document.segments
        assert restored.plans == source.plans
        assert await other.server_secret() == secret
        assert sorted(t.id for t in await other.tokens()) == ["t-alice", "t-bob"]
        entries = await other.audit(AuditQuery(limit=100))
        assert [e.action for e in entries] == [
            "restore",
            "plan-create",
            "enable",
            "create",
            "create",
        ]
        originals = {e.id: e for e in await store.audit(AuditQuery(limit=100))}
        for e in entries[1:]:
            assert e == originals[e.id]  # ids, versions and bodies as they were
        assert entries[0].id == backup.audit_next_id
        assert entries[0].snapshot_version == version
        # The filters (indexes) work on the restored log, and ids go on after it.
        assert [e.action for e in await other.audit(AuditQuery(actor="bob"))] == ["enable"]
        assert len(await other.audit(AuditQuery(key="checkout"))) == 3
        committed = await other.commit([], [_entry("checkout", "note")])
        assert committed.audit_ids == [backup.audit_next_id + 1]
        assert [p.id for p in await other.approval_policies()] == ["tag:payments"]
        assert [r.id for r in await other.change_requests()] == ["r-1"]
        assert [w.id for w in await other.webhooks()] == ["wh_1"]
        assert await other.webhook_cursor("wh_1") == 4
        dead = await other.deliveries("wh_1", failed=True, limit=10)
        assert [(d.audit_id, d.status) for d in dead] == [(4, "dead")]
        assert (await other.delivery("wh_1", 3)).status == "delivered"  # type: ignore[union-attr]
        # A backup of the restored store is the same backup.
        again = await other.backup()
        assert again.flags == backup.flags
        assert again.webhooks == backup.webhooks
        assert again.webhook_deliveries == backup.webhook_deliveries
        assert again.approval_policies == backup.approval_policies
        assert again.audit[:-2] == backup.audit  # then the restore and the note
    finally:
        await other.close()


async def _empty_twin(backend: Backend) -> Store:
    """A fresh, empty store of ``backend``'s kind (its own file or key prefix)."""
    twin = backend.sibling()
    await twin.open()
    return twin


async def test_a_restore_into_a_store_that_holds_anything_is_refused_unless_replace(
    store: Store, store_backend: Backend
) -> None:
    await _populate(store)
    backup = await store.backup()
    other = await _empty_twin(store_backend)
    try:
        await other.commit(
            [Mutation("flag", "legacy", "put", Flag(version=1), None)],
            [_entry("legacy", "create", actor="carol")],
        )
        before = await other.load()
        with pytest.raises(StoreNotEmpty, match=r"1 flags.*1 audit.*--replace"):
            await other.restore(backup, _restore_entry(), replace=False)
        assert await other.load() == before  # nothing changed
        # Replacing removes what the target had of every kind, webhooks included.
        hook = WebhookRecord(
            id="wh_old", url="https://old.example/x", secret="o" * 32, created_at=AT
        )
        assert await other.add_webhook(hook, 1, 20)
        before = await other.load()
        with pytest.raises(StoreNotEmpty, match=r"1 webhooks"):
            await other.restore(backup, _restore_entry(), replace=False)
        assert await other.load() == before  # nothing changed

        version = await other.restore(backup, _restore_entry(), replace=True)
        after = await other.load()
        assert sorted(after.document.flags) == ["checkout", "checkout.v2"]
        assert version > before.document.version
        assert [w.id for w in await other.webhooks()] == ["wh_1"]
        # The replaced log is gone, filters included.
        assert await other.audit(AuditQuery(actor="carol")) == []
        assert await other.audit(AuditQuery(key="legacy")) == []
    finally:
        await other.close()


async def test_an_unreadable_record_is_carried_as_it_is(
    store: Store, store_backend: Backend
) -> None:
    store_backend.write_raw("flag", "broken", '{"enabled": "yes"}')
    backup = await store.backup()
    assert [(r.key, r.body) for r in backup.flags] == [("broken", '{"enabled": "yes"}')]
    other = await _empty_twin(store_backend)
    try:
        await other.restore(backup, _restore_entry(), replace=False)
        state = await other.load()
        assert "broken" in state.unreadable_flags
    finally:
        await other.close()


# -- the file ----------------------------------------------------------------------------


def _valid(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "format": "flagport-backup",
        "format_version": BACKUP_FORMAT_VERSION,
        "created_at": AT,
        "source": {"kind": "sqlite", "store_id": "s1", "schema_version": 1, "snapshot_version": 3},
        "flags": [{"key": "a", "version": 1, "body": '{"version": 1}'}],
        "audit": [
            {"id": 1, "snapshot_version": 1, "key": "a", "actor": "x", "at": AT, "body": "{}"}
        ],
        "audit_next_id": 2,
        "tokens": [],
    }
    document.update(changes)
    return document


def _file(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "backup.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_a_backup_file_is_written_for_its_owner_only_and_read_back(tmp_path: Path) -> None:
    backup = msgspec.convert(_valid(), StoreBackup)
    path = tmp_path / "b.json"
    write_backup(path, backup)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_backup(path) == backup


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "not a Flagport backup"),
        ({"format": "something-else"}, "not a Flagport backup"),
        (_valid(format_version=BACKUP_FORMAT_VERSION + 1), "written by a newer Flagport"),
        (_valid(flags=[{"key": "a", "version": 1, "body": '{"version": 1}'}] * 2), "appears twice"),
        (_valid(flags=[{"key": "a", "version": 0, "body": "{}"}]), "version must be from 1"),
        # What a later commit, the kill switch's included, could not get past:
        (
            _valid(flags=[{"key": "a", "version": 2, "body": "{}"}]),
            "the body's version \\(None\\) is not the record's \\(2\\)",
        ),
        (
            _valid(flags=[{"key": "Bad Key\n", "version": 1, "body": '{"version": 1}'}]),
            "invalid key",
        ),
        (
            _valid(
                source={
                    "kind": "redis",
                    "store_id": "s",
                    "schema_version": 1,
                    "snapshot_version": 10**17,
                }
            ),
            "snapshot_version must be from 0 to 2\\^53",
        ),
        (_valid(audit_next_id=2**62), "audit_next_id must be from 1 to 2\\^53"),
        (_valid(flags=[{"key": "a", "version": 1, "body": "{nope"}]), "the body is not JSON"),
        (_valid(audit_next_id=1), "not below audit_next_id"),
        (_valid(tokens=['{"id": "t"}']), "not a token record"),
        (_valid(server_secret="zz"), "not hex"),
        (_valid(extra=1), "unknown field"),
        (_valid(approval_policies=['{"id": "tag:x"}']), "not a ApprovalPolicy record"),
        (
            _valid(
                webhook_deliveries=[
                    '{"webhook_id": "wh_9", "audit_id": 1, "event": "e", "status": "dead",'
                    ' "attempts": 1, "first_try_at": 1, "last_try_at": 1}'
                ]
            ),
            "webhook 'wh_9' is not in the backup",
        ),
        (
            _valid(webhooks=[{"body": '{"id": "wh_1"}', "cursor": 0}]),
            "not a WebhookRecord record",
        ),
        (_valid(flags=[{"key": "a", "version": "1", "body": "{}"}]), "Expected `int`"),
    ],
)
def test_a_file_that_is_not_a_backup_is_refused_with_its_problem(
    tmp_path: Path, document: object, problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        read_backup(_file(tmp_path, document))


# -- audit retention -----------------------------------------------------------------------


async def test_pruning_the_audit_log_deletes_the_oldest_entries_and_their_filters(
    store: Store,
) -> None:
    days = ["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]
    for day, actor in zip(days, ["old", "old", "mid", "new"], strict=True):
        await store.commit(
            [], [AuditEntry(actor=actor, action="note", key="k", at=f"{day}T00:00:00+00:00")]
        )
    march = datetime.datetime.fromisoformat("2026-03-01T00:00:00+00:00").timestamp()
    assert await store.prune_audit(march, limit=1) == 1
    assert await store.prune_audit(march) == 1
    assert await store.prune_audit(march) == 0
    left = await store.audit(AuditQuery(limit=100))
    assert [e.actor for e in left] == ["new", "mid"]
    assert await store.audit(AuditQuery(actor="old")) == []
    assert len(await store.audit(AuditQuery(key="k"))) == 2
    committed = await store.commit([], [_entry("k", "note")])
    assert committed.audit_ids == [5]  # ids are never reused


async def test_an_entry_of_a_kind_a_later_release_adds_is_read(store: Store) -> None:
    """Upgrades: an older server sharing the store must still read the audit log."""
    await store.commit(
        [], [AuditEntry(actor="x", action="future.thing", key="k", at=AT, kind="future")]
    )
    (entry,) = await store.audit(AuditQuery(limit=10))
    assert (entry.kind, entry.action) == ("future", "future.thing")
