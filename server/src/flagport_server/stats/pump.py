"""The stats pump: one loop carries what the request path counted to everything that reads
it, each sink at its own interval (docs/adr/0018-served-snapshot-and-stats-pump.md).

    count    EvaluationCounter, on the request path (no clock, no I/O)
    drain    every DRAIN_INTERVAL (0.5 s), just after each minute boundary, before each
             scrape and at shutdown
    sinks    of what was drained, at every drain: the Prometheus counters, the stats
             recorder (stats on) and the sinks other features register (the outcome
             signals of a rollout: they flow with or without ``--no-stats``)
    periodic each at its own interval: the recorder's flush to the store (early when too
             many units wait), the unique-unit gauges from the store, the worker gauges
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from flagport_server.stats.counter import Drained, EvaluationCounter

__all__ = ["DRAIN_INTERVAL", "DrainedSink", "PeriodicSink", "StatsPump"]

log = logging.getLogger("flagport.server")

#: Seconds between two drains: the cadence of every drained sink (outcome signals included).
DRAIN_INTERVAL = 0.5

#: Called with what one drain took and when (``time.time()``); runs on the event loop.
DrainedSink = Callable[[Drained, float], None]
#: Called with the time (``time.time()``) when its interval has passed.
PeriodicSink = Callable[[float], Awaitable[object]]


class _Periodic:
    __slots__ = ("action", "at_stop", "due", "failing", "interval", "name", "urgent")

    def __init__(
        self,
        name: str,
        interval: float,
        action: PeriodicSink,
        due: float,
        urgent: Callable[[], bool] | None,
        at_stop: bool,
    ) -> None:
        #: Whether its last run failed (a streak of failures is logged once).
        self.failing = False
        self.name = name
        self.interval = interval
        self.action = action
        self.due = due
        self.urgent = urgent
        self.at_stop = at_stop


class StatsPump:
    """One per app. Register sinks before :meth:`start`; :meth:`stop` drains one last time
    and runs the sinks registered ``at_stop`` (nothing counted is lost on a graceful stop)."""

    def __init__(self, counter: EvaluationCounter, *, clock: Callable[[], float] = time.time):
        self.counter = counter
        self.clock = clock
        self._drained_sinks: list[tuple[str, DrainedSink]] = []
        self._periodic: list[_Periodic] = []
        self._task: asyncio.Task[None] | None = None

    # -- registration ---------------------------------------------------------------------

    def add_drained_sink(self, name: str, sink: DrainedSink) -> None:
        """Call ``sink(drained, now)`` at every drain (every :data:`DRAIN_INTERVAL` seconds,
        whether stats are kept or not), with what the counter took since the last one."""
        self._drained_sinks.append((name, sink))

    def add_periodic_sink(
        self,
        name: str,
        interval: float,
        action: PeriodicSink,
        *,
        first_after: float | None = None,
        urgent: Callable[[], bool] | None = None,
        at_stop: bool = False,
    ) -> None:
        """Await ``action(now)`` every ``interval`` seconds (checked at each drain; the first
        time after ``first_after`` seconds, default ``interval``), and at once whenever
        ``urgent()`` says so; ``at_stop``: once more at :meth:`stop`, after the last drain."""
        first = interval if first_after is None else first_after
        self._periodic.append(
            _Periodic(name, interval, action, self.clock() + first, urgent, at_stop)
        )

    # -- running --------------------------------------------------------------------------

    def drain(self) -> None:
        """Drain the counter now and hand what it took to every drained sink."""
        drained = self.counter.drain()
        now = self.clock()
        for name, sink in self._drained_sinks:
            try:
                sink(drained, now)
            except Exception:
                log.exception("stats pump: sink %s failed", name)

    async def _run_periodic(self, now: float) -> None:
        for periodic in self._periodic:
            if now < periodic.due and not (periodic.urgent is not None and periodic.urgent()):
                continue
            periodic.due = now + periodic.interval
            try:
                await periodic.action(now)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store may be down: try again next time
                # Said once per streak of failures: what stays unsaved must not go unnoticed.
                if not periodic.failing:
                    log.warning("stats pump: %s failed (retrying): %s", periodic.name, error)
                periodic.failing = True
            else:
                periodic.failing = False

    async def _loop(self) -> None:
        while True:
            # Every half second, and just after each minute boundary: the recorder stamps
            # drained counts with the minute their period started in, so a period never
            # spans two minutes.
            now = self.clock()
            await asyncio.sleep(min(DRAIN_INTERVAL, 60.0 - now % 60.0 + 0.001))
            try:
                self.drain()
                await self._run_periodic(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in one drain must not stop every later one (the worker would count
                # nothing more, silently).
                log.exception("stats pump: a drain failed; the next one goes on")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="flagport-stats-pump")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.drain()
        now = self.clock()
        for periodic in self._periodic:
            if periodic.at_stop:
                try:
                    await periodic.action(now)
                except Exception as error:
                    log.warning("stats pump: %s failed at shutdown: %s", periodic.name, error)
