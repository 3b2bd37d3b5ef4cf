"""The subscriber side of the fan-out simulation (benchmarks/test_fanout.py): one process
holding many Redis stores, each listening for changes exactly as a server instance does
(:meth:`~flagport_server.stores.base.Store.changes`, the real subscription code), and
noting when each version arrived (``time.monotonic()``, one clock for every process of
the machine).

The parent drives it over a pipe: after start-up the process sends ``"ready"``; then it
answers ``"load"`` with the seconds a whole-configuration read by every store took (the
reads an instance makes after a change, all at once, as 200 instances would) and
``"stop"`` with the arrivals: per store, a list of (version, monotonic seconds).
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection

from flagport_server.stores import open_store
from flagport_server.stores.base import Store

__all__ = ["Arrival", "listen"]

Arrival = tuple[int, float]


async def _record(store: Store, arrivals: list[Arrival]) -> None:
    async for version in store.changes():
        arrivals.append((version, time.monotonic()))


async def _listen(url: str, count: int, pipe: Connection) -> None:
    stores = [open_store(url) for _ in range(count)]
    await asyncio.gather(*(store.open() for store in stores))
    arrivals: list[list[Arrival]] = [[] for _ in stores]
    tasks = [
        asyncio.create_task(_record(store, seen))
        for store, seen in zip(stores, arrivals, strict=True)
    ]
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "load":
                started = time.monotonic()
                await asyncio.gather(*(store.load() for store in stores))
                pipe.send(time.monotonic() - started)
            elif command == "stop":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(store.close() for store in stores), return_exceptions=True)
    pipe.send(arrivals)


def listen(url: str, count: int, pipe: Connection) -> None:
    """The process's target: ``count`` listeners on the store at ``url``."""
    try:
        import uvloop

        uvloop.run(_listen(url, count, pipe))
    except ImportError:  # pragma: no cover - uvloop is a server dependency on Linux
        asyncio.run(_listen(url, count, pipe))
