"""Outcome signals in a worker (docs/spec.md, "Guarded rollouts", Outcome signals):
``POST /v1/outcomes`` validates a batch against the served snapshot and counts it in this
worker's :class:`OutcomeBuffer`; the stats pump drains the buffer into the store every
``DRAIN_INTERVAL`` (0.5 s, with or without ``--no-stats``) and once more at a graceful
stop, and then wakes this worker's rollout driver, which re-judges the guards.

- **Nothing acknowledged is lost** while the server stops gracefully: the drain is a
  periodic sink registered ``at_stop``. A failed write keeps its rows: they are merged
  back and go with the next drain (minutes older than the store keeps are dropped then).
- **Bounded.** Rows waiting for the store (one per flag, minute and cohort) and their
  event series are capped (:data:`MAX_PENDING_ROWS`, :data:`MAX_PENDING_SERIES`): while
  the store is down long enough to fill the buffer, a batch is refused with 503 (nothing
  counted, the client keeps it and retries) instead of growing the worker's memory.
- **Exact.** Counts are integers and latency sums integer microseconds
  (:class:`~flagport.rollout.outcomes.Totals`), so what workers and instances add to the
  store merges exactly in any order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Final

from flagport.rollout.outcomes import (
    MAX_EVENT_SERIES,
    Cohort,
    OutcomeAggregate,
    OutcomeBatch,
    OutcomeRejection,
    period_minute,
)
from flagport_server.errors import StoreUnavailable
from flagport_server.metrics import Metrics
from flagport_server.runtime import Runtime
from flagport_server.stores.base import OUTCOME_MINUTES_KEPT, OutcomeRow, Store
from flagport_server.wire.outcomes_v1 import OutcomeResponse

__all__ = ["MAX_PENDING_ROWS", "MAX_PENDING_SERIES", "OutcomeBuffer", "OutcomeService"]

log = logging.getLogger("flagport.server.outcomes")

#: Rows (flag, minute, cohort) a worker keeps waiting for the store; beyond, batches are
#: refused with 503 until a drain succeeds. A row is a few hundred bytes.
MAX_PENDING_ROWS: Final = 50_000
#: Event series (name and labels, at most ~2.7 KB each) waiting for the store, likewise.
MAX_PENDING_SERIES: Final = 20_000


class OutcomeBuffer:
    """One worker's outcome totals not yet in the store. :meth:`add` counts a batch (on the
    event loop, from the route); :meth:`drain` (a periodic sink of the stats pump) writes
    them to the store and calls ``on_recorded`` after a write."""

    def __init__(
        self,
        store: Store,
        *,
        on_recorded: Callable[[], None] | None = None,
        max_rows: int = MAX_PENDING_ROWS,
        max_series: int = MAX_PENDING_SERIES,
    ) -> None:
        self.store = store
        self.on_recorded = on_recorded
        self.max_rows = max_rows
        self.max_series = max_series
        self.aggregate = OutcomeAggregate()
        #: Rows and event series in :attr:`aggregate` (kept as batches are added).
        self.rows = 0
        self.series = 0
        #: Whether batches are being refused (the warning is logged once per streak).
        self._refusing = False

    @property
    def full(self) -> bool:
        return self.rows >= self.max_rows or self.series >= self.max_series

    def add(
        self,
        batch: OutcomeBatch,
        now: float,
        variants_of: Callable[[str], Collection[str] | None],
    ) -> tuple[list[int], list[int], list[OutcomeRejection]]:
        """Count what the batch holds that may be counted (see
        :meth:`~flagport.rollout.outcomes.OutcomeAggregate.add_batch`); the indexes of the
        items and events counted, and the refusals. Raises
        :class:`~flagport.rollout.errors.OutcomeError` (nothing counted) for a batch refused
        as a whole, :class:`StoreUnavailable` (nothing counted) while the buffer is full."""
        if self.full:
            if not self._refusing:
                log.warning(
                    "outcome signals: %d rows and %d event series wait for the store; "
                    "batches are refused (503) until it takes them",
                    self.rows,
                    self.series,
                )
            self._refusing = True
            raise StoreUnavailable(
                "outcome signals wait for the store (the buffer is full); retry shortly"
            )
        self._refusing = False
        minute = period_minute(batch.period, now)
        touched = {(item.key, item.cohort) for item in batch.items}
        touched.update((event.key, event.cohort) for event in batch.events)
        rows, series = self._measure(touched, minute)
        rejected = self.aggregate.add_batch(batch, now, variants_of)
        rows_after, series_after = self._measure(touched, minute)
        self.rows += rows_after - rows
        self.series += series_after - series
        refused = {(r.kind, r.index) for r in rejected}
        items = [i for i in range(len(batch.items)) if ("item", i) not in refused]
        events = [i for i in range(len(batch.events)) if ("event", i) not in refused]
        return items, events, rejected

    def _measure(self, touched: Collection[tuple[str, Cohort]], minute: int) -> tuple[int, int]:
        rows = series = 0
        for key, cohort in touched:
            found = self.aggregate.minutes.get(key, {}).get(minute, {}).get(cohort)
            if found is not None:
                rows += 1
                series += len(found.events)
        return rows, series

    def take(self) -> list[OutcomeRow]:
        """Everything counted so far, as store rows; the buffer is empty afterwards."""
        taken, self.aggregate = self.aggregate, OutcomeAggregate()
        self.rows = self.series = 0
        return [
            (key, minute, cohort, totals)
            for key, by_minute in taken.minutes.items()
            for minute, by_cohort in by_minute.items()
            for cohort, totals in by_cohort.items()
        ]

    def put_back(self, rows: list[OutcomeRow], now: float) -> None:
        """Rows a write did not take, added back (exact sums) for the next drain; minutes
        the store no longer keeps at ``now`` are dropped."""
        aggregate = self.aggregate
        for key, minute, cohort, totals in rows:
            aggregate.totals(key, minute, cohort).merge(totals)
        aggregate.prune(now, OUTCOME_MINUTES_KEPT * 60)
        self.rows = self.series = 0
        for by_minute in aggregate.minutes.values():
            for by_cohort in by_minute.values():
                self.rows += len(by_cohort)
                self.series += sum(len(totals.events) for totals in by_cohort.values())

    async def drain(self, now: float) -> None:
        """Write what was counted to the store (the stats pump's periodic sink, every
        0.5 s and at a graceful stop). A failed write keeps the rows and raises (the pump
        warns once per streak of failures)."""
        if not self.aggregate.minutes:
            return
        rows = self.take()
        try:
            left_out = await self.store.record_outcomes(rows, now)
        except BaseException:  # the store failed, or the worker is stopping: keep them
            self.put_back(rows, now)
            raise
        if left_out:
            log.warning(
                "outcome signals: %d event series beyond %d per flag, cohort and minute "
                "were not counted",
                left_out,
                MAX_EVENT_SERIES,
            )
        if self.on_recorded is not None:
            self.on_recorded()


class OutcomeService:
    """``POST /v1/outcomes``: a batch validated against the served snapshot, counted in the
    worker's buffer."""

    def __init__(
        self,
        runtime: Runtime,
        buffer: OutcomeBuffer,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.buffer = buffer
        self.metrics = metrics
        self.clock = clock

    async def record(self, batch: OutcomeBatch) -> OutcomeResponse:
        """Items and events naming an unknown flag or variant, with counts out of bounds or
        a histogram that does not add up are refused one by one (in ``rejected``, with why);
        a stale or future period refuses all of them; the others are counted. Too many
        items or events refuse the batch (400), and so does a full buffer (503)."""
        snapshot = self.runtime.snapshot
        if snapshot is None:
            raise StoreUnavailable("no snapshot loaded yet; retry shortly")

        def variants_of(key: str) -> Collection[str] | None:
            compiled = snapshot.flag(key)
            return None if compiled is None else compiled.flag.variants

        items, events, rejected = self.buffer.add(batch, self.clock(), variants_of)
        requests = 0
        for index in items:
            item = batch.items[index]
            self.metrics.outcome_requests.labels(item.key, item.cohort.value).inc(item.requests)
            requests += item.requests
        return OutcomeResponse(
            counted=len(items) + len(events),
            requests=requests,
            events=sum(batch.events[i].count for i in events),
            rejected=rejected,
        )
