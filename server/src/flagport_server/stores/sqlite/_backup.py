"""Whole-store backup and restore of the SQLite store (docs/adr/0031-whole-store-backup.md):
one read transaction, one write transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Final

from flagport_server.errors import StoreNotEmpty
from flagport_server.stores import _common
from flagport_server.stores.backup import (
    BackupAuditEntry,
    BackupRecord,
    BackupSource,
    StoreBackup,
    held_records,
    utc_now_text,
)
from flagport_server.stores.base import AuditEntry, TokenRecord
from flagport_server.stores.sqlite._connection import SQLiteBase, fetch_rows
from flagport_server.stores.sqlite._schema import SCHEMA_VERSION
from flagport_server.stores.sqlite._secrets import SERVER_SECRET_NAME

__all__ = ["SQLiteBackup"]

#: The tables a backup carries, by the backup's section name (the configuration's three).
_RECORD_TABLES: Final = {"flags": "flags", "segments": "segments", "plans": "plans"}


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
            )

        return await self._read(read)

    async def restore(self, backup: StoreBackup, entry: AuditEntry, *, replace: bool) -> int:
        def prepare() -> tuple[list[tuple[object, ...]], list[TokenRecord], float, str]:
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
            return (
                audit_rows,
                tokens,
                _common.parse_timestamp(entry.at, "at"),
                _common.encode(entry),
            )

        # Parsed before the transaction: a large log must not hold the write lock longer.
        audit_rows, tokens, entry_ts, entry_body = await asyncio.to_thread(prepare)

        def restore(conn: sqlite3.Connection) -> int:
            _, version = self._meta(conn)
            if not replace:
                held = held_records(
                    {
                        what: int(conn.execute(f"SELECT count(*) FROM {what}").fetchone()[0])
                        for what in ("flags", "segments", "plans", "tokens", "audit")
                    }
                )
                if held:
                    raise StoreNotEmpty(held)
            for table in (*_RECORD_TABLES.values(), "audit", "tokens"):
                conn.execute(f"DELETE FROM {table}")
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
