"""Stages 2 and 3 of the stats (see :mod:`flagport_server.stats`): what the counter drained
becomes per-minute counts and per-hour unit sets (:meth:`StatsRecorder.add_drained`), and
those go to the store (:meth:`StatsRecorder.flush`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import numpy as np

from flagport.durations import hour_of
from flagport.engine import ErrorCode, EvaluationResult, Reason
from flagport.tally import Counted, counted_unit
from flagport_server.stats.counter import Drained
from flagport_server.stores.base import StatsBatch, Store

__all__ = [
    "ERROR_VARIANT",
    "MAX_PENDING_UNITS",
    "RECENT_UNITS_LIMIT",
    "StatsRecorder",
    "hour_of",
    "minute_of",
]

log = logging.getLogger("flagport.server")

#: Stats "variant" of evaluations that ended in an error (the caller's default was used).
ERROR_VARIANT = "(error)"
#: Units per (flag, variant, hour) held in memory between two store flushes; beyond it a
#: flush is made early (a flood of new units must not grow memory without bound).
MAX_PENDING_UNITS = 200_000
#: Units whose last bulk results are remembered for the hour (about 0.5 KiB each at 50 flags,
#: plus the unit itself: at most flagport.tally.MAX_UNIT_LENGTH characters); beyond it the
#: memory starts afresh, which costs time (units are expanded again), never accuracy.
RECENT_UNITS_LIMIT = 20_000
#: The expansion of bulk units into unit lists works in steps, between which the event
#: loop serves requests: a step reads at most this many bulk evaluations...
ROWS_PER_STEP = 250
#: ... or splits at most this many (evaluation, flag) cells (a few nanoseconds each, plus
#: a few microseconds per column).
CELLS_PER_STEP = 20_000

_ERROR = Reason.ERROR


def minute_of(at: float) -> int:
    return int(at // 60) * 60


#: A list of what a step of the expansion found: (what was counted for a result, units).
Found = list[tuple[Counted, list[str]]]


def _split_columns(
    rows: list[tuple[EvaluationResult, ...]], units: list[str], counted: Mapping[int, Counted]
) -> Iterator[Found | None]:
    """Which units each result was served to, from a table of evaluations (a row per unit,
    a column per flag) split column by column with numpy: a few nanoseconds per unit and
    flag, where a set insertion each cost 0.2-0.4 us (the sets outgrow the CPU's caches).
    In steps of at most :data:`CELLS_PER_STEP` ids; None (and nothing more) if the rows
    don't line up (a column holding two flags' results)."""
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        yield None
        return
    step_rows = max(1, CELLS_PER_STEP // width)
    parts = []
    for start in range(0, len(rows), step_rows):
        chunk = rows[start : start + step_rows]
        ids = np.fromiter(
            map(id, itertools.chain.from_iterable(chunk)), dtype=np.intp, count=len(chunk) * width
        )
        parts.append(ids.reshape(len(chunk), width))
        if start + step_rows < len(rows):
            yield []
    table = np.concatenate(parts) if len(parts) > 1 else parts[0]
    found: Found = []
    unit_array: Any = None
    step_columns = max(1, CELLS_PER_STEP // len(rows))
    for index, column in enumerate(table.T):
        if index and index % step_columns == 0:
            yield found
            found = []
        first = int(column[0])
        if (column == first).all():  # one result for every unit: a flag at 0 % or 100 %
            found.append((counted[first], units))
            continue
        if unit_array is None:
            unit_array = np.array(units, dtype=object)
        distinct = np.unique(column).tolist()
        if len({counted[result_id].result.key for result_id in distinct}) > 1:
            yield None
            return
        found += [(counted[i], unit_array[column == i].tolist()) for i in distinct]
    yield found


class _RecentUnits:
    """The bulk results each unit was last recorded with, this hour. A unit served the same
    result objects again adds nothing to any sketch, so its expansion into ~50 unit sets is
    skipped; a new unit, a new hour, a new snapshot (new result objects) or a different
    bucketing attribute expands again. Only ever skips work: forgetting is always safe."""

    __slots__ = ("_attributes", "_hour", "_last")

    def __init__(self) -> None:
        self._hour = -1
        self._attributes: tuple[str, ...] = ()
        # Tuples of results: untracked by the garbage collector, however many are kept.
        self._last: dict[Any, tuple[EvaluationResult, ...]] = {}

    def expand(self, drained: Drained, hour: int) -> Iterator[Found]:
        """The units of ``drained``'s bulk evaluations, per result they were served
        (results without units left out), in steps of bounded work: the caller may let the
        event loop run between two."""
        attributes = tuple(sorted({c.bucket_by for c in drained.counted if c.bucket_by}))
        if hour != self._hour or attributes != self._attributes:
            self._hour, self._attributes = hour, attributes
            self._last = {}
        if len(attributes) == 1:
            return self._expand_one(drained, attributes[0])
        if attributes:
            return self._expand_many(drained, attributes)
        return iter(())

    def _remember(
        self, unit: str | tuple[str | None, ...], results: tuple[EvaluationResult, ...]
    ) -> bool:
        """Whether ``unit`` (a counted_unit, or a tuple of them: bounded in size) still has
        to be expanded (it is remembered from now on)."""
        last = self._last
        if last.get(unit) == results:  # the same objects: compared by identity
            return False
        if len(last) >= RECENT_UNITS_LIMIT:
            last.clear()
        last[unit] = results
        return True

    def _expand_one(self, drained: Drained, attribute: str) -> Iterator[Found]:
        """Every flag buckets by ``attribute`` (the usual case). The new evaluations form a
        table (a row per unit, a column per flag); each column is split by result object
        with numpy, so a unit costs a few nanoseconds per flag instead of a set insertion
        each (~0.2-0.4 us, the sets being far larger than the CPU's caches)."""
        units: list[str] = []
        rows: list[tuple[EvaluationResult, ...]] = []
        remember = self._remember
        for index, (context, served) in enumerate(
            zip(drained.contexts, drained.results, strict=True), 1
        ):
            unit = counted_unit(context.get(attribute))
            if unit is not None:
                results = tuple(served.values())
                if remember(unit, results):
                    units.append(unit)
                    rows.append(results)
            if index % ROWS_PER_STEP == 0:
                yield []
        if not rows:
            return
        counted = _by_result(drained)
        for found in _split_columns(rows, units, counted):
            if found is None:
                # The snapshot changed within the period and the rows don't line up (rare):
                # one unit and flag at a time.
                yield [
                    (of, [unit])
                    for unit, row in zip(units, rows, strict=True)
                    for r in row
                    if (of := counted[id(r)]).bucket_by is not None
                ]
                return
            yield [(of, chunk) for of, chunk in found if of.bucket_by is not None]

    def _expand_many(self, drained: Drained, attributes: tuple[str, ...]) -> Iterator[Found]:
        counted = _by_result(drained)
        found: Found = []
        for index, (context, served) in enumerate(
            zip(drained.contexts, drained.results, strict=True), 1
        ):
            results = tuple(served.values())
            units = tuple([counted_unit(context.get(name)) for name in attributes])
            if self._remember(units, results):
                for result in results:
                    evaluations_of = counted[id(result)]
                    by = evaluations_of.bucket_by
                    if by is not None:
                        unit = counted_unit(context.get(by))
                        if unit is not None:
                            found.append((evaluations_of, [unit]))
            if index % ROWS_PER_STEP == 0:
                yield found
                found = []
        yield found


def _by_result(drained: Drained) -> dict[int, Counted]:
    return {id(c.result): c for c in drained.counted}


class StatsRecorder:
    """Per-worker stats waiting for the store: per-minute counts, per-hour unit sets and
    first/last seen, from what the counter drained and from exposure reports."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._counts: dict[tuple[str, str, int], int] = {}
        #: The part of ``_counts`` in-process clients reported, per (flag, variant, hour).
        self._reported: dict[tuple[str, str, int], int] = {}
        #: Units per (flag, variant, hour); a unit may be listed more than once (the sketches
        #: count it once): merging lists is far cheaper than merging sets.
        self._units: dict[tuple[str, str, int], list[str]] = {}
        self._seen: dict[str, list[float]] = {}
        self._pending_units = 0
        self._recent = _RecentUnits()
        #: Bulk logs whose units are not expanded yet, oldest first: each the expansion's
        #: remaining steps (:meth:`_RecentUnits.expand`, started when its turn comes) and the
        #: hour its units go to (see :meth:`expand_units`).
        self._backlog: deque[tuple[Drained, int, Iterator[Found] | None]] = deque()
        #: When the period being counted by the counter started (its minute stamps it).
        self.period_start = clock()
        self.failures = 0

    # -- intake ----------------------------------------------------------------------------

    def add(
        self,
        key: str,
        variant: str,
        count: int,
        units: Collection[str],
        at: float,
        *,
        reported: bool = False,
    ) -> None:
        """Add ``count`` evaluations of ``key``/``variant`` and their units, at ``at``;
        ``reported``: by an in-process client (``POST /v1/exposures``), not by this server."""
        minute = minute_of(at)
        slot = (key, variant, minute)
        self._counts[slot] = self._counts.get(slot, 0) + count
        hour = minute - minute % 3600
        if reported:
            self._reported[(key, variant, hour)] = (
                self._reported.get((key, variant, hour), 0) + count
            )
        if units:
            # Copied: later additions extend the stored list, never the caller's.
            self._units.setdefault((key, variant, hour), []).extend(units)
            self._pending_units += len(units)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = [at, at]
        else:
            seen[0] = min(seen[0], at)
            seen[1] = max(seen[1], at)

    def add_drained(self, drained: Drained, now: float | None = None) -> None:
        """What the counter drained, counted in the period that ends now. The counts and the
        single evaluations' units are added at once; the bulk evaluations' units wait for
        :meth:`expand_units` (the pump runs it right after, in slices), so a drain never
        holds the event loop for more than the counts take."""
        now = self.clock() if now is None else now
        at = self.period_start
        self.period_start = now
        if drained.contexts:
            self._backlog.append((drained, hour_of(at), None))
        for evaluations_of in drained.counted:
            result = evaluations_of.result
            if result.reason is _ERROR:
                if result.error_code is ErrorCode.FLAG_NOT_FOUND:
                    continue  # unknown keys are unbounded: Prometheus counts them, not stats
                self.add(result.key, ERROR_VARIANT, evaluations_of.evaluations, (), at)
                continue
            variant = result.variant or ""
            self.add(result.key, variant, evaluations_of.evaluations, evaluations_of.units, at)

    def _expand_step(self) -> bool:
        """One step of the expansion of the bulk evaluations waiting (a bounded amount of
        work); whether any are left."""
        backlog = self._backlog
        if not backlog:
            return False
        drained, hour, steps = backlog[0]
        if steps is None:  # its turn: the memory of recent units is as the earlier left it
            steps = self._recent.expand(drained, hour)
            backlog[0] = (drained, hour, steps)
        found = next(steps, None)
        if found is None:
            backlog.popleft()
            return bool(backlog)
        units = self._units
        for evaluations_of, listed in found:
            result = evaluations_of.result
            units.setdefault((result.key, result.variant or "", hour), []).extend(listed)
            self._pending_units += len(listed)
        return True

    def expand_units_now(self) -> None:
        """Expand every bulk evaluation still waiting, in one go."""
        while self._expand_step():
            pass

    async def expand_units(self, now: float | None = None) -> None:
        """Expand the bulk evaluations waiting into the hour's unit lists, a bounded step at
        a time (~0.5 ms), letting the event loop serve requests between two: a period of
        new units (thousands of bulk requests of 50 flags) took the loop for tens of
        milliseconds in one go, which every request in flight waited for (the bulk p99)."""
        while self._expand_step():
            await asyncio.sleep(0)

    @property
    def pending_units(self) -> int:
        return self._pending_units

    # -- to the store ----------------------------------------------------------------------

    def take(self) -> StatsBatch:
        """Everything pending (bulk units expanded first), to be written."""
        self.expand_units_now()
        counts, self._counts = self._counts, {}
        reported, self._reported = self._reported, {}
        units, self._units = self._units, {}
        seen, self._seen = self._seen, {}
        self._pending_units = 0
        return StatsBatch(
            counts=[(k, v, m, n) for (k, v, m), n in counts.items()],
            units=[(k, v, h, u) for (k, v, h), u in units.items()],
            seen=[(k, first, last) for k, (first, last) in seen.items()],
            reported=[(k, v, h, n) for (k, v, h), n in reported.items()],
        )

    def restore(self, batch: StatsBatch) -> None:
        """Put back a batch the store did not take (it is added to what came since)."""
        for key, variant, minute, n in batch.counts:
            slot = (key, variant, minute)
            self._counts[slot] = self._counts.get(slot, 0) + n
        for key, variant, hour, n in batch.reported:
            slot = (key, variant, hour)
            self._reported[slot] = self._reported.get(slot, 0) + n
        for key, variant, hour, units in batch.units:
            self._units.setdefault((key, variant, hour), []).extend(units)
            self._pending_units += len(units)
        for key, first, last in batch.seen:
            seen = self._seen.setdefault(key, [first, last])
            seen[0], seen[1] = min(seen[0], first), max(seen[1], last)

    async def flush(self, now: float | None = None) -> bool:
        """Write what is pending (the bulk units waiting are expanded first, in slices).
        False (the batch kept for the next flush) on failure."""
        await self.expand_units()
        batch = self.take()
        if batch.empty:
            return True
        try:
            await self.store.record_stats(batch, self.clock() if now is None else now)
        except Exception as error:
            self.failures += 1
            if self.failures == 1 or self.failures % 30 == 0:
                log.warning("stats not written (kept for the next flush): %s", error)
            self.restore(batch)
            return False
        self.failures = 0
        return True
