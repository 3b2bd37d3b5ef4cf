"""The app's stats, wired once: the counter the evaluation routes count with, the recorder
(with stats on) and the pump that carries one to the other, to Prometheus and to the store."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flagport_server.runtime import Runtime
from flagport_server.settings import Settings
from flagport_server.stats.counter import EvaluationCounter
from flagport_server.stats.pump import StatsPump
from flagport_server.stats.recorder import MAX_PENDING_UNITS, StatsRecorder, hour_of

if TYPE_CHECKING:  # metrics imports the counter from this package
    from flagport_server.metrics import Metrics

__all__ = ["Stats"]

#: Seconds between two updates of the worker gauges and the latency histogram.
WORKER_GAUGES_INTERVAL = 1.0
#: The unique-unit gauges are first refreshed this soon after start (at most).
FIRST_GAUGES_AFTER = 10.0


class Stats:
    """One per app: ``counter`` (request path), ``recorder`` (``None`` under ``--no-stats``)
    and ``pump``, with the sinks every app has registered."""

    def __init__(self, settings: Settings, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.counter = EvaluationCounter(runtime.bucket_by, collect_units=settings.stats)
        self.recorder = StatsRecorder(runtime.store) if settings.stats else None
        self.pump = pump = StatsPump(self.counter)
        pump.add_drained_sink("prometheus", metrics.add_drained)
        pump.add_periodic_sink("worker gauges", WORKER_GAUGES_INTERVAL, self._observe_worker)
        recorder = self.recorder
        if recorder is not None:
            pump.add_drained_sink("stats recorder", recorder.add_drained)
            # After every drain: the bulk evaluations' units, in slices (the loop serves
            # requests between two).
            pump.add_periodic_sink("bulk units", 0.0, recorder.expand_units)
            pump.add_periodic_sink(
                "stats to the store",
                settings.stats_flush_interval,
                recorder.flush,
                urgent=lambda: recorder.pending_units > MAX_PENDING_UNITS,
                at_stop=True,
            )
            pump.add_periodic_sink(
                "unique-unit gauges",
                settings.stats_gauge_interval,
                self._refresh_unique_units,
                first_after=min(FIRST_GAUGES_AFTER, settings.stats_gauge_interval),
            )

    async def _observe_worker(self, now: float) -> None:
        runtime = self.runtime
        self.metrics.flush_latencies()
        self.metrics.observe_worker(
            runtime.version, runtime.snapshot_age, runtime.store_ok, runtime.regression is not None
        )

    async def _refresh_unique_units(self, now: float) -> None:
        """``flagport_unique_units{flag,variant}`` over the last 24 hours, from the store."""
        runtime = self.runtime
        snapshot = runtime.snapshot
        if snapshot is None:
            return
        until = hour_of(time.time()) + 3600
        for key in snapshot:
            view = await runtime.store.stats(key, until - 25 * 3600, until)
            for variant, units in view.unique_units.items():
                self.metrics.unique_units.labels(key, variant).set(units)
