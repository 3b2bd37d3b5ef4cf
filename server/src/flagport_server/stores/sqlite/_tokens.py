"""The SQLite store's API tokens (only their secrets' hashes)."""

from __future__ import annotations

import sqlite3

import msgspec

from flagport_server.errors import AlreadyExists
from flagport_server.stores import _common
from flagport_server.stores.base import TokenRecord
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteTokens"]


class SQLiteTokens(SQLiteBase):
    """Tokens: added, listed, revoked, rotated."""

    async def add_token(self, token: TokenRecord) -> None:
        """Store ``token``; :class:`~flagport_server.errors.AlreadyExists` if its id, its
        secret hash or its name (ASCII case-insensitively, revoked tokens included) is
        taken."""

        def add(conn: sqlite3.Connection) -> str | None:
            self._meta(conn)  # a file of a newer schema is not written to
            taken = conn.execute(
                "SELECT 1 FROM tokens WHERE id = ? OR secret_hash = ?",
                (token.id, token.secret_hash),
            ).fetchone()
            if taken:
                return _common.token_taken(token, "id")
            named = conn.execute(
                "SELECT 1 FROM tokens WHERE lower(json_extract(body, '$.name')) = lower(?)",
                (token.name,),
            ).fetchone()
            if named:
                return _common.token_taken(token, "name")
            conn.execute(
                "INSERT INTO tokens (id, secret_hash, created_at, body) VALUES (?, ?, ?, ?)",
                (token.id, token.secret_hash, token.created_at, _common.encode(token)),
            )
            return None

        problem = await self._write(add)
        if problem is not None:
            raise AlreadyExists(problem)

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""

        def read(conn: sqlite3.Connection) -> list[TokenRecord]:
            rows = conn.execute("SELECT id, body FROM tokens ORDER BY created_at, id")
            return [_common.decode_token(body, id_) for id_, body in rows]

        return await self._read(read)

    async def revoke_token(self, token_id: str, at: str) -> TokenRecord | None:
        """Mark revoked at ``at`` and return the record; revoking twice keeps the first
        time. ``None`` if unknown."""

        def revoke(conn: sqlite3.Connection) -> TokenRecord | None:
            self._meta(conn)  # a file of a newer schema is not written to
            row = conn.execute("SELECT body FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                return None
            token = _common.decode_token(row[0], token_id)
            if token.revoked_at is None:
                token = msgspec.structs.replace(token, revoked_at=at)
                conn.execute(
                    "UPDATE tokens SET body = ? WHERE id = ?", (_common.encode(token), token_id)
                )
            return token

        return await self._write(revoke)

    async def rotate_token(self, rotated: TokenRecord, previous_hash: str) -> bool:
        """Store ``rotated`` over token ``rotated.id`` if it is not revoked and its secret
        hash is still ``previous_hash``."""

        def rotate(conn: sqlite3.Connection) -> bool:
            self._meta(conn)  # a file of a newer schema is not written to
            changed = conn.execute(
                "UPDATE tokens SET secret_hash = ?, body = ? WHERE id = ? AND secret_hash = ? "
                "AND json_extract(body, '$.revoked_at') IS NULL",
                (rotated.secret_hash, _common.encode(rotated), rotated.id, previous_hash),
            )
            return changed.rowcount == 1

        return await self._write(rotate)
