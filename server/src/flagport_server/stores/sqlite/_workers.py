"""The SQLite store's propagation registry: which worker applied which snapshot version."""

from __future__ import annotations

import sqlite3
from typing import Final

from flagport_server.stores.base import WorkerStatus
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteWorkers"]

#: Registry rows of workers silent this long are pruned: pids change on every restart, so
#: crashed workers would otherwise pile up forever.
_WORKER_RETENTION_S: Final = 86_400.0


class SQLiteWorkers(SQLiteBase):
    """One row per server worker, upserted by its heartbeat."""

    async def heartbeat(self, status: WorkerStatus) -> None:
        """Upsert the worker's row (keyed by instance and pid)."""

        def beat(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workers (instance, pid, applied_version, heartbeat_at, started_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (instance, pid) DO UPDATE SET "
                "applied_version = excluded.applied_version, "
                "heartbeat_at = excluded.heartbeat_at, started_at = excluded.started_at",
                (
                    status.instance,
                    status.pid,
                    status.applied_version,
                    status.heartbeat_at,
                    status.started_at,
                ),
            )
            conn.execute(
                "DELETE FROM workers WHERE heartbeat_at < ?",
                (status.heartbeat_at - _WORKER_RETENTION_S,),
            )

        await self._write(beat)

    async def workers(self, max_age: float, now: float) -> list[WorkerStatus]:
        """Workers whose last heartbeat is at most ``max_age`` seconds before ``now``,
        ordered by instance and pid."""

        def read(conn: sqlite3.Connection) -> list[WorkerStatus]:
            rows = conn.execute(
                "SELECT instance, pid, applied_version, heartbeat_at, started_at FROM workers "
                "WHERE heartbeat_at >= ? ORDER BY instance, pid",
                (now - max_age,),
            )
            return [
                WorkerStatus(
                    instance=instance,
                    pid=pid,
                    applied_version=applied,
                    heartbeat_at=heartbeat_at,
                    started_at=started_at,
                )
                for instance, pid, applied, heartbeat_at, started_at in rows
            ]

        return await self._read(read)

    async def forget_worker(self, instance: str, pid: int) -> None:
        """Delete the worker's row (a no-op if there is none)."""

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE instance = ? AND pid = ?", (instance, pid))

        await self._write(forget)
