"""The flags and segments of the SQLite store: loads, guarded commits and change polling."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Final

from flagport.rollout.plan import Plan
from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry, CommitResult, Mutation, StoreState
from flagport_server.stores.sqlite._connection import SQLiteBase, fetch_rows

__all__ = ["SQLiteConfiguration"]

_TABLES: Final = {"flag": "flags", "segment": "segments", "plan": "plans"}


class SQLiteConfiguration(SQLiteBase):
    """The configuration (flags, segments, snapshot version) and its audit entries, written
    together by :meth:`commit`."""

    async def load(self) -> StoreState:
        """All flags and segments at one snapshot version, in key order."""

        def load(conn: sqlite3.Connection) -> StoreState:
            store_id, version = self._meta(conn)
            return _common.read_state(
                store_id,
                version,
                fetch_rows(conn.execute("SELECT key, body FROM flags")),
                fetch_rows(conn.execute("SELECT key, body FROM segments")),
                fetch_rows(conn.execute("SELECT key, body FROM plans")),
            )

        return await self._read(load)

    async def load_plans(self) -> dict[str, Plan]:
        def load(conn: sqlite3.Connection) -> dict[str, Plan]:
            return _common.read_plans(fetch_rows(conn.execute("SELECT key, body FROM plans")))

        return await self._read(load)

    async def snapshot_version(self) -> tuple[str, int]:
        """``(store_id, version)`` from one row."""
        return await self._read(self._meta)

    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        """Check every guard, apply every mutation, bump the version by one and append the
        audit entries, all in one transaction; nothing is applied on a
        :class:`~flagport_server.errors.VersionConflict`. Returns once the commit is on disk.
        """

        def prepare() -> list[tuple[AuditEntry, float, str]]:
            for mutation in mutations:
                _common.check_mutation(mutation)
            return [
                (entry, _common.parse_timestamp(entry.at, "at"), _common.encode(entry))
                for entry in audit
            ]

        # Parse before the transaction: a bad timestamp must not hold the write lock. In a
        # thread: an import's 15,000 checks would hold the loop for a few hundred ms.
        stamped = await asyncio.to_thread(prepare)

        def commit(conn: sqlite3.Connection) -> CommitResult:
            # Guards are checked in order against the state the earlier mutations of the
            # batch produced, so a batch may create a flag and then update it.
            for mutation in mutations:
                table = _TABLES[mutation.kind]
                row = conn.execute(
                    f"SELECT version FROM {table} WHERE key = ?", (mutation.key,)
                ).fetchone()
                _common.check_guard(mutation, None if row is None else row[0])
                if mutation.op == "put":
                    conn.execute(
                        f"INSERT INTO {table} (key, version, body) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                        "body = excluded.body",
                        (
                            mutation.key,
                            _common.mutation_version(mutation),
                            _common.encode(mutation.value),
                        ),
                    )
                else:
                    conn.execute(f"DELETE FROM {table} WHERE key = ?", (mutation.key,))
            conn.execute("UPDATE meta SET version = version + 1 WHERE id = 1")
            # Refuses a file a newer Flagport took over meanwhile: the transaction rolls back.
            _, version = self._meta(conn)
            ids: list[int] = []
            for entry, at_ts, body in stamped:
                cursor = conn.execute(
                    "INSERT INTO audit (key, actor, at, at_ts, snapshot_version, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.key, entry.actor, entry.at, at_ts, version, body),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            return CommitResult(snapshot_version=version, audit_ids=ids)

        return await self._write(commit)

    async def changes(self) -> AsyncIterator[int]:
        """Yield the snapshot version each time it changes (own commits included), checking
        every ``poll_interval`` seconds on a dedicated connection.

        ``PRAGMA data_version`` only reads WAL shared memory, so idle polling costs no I/O;
        the meta row is read only when some other connection committed something (which
        may be a heartbeat, hence the comparison with the last version). Ends when the store
        is closed; raises ``StoreUnavailable`` when the file cannot be read.
        """
        lock = threading.Lock()
        conn: sqlite3.Connection | None = None

        def poll(last_data_version: int | None) -> tuple[int, int | None]:
            nonlocal conn
            with lock:
                try:
                    if conn is None:
                        self._run_read(lambda _: None)  # the schema exists from here on
                        conn = self._connect()
                    data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    if data_version == last_data_version:
                        return data_version, None
                    return data_version, self._meta(conn)[1]
                except (sqlite3.Error, OSError) as error:
                    raise self._unavailable(error) from error

        def close() -> None:
            # Under the lock: a poll cancelled by the consumer may still be running.
            with lock:
                if conn is not None:
                    conn.close()

        try:
            data_version, version = await asyncio.to_thread(poll, None)
            while not self._closed:
                await asyncio.sleep(self.poll_interval)
                data_version, new_version = await asyncio.to_thread(poll, data_version)
                if new_version is not None and new_version != version:
                    version = new_version
                    yield version
        finally:
            close()
