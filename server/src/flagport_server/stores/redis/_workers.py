"""The Redis store's propagation registry: which worker applied which snapshot version."""

from __future__ import annotations

import contextlib
from typing import Final

import msgspec

from flagport_server.errors import StoreError
from flagport_server.stores import _common
from flagport_server.stores.base import WorkerStatus
from flagport_server.stores.redis._connection import RedisBase, as_dict

__all__ = ["RedisWorkers"]

#: Registry entries of workers silent this long are pruned (pids change on every restart).
_WORKER_RETENTION_S: Final = 86_400.0


class RedisWorkers(RedisBase):
    """One hash field per server worker, written by its heartbeat."""

    @staticmethod
    def _worker_field(instance: str, pid: int) -> str:
        return msgspec.json.encode([instance, pid]).decode()

    async def heartbeat(self, status: WorkerStatus) -> None:
        field = self._worker_field(status.instance, status.pid)
        await self._command("HSET", self._workers, field, _common.encode(status))

    async def workers(self, max_age: float, now: float) -> list[WorkerStatus]:
        """Workers whose last heartbeat is at most ``max_age`` seconds before ``now``, by
        instance and pid; entries silent for a day are pruned on the way."""
        rows = as_dict(await self._command("HGETALL", self._workers))
        live: list[WorkerStatus] = []
        stale: list[str] = []
        for field, body in rows.items():
            try:
                status = msgspec.json.decode(body, type=WorkerStatus)
            except msgspec.DecodeError:
                stale.append(field)
                continue
            if status.heartbeat_at < now - _WORKER_RETENTION_S:
                stale.append(field)
            elif status.heartbeat_at >= now - max_age:
                live.append(status)
        if stale:
            with contextlib.suppress(StoreError):
                await self._command("HDEL", self._workers, *stale)
        return sorted(live, key=lambda s: (s.instance, s.pid))

    async def forget_worker(self, instance: str, pid: int) -> None:
        field = self._worker_field(instance, pid)
        await self._command("HDEL", self._workers, field)
