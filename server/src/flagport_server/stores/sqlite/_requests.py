"""The SQLite store's approval policies and change requests (docs/spec.md, "Approvals")."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from flagport_server.stores import _common
from flagport_server.stores.base import ApprovalPolicy, ChangeRequest, RequestStatus
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteRequests"]


class SQLiteRequests(SQLiteBase):
    """Approval policies and change requests, each a JSON body in its own table."""

    async def approval_policies(self) -> list[ApprovalPolicy]:
        def read(conn: sqlite3.Connection) -> list[ApprovalPolicy]:
            rows = conn.execute("SELECT id, body FROM approval_policies ORDER BY id")
            return _common.decode_each(rows, _common.decode_policy)

        return await self._read(read)

    async def add_approval_policy(self, policy: ApprovalPolicy) -> bool:
        def add(conn: sqlite3.Connection) -> bool:
            self._meta(conn)  # a file of a newer schema is not written to
            added = conn.execute(
                "INSERT OR IGNORE INTO approval_policies (id, body) VALUES (?, ?)",
                (policy.id, _common.encode(policy)),
            )
            return added.rowcount == 1

        return await self._write(add)

    async def remove_approval_policy(self, policy_id: str) -> ApprovalPolicy | None:
        def remove(conn: sqlite3.Connection) -> ApprovalPolicy | None:
            self._meta(conn)
            row = conn.execute(
                "SELECT body FROM approval_policies WHERE id = ?", (policy_id,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM approval_policies WHERE id = ?", (policy_id,))
            return _common.decode_policy(row[0], policy_id)

        return await self._write(remove)

    async def add_change_request(self, request: ChangeRequest, drop: Sequence[str]) -> None:
        def add(conn: sqlite3.Connection) -> None:
            self._meta(conn)
            conn.executemany("DELETE FROM change_requests WHERE id = ?", [(i,) for i in drop])
            conn.execute(
                "INSERT INTO change_requests (id, created_at, body) VALUES (?, ?, ?)",
                (request.id, request.created_at, _common.encode(request)),
            )

        await self._write(add)

    async def change_requests(self) -> list[ChangeRequest]:
        def read(conn: sqlite3.Connection) -> list[ChangeRequest]:
            rows = conn.execute("SELECT id, body FROM change_requests ORDER BY created_at, id")
            return _common.decode_each(rows, _common.decode_request)

        return await self._read(read)

    async def decide_change_request(
        self, decided: ChangeRequest, expected: RequestStatus, *, applying: bool = False
    ) -> bool:
        def decide(conn: sqlite3.Connection) -> bool:
            self._meta(conn)
            # JSON true reads as 1; the field is omitted when false.
            changed = conn.execute(
                "UPDATE change_requests SET body = ? WHERE id = ? "
                "AND json_extract(body, '$.status') = ? "
                "AND coalesce(json_extract(body, '$.applying'), 0) = ?",
                (_common.encode(decided), decided.id, expected, int(applying)),
            )
            return changed.rowcount == 1

        return await self._write(decide)
