"""The SQLite store's audit log (written by each commit, read here)."""

from __future__ import annotations

import sqlite3

import msgspec

from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteAudit"]


class SQLiteAudit(SQLiteBase):
    """Reads of the audit log, newest first."""

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest (highest id) first, at most ``query.limit``
        (itself capped at 1000)."""
        limit = _common.audit_limit(query)
        clauses: list[str] = []
        params: list[object] = []
        if query.key is not None:
            clauses.append("key = ?")
            params.append(query.key)
        if query.actor is not None:
            clauses.append("actor = ?")
            params.append(query.actor)
        if query.since is not None:
            clauses.append("at_ts >= ?")
            params.append(_common.parse_timestamp(query.since, "since"))
        if query.before_id is not None:
            clauses.append("id < ?")
            params.append(query.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT id, snapshot_version, body FROM audit {where} ORDER BY id DESC LIMIT ?"
        params.append(limit)

        def read(conn: sqlite3.Connection) -> list[AuditEntry]:
            return [
                msgspec.structs.replace(
                    _common.decode_audit(body, str(id_)),
                    id=id_,
                    snapshot_version=version,
                )
                for id_, version, body in conn.execute(sql, params)
            ]

        return await self._read(read)

    async def prune_audit(self, before: float, limit: int = 1000) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM audit WHERE id IN "
                "(SELECT id FROM audit WHERE at_ts < ? ORDER BY id LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount

        return await self._write(prune)
