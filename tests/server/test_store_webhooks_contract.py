"""The store contract's webhook part, on every backend: webhook records with a cursor over
audit ids, delivery state per webhook and entry, the cap, and the audit read in id order
that delivery follows (docs/adr/0028-webhooks-over-the-audit-log.md)."""

from __future__ import annotations

import pytest

from flagport_server.stores.base import AuditEntry, Store
from flagport_server.stores.webhook_records import (
    DELIVERED_KEPT,
    WebhookDelivery,
    WebhookRecord,
)

pytestmark = pytest.mark.anyio


def hook(webhook_id: str, at: str = "2027-01-15T08:00:00Z") -> WebhookRecord:
    return WebhookRecord(
        id=webhook_id,
        url=f"https://hooks.example/{webhook_id}",
        secret="s" * 24,
        created_at=at,
        events=("flag.changed",),
        tag="checkout",
    )


def delivery(audit_id: int, status: str = "delivered", webhook_id: str = "a") -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id=webhook_id,
        audit_id=audit_id,
        event="flag.changed",
        status=status,  # type: ignore[arg-type]
        attempts=1,
        first_try_at=1.0,
        last_try_at=1.0,
        next_try_at=5.0 if status == "pending" else None,
        last_status=500 if status != "delivered" else 200,
    )


async def append(store: Store, count: int) -> list[int]:
    ids: list[int] = []
    for n in range(count):
        result = await store.commit(
            [], [AuditEntry(actor="alice", action="enable", key=f"f{n}", at="2027-01-15T08:00:00Z")]
        )
        ids += result.audit_ids
    return ids


async def test_webhooks_are_added_listed_and_removed_with_their_state(store: Store) -> None:
    assert await store.add_webhook(hook("a"), 7, limit=5)
    assert await store.add_webhook(hook("b", "2027-01-15T09:00:00Z"), 0, limit=5)
    assert [w.id for w in await store.webhooks()] == ["a", "b"]
    assert (await store.webhooks())[0] == hook("a")
    assert await store.webhook_cursor("a") == 7
    assert await store.record_delivery("a", delivery(8, "dead"), 8)
    removed = await store.remove_webhook("a")
    assert removed == hook("a")
    assert await store.remove_webhook("a") is None
    assert await store.webhook_cursor("a") is None
    assert await store.deliveries("a", failed=False, limit=10) == []
    # A delivery for a removed webhook is not kept (its task may still be running).
    assert not await store.record_delivery("a", delivery(9), 9)
    assert await store.deliveries(None, failed=False, limit=10) == []
    assert [w.id for w in await store.webhooks()] == ["b"]


async def test_the_cap_refuses_a_webhook_and_adds_nothing(store: Store) -> None:
    assert await store.add_webhook(hook("a"), 0, limit=2)
    assert await store.add_webhook(hook("b"), 0, limit=2)
    assert not await store.add_webhook(hook("c"), 0, limit=2)
    assert [w.id for w in await store.webhooks()] == ["a", "b"]
    assert await store.webhook_cursor("c") is None


async def test_the_cursor_only_moves_forward(store: Store) -> None:
    await store.add_webhook(hook("a"), 3, limit=5)
    assert await store.record_delivery("a", None, 10)
    assert await store.webhook_cursor("a") == 10
    assert await store.record_delivery("a", None, 4)  # a late, slower task: ignored
    assert await store.webhook_cursor("a") == 10


async def test_a_delivery_state_is_replaced_and_listed_newest_first(store: Store) -> None:
    await store.add_webhook(hook("a"), 0, limit=5)
    await store.add_webhook(hook("b"), 0, limit=5)
    await store.record_delivery("a", delivery(1), 1)
    await store.record_delivery("a", delivery(2, "pending"), None)
    await store.record_delivery("b", delivery(2, "dead", "b"), 2)
    assert await store.delivery("a", 2) == delivery(2, "pending")
    assert await store.webhook_cursor("a") == 1
    await store.record_delivery("a", delivery(2), 2)
    assert await store.delivery("a", 2) == delivery(2)
    assert await store.delivery("a", 3) is None
    assert [d.audit_id for d in await store.deliveries("a", failed=False, limit=10)] == [2, 1]
    assert await store.deliveries("a", failed=True, limit=10) == []
    assert await store.deliveries(None, failed=True, limit=10) == [delivery(2, "dead", "b")]
    everything = await store.deliveries(None, failed=False, limit=10)
    assert [(d.webhook_id, d.audit_id) for d in everything] == [("a", 2), ("b", 2), ("a", 1)]
    assert len(await store.deliveries(None, failed=False, limit=1)) == 1


async def test_only_the_newest_delivered_entries_are_kept_dead_letters_stay(store: Store) -> None:
    await store.add_webhook(hook("a"), 0, limit=5)
    await store.record_delivery("a", delivery(1, "dead"), 1)
    for audit_id in range(2, DELIVERED_KEPT + 12):
        await store.record_delivery("a", delivery(audit_id), audit_id)
    kept = await store.deliveries("a", failed=False, limit=1000)
    delivered = [d.audit_id for d in kept if d.status == "delivered"]
    assert len(delivered) == DELIVERED_KEPT
    assert delivered[0] == DELIVERED_KEPT + 11
    assert [d.audit_id for d in kept if d.status == "dead"] == [1]


async def test_audit_after_reads_entries_in_id_order(store: Store) -> None:
    ids = await append(store, 5)
    after = await store.audit_after(ids[1], limit=2)
    assert [e.id for e in after] == ids[2:4]
    assert [e.key for e in after] == ["f2", "f3"]
    assert after[0].snapshot_version > 0
    assert await store.audit_after(ids[-1], limit=10) == []
    assert [e.id for e in await store.audit_after(0, limit=100)] == ids
