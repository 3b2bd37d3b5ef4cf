"""The SQLite store's webhooks (tables of their own: older servers ignore them): the records,
each with its cursor over audit ids, and the delivery state per webhook and audit entry."""

from __future__ import annotations

import sqlite3

import msgspec

from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.sqlite._connection import SQLiteBase
from flagport_server.stores.webhook_records import (
    DELIVERED_KEPT,
    WebhookDelivery,
    WebhookRecord,
)

__all__ = ["SQLiteWebhooks"]

_record_decoder = msgspec.json.Decoder(WebhookRecord)
_delivery_decoder = msgspec.json.Decoder(WebhookDelivery)


class SQLiteWebhooks(SQLiteBase):
    """Webhooks, their cursors and deliveries; each write one ``BEGIN IMMEDIATE``."""

    async def audit_after(self, after_id: int, limit: int) -> list[AuditEntry]:
        size = min(max(limit, 1), _common.MAX_AUDIT_LIMIT)

        def read(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT id, snapshot_version, body FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, size),
            )
            return [
                msgspec.structs.replace(
                    _common.decode_audit(body, str(id_)), id=id_, snapshot_version=version
                )
                for id_, version, body in rows
            ]

        return await self._read(read)

    async def add_webhook(self, record: WebhookRecord, cursor: int, limit: int) -> bool:
        def add(conn: sqlite3.Connection) -> bool:
            self._meta(conn)  # a file of a newer schema is not written to
            (count,) = conn.execute("SELECT count(*) FROM webhooks").fetchone()
            if count >= limit:
                return False
            conn.execute(
                "INSERT INTO webhooks (id, created_at, cursor, body) VALUES (?, ?, ?, ?)",
                (record.id, record.created_at, cursor, _common.encode(record)),
            )
            return True

        return await self._write(add)

    async def webhooks(self) -> list[WebhookRecord]:
        def read(conn: sqlite3.Connection) -> list[WebhookRecord]:
            rows = conn.execute("SELECT body FROM webhooks ORDER BY created_at, id")
            return [_record_decoder.decode(body) for (body,) in rows]

        return await self._read(read)

    async def remove_webhook(self, webhook_id: str) -> WebhookRecord | None:
        def remove(conn: sqlite3.Connection) -> WebhookRecord | None:
            row = conn.execute("SELECT body FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
            conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            return _record_decoder.decode(row[0])

        return await self._write(remove)

    async def webhook_cursor(self, webhook_id: str) -> int | None:
        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT cursor FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
            return None if row is None else int(row[0])

        return await self._read(read)

    async def record_delivery(
        self, webhook_id: str, delivery: WebhookDelivery | None, cursor: int | None
    ) -> bool:
        def record(conn: sqlite3.Connection) -> bool:
            if (
                conn.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
                is None
            ):
                return False
            if cursor is not None:
                conn.execute(
                    "UPDATE webhooks SET cursor = max(cursor, ?) WHERE id = ?",
                    (cursor, webhook_id),
                )
            if delivery is not None:
                conn.execute(
                    "INSERT INTO webhook_deliveries (webhook_id, audit_id, status, body) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (webhook_id, audit_id) DO UPDATE SET "
                    "status = excluded.status, body = excluded.body",
                    (webhook_id, delivery.audit_id, delivery.status, _common.encode(delivery)),
                )
                if delivery.status == "delivered":
                    conn.execute(
                        "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND status = "
                        "'delivered' AND audit_id NOT IN (SELECT audit_id FROM "
                        "webhook_deliveries WHERE webhook_id = ? AND status = 'delivered' "
                        "ORDER BY audit_id DESC LIMIT ?)",
                        (webhook_id, webhook_id, DELIVERED_KEPT),
                    )
            return True

        return await self._write(record)

    async def delivery(self, webhook_id: str, audit_id: int) -> WebhookDelivery | None:
        def read(conn: sqlite3.Connection) -> WebhookDelivery | None:
            row = conn.execute(
                "SELECT body FROM webhook_deliveries WHERE webhook_id = ? AND audit_id = ?",
                (webhook_id, audit_id),
            ).fetchone()
            return None if row is None else _delivery_decoder.decode(row[0])

        return await self._read(read)

    async def deliveries(
        self, webhook_id: str | None, *, failed: bool, limit: int
    ) -> list[WebhookDelivery]:
        clauses, params = [], []
        if webhook_id is not None:
            clauses.append("webhook_id = ?")
            params.append(webhook_id)
        if failed:
            clauses.append("status != 'delivered'")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT body FROM webhook_deliveries {where} "
            "ORDER BY audit_id DESC, webhook_id LIMIT ?"
        )

        def read(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            rows = conn.execute(sql, (*params, max(1, min(limit, _common.MAX_AUDIT_LIMIT))))
            return [_delivery_decoder.decode(body) for (body,) in rows]

        return await self._read(read)
