"""The SQLite store's server secret (a table of its own: older servers ignore it)."""

from __future__ import annotations

import secrets
import sqlite3

from flagport_server.stores.base import SERVER_SECRET_BYTES
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SERVER_SECRET_NAME", "SQLiteSecrets"]

SERVER_SECRET_NAME = "server"


class SQLiteSecrets(SQLiteBase):
    """The server secret: made once, read by every worker, rotated on demand."""

    async def server_secret(self) -> bytes:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM secrets WHERE name = ?", (SERVER_SECRET_NAME,)
            ).fetchone()
            return bytes(row[0]) if row is not None else None

        found = await self._read(read)
        if found is not None:
            return found

        def make(conn: sqlite3.Connection) -> bytes:
            self._meta(conn)  # a file of a newer schema is not written to
            # Several workers starting at once: the first insert wins, the others read it.
            conn.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)",
                (SERVER_SECRET_NAME, secrets.token_bytes(SERVER_SECRET_BYTES)),
            )
            row = conn.execute(
                "SELECT value FROM secrets WHERE name = ?", (SERVER_SECRET_NAME,)
            ).fetchone()
            return bytes(row[0])

        return await self._write(make)

    async def rotate_server_secret(self) -> bytes:
        fresh = secrets.token_bytes(SERVER_SECRET_BYTES)

        def rotate(conn: sqlite3.Connection) -> bytes:
            self._meta(conn)
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (SERVER_SECRET_NAME, fresh),
            )
            return fresh

        return await self._write(rotate)
