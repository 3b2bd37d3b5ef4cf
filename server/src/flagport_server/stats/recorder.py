"""Stages 2 and 3 of the stats (see :mod:`flagport_server.stats`): what the counter drained
becomes per-minute counts and per-hour unit sets (:meth:`StatsRecorder.add_drained`), and
those go to the store (:meth:`StatsRecorder.flush`)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Collection, Mapping
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

_ERROR = Reason.ERROR


def minute_of(at: float) -> int:
    return int(at // 60) * 60


def _split_columns(
    rows: list[tuple[EvaluationResult, ...]], units: list[str], counted: Mapping[int, Counted]
) -> list[tuple[Counted, list[str]]] | None:
    """Which units each result was served to, from a table of evaluations (a row per unit,
    a column per flag) split column by column with numpy: a few nanoseconds per unit and
    flag, where a set insertion each cost 0.2-0.4 us (the sets outgrow the CPU's caches).
    None if the rows don't line up (a column holding two flags' results)."""
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        return None
    ids = np.fromiter(
        map(id, itertools.chain.from_iterable(rows)), dtype=np.intp, count=len(rows) * width
    ).reshape(len(rows), width)
    found: list[tuple[Counted, list[str]]] = []
    unit_array: Any = None
    for column in ids.T:
        first = int(column[0])
        if (column == first).all():  # one result for every unit: a flag at 0 % or 100 %
            found.append((counted[first], units))
            continue
        if unit_array is None:
            unit_array = np.array(units, dtype=object)
        distinct = np.unique(column).tolist()
        if len({counted[result_id].result.key for result_id in distinct}) > 1:
            return None
        found += [(counted[i], unit_array[column == i].tolist()) for i in distinct]
    return found


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

    def expand(self, drained: Drained, hour: int) -> None:
        """Add the units of ``drained``'s bulk evaluations to what it counted."""
        attributes = tuple(sorted({c.bucket_by for c in drained.counted if c.bucket_by}))
        if hour != self._hour or attributes != self._attributes:
            self._hour, self._attributes = hour, attributes
            self._last = {}
        if len(attributes) == 1:
            self._expand_one(drained, attributes[0])
        elif attributes:
            self._expand_many(drained, attributes)

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

    def _expand_one(self, drained: Drained, attribute: str) -> None:
        """Every flag buckets by ``attribute`` (the usual case). The new evaluations form a
        table (a row per unit, a column per flag); each column is split by result object
        with numpy, so a unit costs a few nanoseconds per flag instead of a set insertion
        each (~0.2-0.4 us, the sets being far larger than the CPU's caches)."""
        units: list[str] = []
        rows: list[tuple[EvaluationResult, ...]] = []
        for context, served in zip(drained.contexts, drained.results, strict=True):
            unit = counted_unit(context.get(attribute))
            if unit is None:
                continue
            results = tuple(served.values())
            if self._remember(unit, results):
                units.append(unit)
                rows.append(results)
        if not rows:
            return
        counted = {id(c.result): c for c in drained.counted}
        found = _split_columns(rows, units, counted)
        if found is None:
            # The snapshot changed within the period and the rows don't line up (rare): one
            # unit and flag at a time.
            found = [
                (counted[id(r)], [unit]) for unit, row in zip(units, rows, strict=True) for r in row
            ]
        for evaluations_of, chunk in found:
            if evaluations_of.bucket_by is not None:
                evaluations_of.units.extend(chunk)

    def _expand_many(self, drained: Drained, attributes: tuple[str, ...]) -> None:
        counted = {id(c.result): c for c in drained.counted}
        for context, served in zip(drained.contexts, drained.results, strict=True):
            results = tuple(served.values())
            units = tuple([counted_unit(context.get(name)) for name in attributes])
            if self._remember(units, results):
                for result in results:
                    evaluations_of = counted[id(result)]
                    by = evaluations_of.bucket_by
                    if by is not None:
                        unit = counted_unit(context.get(by))
                        if unit is not None:
                            evaluations_of.units.append(unit)


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
        """What the counter drained, counted in the period that ends now."""
        now = self.clock() if now is None else now
        at = self.period_start
        self.period_start = now
        if drained.contexts:
            self._recent.expand(drained, hour_of(at))
        for evaluations_of in drained.counted:
            result = evaluations_of.result
            if result.reason is _ERROR:
                if result.error_code is ErrorCode.FLAG_NOT_FOUND:
                    continue  # unknown keys are unbounded: Prometheus counts them, not stats
                self.add(result.key, ERROR_VARIANT, evaluations_of.evaluations, (), at)
                continue
            variant = result.variant or ""
            self.add(result.key, variant, evaluations_of.evaluations, evaluations_of.units, at)

    @property
    def pending_units(self) -> int:
        return self._pending_units

    # -- to the store ----------------------------------------------------------------------

    def take(self) -> StatsBatch:
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
        """Write what is pending. False (the batch kept for the next flush) on failure."""
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
