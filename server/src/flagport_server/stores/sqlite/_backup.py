"""Whole-store backup and restore of the SQLite store (docs/adr/0031-whole-store-backup.md):
one read transaction, one write transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Final, NamedTuple

import msgspec

from flagport_server.errors import StoreNotEmpty
from flagport_server.stores import _common
from flagport_server.stores.backup import (
    HELD_KINDS,
    BackupAuditEntry,
    BackupRecord,
    BackupSource,
    BackupWebhook,
    StoreBackup,
    held_records,
    utc_now_text,
)
from flagport_server.stores.base import ApprovalPolicy, AuditEntry, ChangeRequest, TokenRecord
from flagport_server.stores.sqlite._connection import SQLiteBase, fetch_rows
from flagport_server.stores.sqlite._schema import SCHEMA_VERSION
from flagport_server.stores.sqlite._secrets import SERVER_SECRET_NAME
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord

__all__ = ["SQLiteBackup"]

#: The tables a backup carries, by the backup's section name (the configuration's three).
_RECORD_TABLES: Final = {"flags": "flags", "segments": "segments", "plans": "plans"}


#: The format-2 sections' tables, replaced by a restore.
_SECTION_TABLES: Final = ("approval_policies", "change_requests", "webhooks", "webhook_deliveries")


class _Records(NamedTuple):
    """The format-2 sections as table rows."""

    policies: list[tuple[object, ...]]
    requests: list[tuple[object, ...]]
    webhooks: list[tuple[object, ...]]
    deliveries: list[tuple[object, ...]]


def _records(backup: StoreBackup) -> _Records:
    """Rows of the format-2 sections (the bodies were checked when the file was read)."""
    policies = [msgspec.json.decode(b, type=ApprovalPolicy) for b in backup.approval_policies]
    requests = [msgspec.json.decode(b, type=ChangeRequest) for b in backup.change_requests]
    webhooks = [msgspec.json.decode(w.body, type=WebhookRecord) for w in backup.webhooks]
    deliveries = [msgspec.json.decode(b, type=WebhookDelivery) for b in backup.webhook_deliveries]
    return _Records(
        policies=[(p.id, b) for p, b in zip(policies, backup.approval_policies, strict=True)],
        requests=[
            (r.id, r.created_at, b) for r, b in zip(requests, backup.change_requests, strict=True)
        ],
        webhooks=[
            (w.id, w.created_at, stored.cursor, stored.body)
            for w, stored in zip(webhooks, backup.webhooks, strict=True)
        ],
        deliveries=[
            (d.webhook_id, d.audit_id, d.status, b)
            for d, b in zip(deliveries, backup.webhook_deliveries, strict=True)
        ],
    )


class SQLiteBackup(SQLiteBase):
    async def backup(self) -> StoreBackup:
        def read(conn: sqlite3.Connection) -> StoreBackup:
            store_id, version = self._meta(conn)
            records = {
                section: [
                    BackupRecord(key=key, version=record_version, body=body)
                    for key, record_version, body in fetch_rows(
                        conn.execute(f"SELECT key, version, body FROM {table} ORDER BY key")
                    )
                ]
                for section, table in _RECORD_TABLES.items()
            }
            audit = [
                BackupAuditEntry(
                    id=id_, snapshot_version=entry_version, key=key, actor=actor, at=at, body=body
                )
                for id_, entry_version, key, actor, at, body in fetch_rows(
                    conn.execute(
                        "SELECT id, snapshot_version, key, actor, at, body FROM audit ORDER BY id"
                    )
                )
            ]
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
            last_id = max(int(row[0]) if row else 0, audit[-1].id if audit else 0)
            tokens = [str(body) for (body,) in conn.execute("SELECT body FROM tokens ORDER BY id")]
            secret = conn.execute(
                "SELECT value FROM secrets WHERE name = ?", (SERVER_SECRET_NAME,)
            ).fetchone()

            def bodies(sql: str) -> list[str]:
                return [str(body) for (body,) in fetch_rows(conn.execute(sql))]

            webhooks = [
                BackupWebhook(body=str(body), cursor=int(cursor))
                for body, cursor in fetch_rows(
                    conn.execute("SELECT body, cursor FROM webhooks ORDER BY created_at, id")
                )
            ]
            return StoreBackup(
                created_at=utc_now_text(),
                source=BackupSource(
                    kind="sqlite",
                    store_id=store_id,
                    schema_version=SCHEMA_VERSION,
                    snapshot_version=version,
                ),
                flags=records["flags"],
                segments=records["segments"],
                plans=records["plans"],
                audit=audit,
                audit_next_id=last_id + 1,
                tokens=tokens,
                server_secret=bytes(secret[0]).hex() if secret else None,
                approval_policies=bodies("SELECT body FROM approval_policies ORDER BY id"),
                change_requests=bodies("SELECT body FROM change_requests ORDER BY created_at, id"),
                webhooks=webhooks,
                webhook_deliveries=bodies(
                    "SELECT body FROM webhook_deliveries ORDER BY webhook_id, audit_id"
                ),
            )

        return await self._read(read)

    async def restore(self, backup: StoreBackup, entry: AuditEntry, *, replace: bool) -> int:
        def prepare() -> tuple[list[tuple[object, ...]], list[TokenRecord], float, str, _Records]:
            audit_rows: list[tuple[object, ...]] = [
                (
                    e.id,
                    e.key,
                    e.actor,
                    e.at,
                    _common.parse_timestamp(e.at, f"audit {e.id}"),
                    e.snapshot_version,
                    e.body,
                )
                for e in backup.audit
            ]
            tokens = [_common.decode_token(body, "?") for body in backup.tokens]
            at = _common.parse_timestamp(entry.at, "at")
            return audit_rows, tokens, at, _common.encode(entry), _records(backup)

        # Parsed before the transaction: a large log must not hold the write lock longer.
        audit_rows, tokens, entry_ts, entry_body, records = await asyncio.to_thread(prepare)

        def restore(conn: sqlite3.Connection) -> int:
            _, version = self._meta(conn)
            if not replace:
                held = held_records(
                    {
                        what: int(conn.execute(f"SELECT count(*) FROM {what}").fetchone()[0])
                        for what in HELD_KINDS
                    }
                )
                if held:
                    raise StoreNotEmpty(held)
            for table in (*_RECORD_TABLES.values(), "audit", "tokens", *_SECTION_TABLES):
                conn.execute(f"DELETE FROM {table}")
            conn.executemany(
                "INSERT INTO approval_policies (id, body) VALUES (?, ?)", records.policies
            )
            conn.executemany(
                "INSERT INTO change_requests (id, created_at, body) VALUES (?, ?, ?)",
                records.requests,
            )
            conn.executemany(
                "INSERT INTO webhooks (id, created_at, cursor, body) VALUES (?, ?, ?, ?)",
                records.webhooks,
            )
            conn.executemany(
                "INSERT INTO webhook_deliveries (webhook_id, audit_id, status, body) "
                "VALUES (?, ?, ?, ?)",
                records.deliveries,
            )
            for section, table in _RECORD_TABLES.items():
                conn.executemany(
                    f"INSERT INTO {table} (key, version, body) VALUES (?, ?, ?)",
                    [(r.key, r.version, r.body) for r in getattr(backup, section)],
                )
            conn.executemany(
                "INSERT INTO audit (id, key, actor, at, at_ts, snapshot_version, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                audit_rows,
            )
            conn.executemany(
                "INSERT INTO tokens (id, secret_hash, created_at, body) VALUES (?, ?, ?, ?)",
                [
                    (t.id, t.secret_hash, t.created_at, body)
                    for t, body in zip(tokens, backup.tokens, strict=True)
                ],
            )
            restored = max(version, backup.source.snapshot_version) + 1
            conn.execute(
                "UPDATE meta SET store_id = ?, version = ? WHERE id = 1",
                (backup.source.store_id, restored),
            )
            # Ids go on from the backup's sequence (never reused within the restored log).
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'audit'")
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('audit', ?)",
                (backup.audit_next_id - 1,),
            )
            conn.execute(
                "INSERT INTO audit (key, actor, at, at_ts, snapshot_version, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (entry.key, entry.actor, entry.at, entry_ts, restored, entry_body),
            )
            if backup.server_secret is not None:
                conn.execute(
                    "INSERT INTO secrets (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (SERVER_SECRET_NAME, bytes.fromhex(backup.server_secret)),
                )
            return restored

        return await self._write(restore)
