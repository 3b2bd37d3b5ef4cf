"""The admin operations on webhooks: add, list, remove (each change an audit entry), a test
delivery, the delivery states and the redelivery of a dead letter."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from flagport_server.audit import audit_entry
from flagport_server.auth import Actor
from flagport_server.errors import Conflict, InvalidInput, NotFound
from flagport_server.services import AdminService, utc_now
from flagport_server.settings import Settings
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.stores.webhook_records import (
    MAX_WEBHOOKS,
    WebhookDelivery,
    WebhookFormat,
    WebhookRecord,
)
from flagport_server.webhooks.delivery import SendResult, new_client, send
from flagport_server.webhooks.events import ALL_EVENTS, TEST_EVENT, check_events, event_of
from flagport_server.webhooks.urls import check_url, url_hint

__all__ = ["MIN_SECRET_BYTES", "WebhookService", "dashboard_url", "described"]

#: A shared secret shorter than this is refused (HMAC keys are guessed offline).
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 256


def dashboard_url(settings: Settings) -> str | None:
    """Where Slack messages link to: the server's public URL when the admin UI is served."""
    return settings.public_url if settings.public_url and settings.ui else None


def described(record: WebhookRecord) -> dict[str, Any]:
    """A webhook as audit entries record it (never its secret, only its URL's hint)."""
    return {
        "url": url_hint(record.url),
        "events": list(record.events),
        "tag": record.tag,
        "format": record.format,
    }


class WebhookService:
    """One per app, over the admin service (its store and its audited commits)."""

    def __init__(self, admin: AdminService) -> None:
        self.admin = admin
        self.store = admin.store
        self.settings = admin.runtime.settings

    async def add(
        self,
        url: str,
        events: Sequence[str] | None,
        tag: str | None,
        format: WebhookFormat,
        secret: str | None,
        actor: Actor,
        reason: str | None,
    ) -> tuple[WebhookRecord, int]:
        """A new webhook, starting at the newest audit entry (no backlog), and the snapshot
        version of its audit entry. Without ``secret``, one is made (shown once)."""
        check_url(url, self.settings)
        names = check_events(events if events is not None else [ALL_EVENTS])
        if secret is None:
            secret = "whsec_" + secrets.token_urlsafe(32)
        elif not MIN_SECRET_BYTES <= len(secret.encode()) <= MAX_SECRET_BYTES:
            raise InvalidInput(
                f"the secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes long "
                f"(this one has {len(secret.encode())}); leave it out and one is made",
                "$.secret",
            )
        now = utc_now()
        record = WebhookRecord(
            id="wh_" + secrets.token_hex(6),
            url=url,
            secret=secret,
            created_at=now,
            events=names,
            tag=tag,
            format=format,
            created_by=actor.name,
        )
        newest = await self.store.audit(AuditQuery(limit=1))
        if not await self.store.add_webhook(record, newest[0].id if newest else 0, MAX_WEBHOOKS):
            raise Conflict(f"a store holds at most {MAX_WEBHOOKS} webhooks; remove one first")
        # Kind "token" like the server secret's rotation: configuration of access and
        # integrations, which older servers sharing the store can read.
        entry = audit_entry(
            actor,
            "webhook.create",
            record.id,
            now,
            kind="token",
            reason=reason,
            after=described(record),
        )
        return record, await self.admin.record_entries([entry])

    async def webhooks(self) -> list[WebhookRecord]:
        return await self.store.webhooks()

    async def cursors(self, records: Sequence[WebhookRecord]) -> dict[str, int | None]:
        return {r.id: await self.store.webhook_cursor(r.id) for r in records}

    async def remove(
        self, webhook_id: str, actor: Actor, reason: str | None
    ) -> tuple[WebhookRecord, int]:
        record = await self.store.remove_webhook(webhook_id)
        if record is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        entry = audit_entry(
            actor,
            "webhook.remove",
            record.id,
            utc_now(),
            kind="token",
            reason=reason,
            before=described(record),
        )
        return record, await self.admin.record_entries([entry])

    async def _get(self, webhook_id: str) -> WebhookRecord:
        for record in await self.store.webhooks():
            if record.id == webhook_id:
                return record
        raise NotFound(f"webhook {webhook_id!r} not found")

    async def test(self, webhook_id: str, actor: Actor) -> tuple[SendResult, float]:
        """Send a ``webhook.test`` event now, from this worker (signed like every delivery,
        audit id 0, nothing stored); the result and how long it took in milliseconds."""
        record = await self._get(webhook_id)
        entry = AuditEntry(
            actor=actor.name,
            token_id=actor.token_id,
            action=TEST_EVENT,
            key=record.id,
            at=utc_now(),
            kind="token",
            reason="a test delivery (flags webhook test)",
        )
        return await self._send_now(record, entry, TEST_EVENT)

    async def _send_now(
        self, record: WebhookRecord, entry: AuditEntry, event: str
    ) -> tuple[SendResult, float]:
        started = time.perf_counter()
        async with new_client(self.settings.webhook_timeout) as client:
            timeout = self.settings.webhook_timeout
            result = await send(client, record, entry, event, dashboard_url(self.settings), timeout)
        return result, (time.perf_counter() - started) * 1000

    async def deliveries(
        self, webhook_id: str | None, *, failed: bool, limit: int
    ) -> list[WebhookDelivery]:
        if webhook_id is not None:
            await self._get(webhook_id)
        return await self.store.deliveries(webhook_id, failed=failed, limit=limit)

    async def redeliver(self, webhook_id: str, audit_id: int) -> WebhookDelivery:
        """Send a dead letter again now; delivered, it is marked so (else it stays dead with
        one more attempt). Other entries are not held up: the cursor is past it."""
        record = await self._get(webhook_id)
        state = await self.store.delivery(webhook_id, audit_id)
        if state is None or state.status != "dead":
            raise Conflict(
                f"audit entry {audit_id} is not a dead letter of webhook {webhook_id!r} "
                "(flags webhook deliveries --failed lists them)"
            )
        found = await self.store.audit_after(audit_id - 1, 1)
        if not found or found[0].id != audit_id:
            raise NotFound(f"audit entry {audit_id} is no longer in the audit log")
        entry = found[0]
        result, _ = await self._send_now(record, entry, event_of(entry))
        now = time.time()
        after = msgspec.structs.replace(
            state,
            status="delivered" if result.delivered else "dead",
            attempts=state.attempts + 1,
            last_try_at=now,
            last_status=result.status,
            last_error=result.error,
        )
        await self.store.record_delivery(webhook_id, after, None)
        return after
