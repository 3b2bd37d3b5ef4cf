"""Adoption stats: evaluations and unique units per flag and variant, counted in memory off the
request path and added to the store every few seconds (DESIGN.md section 6, ADR 0007).

Three stages, each cheaper where it runs more often:

1. :class:`EvaluationCounter`, on the request path: one slot per *result object*. The engine
   shares prepared result objects per flag/variant/reason, so a dict lookup by ``id(result)``
   (the slot keeps the result alive, so the id is not reused) and an integer increment count
   an evaluation; with stats on, the unit (``context[flag.bucket_by]``) goes into the slot's
   set. No tuple building, no clock, no I/O.
2. :meth:`StatsRecorder.drain`, every second (and at each minute boundary) on the event loop:
   the slots become Prometheus counters and, with stats on, per-minute counts and per-hour
   unit sets. Counts are stamped with the minute the drained period started in.
3. :meth:`StatsRecorder.flush`, every ``stats_flush_interval`` seconds and at shutdown: one
   :class:`~flagport_server.stores.base.StatsBatch` to the store, which adds it to what every
   other worker and instance wrote. A failed flush keeps the batch for the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flagport.engine import ErrorCode, EvaluationResult, Reason
from flagport_server.stores.base import StatsBatch, Store

__all__ = [
    "ERROR_VARIANT",
    "UNKNOWN_FLAG_LABEL",
    "UNKNOWN_RESULT",
    "EvaluationCounter",
    "StatsRecorder",
    "hour_of",
    "minute_of",
]

log = logging.getLogger("flagport.server")

#: The ``flag`` label of evaluations of unknown keys (not a valid key, so no clash).
UNKNOWN_FLAG_LABEL = "(unknown)"
#: Stats "variant" of evaluations that ended in an error (the caller's default was used).
ERROR_VARIANT = "(error)"
#: One shared result for every unknown key: callers choose those, so they are not kept apart.
UNKNOWN_RESULT = EvaluationResult(
    key=UNKNOWN_FLAG_LABEL,
    value=None,
    variant=None,
    reason=Reason.ERROR,
    error_code=ErrorCode.FLAG_NOT_FOUND,
)
#: Units per (flag, variant, hour) held in memory between two store flushes; beyond it a
#: flush is made early (a flood of new units must not grow memory without bound).
MAX_PENDING_UNITS = 200_000

_ERROR = Reason.ERROR
_TARGETING_KEY = "targetingKey"


def minute_of(at: float) -> int:
    return int(at // 60) * 60


def hour_of(at: float) -> int:
    return int(at // 3600) * 3600


# A slot: [result, evaluations, units (set) or None, bucket_by attribute or None]
_Slot = list[Any]


class EvaluationCounter:
    """The request path's counter: one dict lookup and one increment per result, plus a set
    add per result when units are collected."""

    __slots__ = ("_bucket_by", "_slots", "collect_units")

    def __init__(
        self, bucket_by: Callable[[str], str | None], *, collect_units: bool = True
    ) -> None:
        #: ``bucket_by(flag_key)``: the flag's unit attribute in the current snapshot.
        self._bucket_by = bucket_by
        self.collect_units = collect_units
        self._slots: dict[int, _Slot] = {}

    def _new_slot(self, result: EvaluationResult) -> _Slot:
        by = None
        if self.collect_units and result.reason is not _ERROR and result.variant is not None:
            by = self._bucket_by(result.key)
            if by == _TARGETING_KEY:
                by = _TARGETING_KEY  # the interned constant: count_many compares identity
        slot: _Slot = [result, 0, set() if by is not None else None, by]
        self._slots[id(result)] = slot
        return slot

    def count(self, result: EvaluationResult, context: Mapping[str, Any]) -> None:
        slot = self._slots.get(id(result))
        if slot is None:
            slot = self._new_slot(result)
        slot[1] += 1
        by = slot[3]
        if by is not None:
            unit = context.get(by)
            if unit.__class__ is str:
                if unit:
                    slot[2].add(unit)
            elif unit.__class__ is int:
                slot[2].add(str(unit))

    def count_many(self, results: Iterable[EvaluationResult], context: Mapping[str, Any]) -> None:
        slots = self._slots
        get = context.get
        for result in results:
            slot = slots.get(id(result))
            if slot is None:
                slot = self._new_slot(result)
            slot[1] += 1
            by = slot[3]
            if by is not None:
                unit = get(by)
                if unit.__class__ is str:
                    if unit:
                        slot[2].add(unit)
                elif unit.__class__ is int:
                    slot[2].add(str(unit))

    def take(self) -> list[_Slot]:
        """The slots counted since the last call (the counter starts afresh)."""
        slots, self._slots = self._slots, {}
        return list(slots.values())


class StatsRecorder:
    """Per-worker stats waiting for the store: per-minute counts, per-hour unit sets and
    first/last seen, from drained counter slots and from exposure reports."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._counts: dict[tuple[str, str, int], int] = {}
        self._units: dict[tuple[str, str, int], set[str]] = {}
        self._seen: dict[str, list[float]] = {}
        self._pending_units = 0
        #: When the period being counted by the counter started (its minute stamps it).
        self.period_start = clock()
        self.failures = 0

    # -- intake ----------------------------------------------------------------------------

    def add(self, key: str, variant: str, count: int, units: Iterable[str], at: float) -> None:
        """Add ``count`` evaluations of ``key``/``variant`` and their units, at ``at``."""
        minute = minute_of(at)
        slot = (key, variant, minute)
        self._counts[slot] = self._counts.get(slot, 0) + count
        if units:
            unit_key = (key, variant, minute - minute % 3600)
            bucket = self._units.get(unit_key)
            if bucket is None:
                # A drained slot's set is no longer written to: adopt it instead of copying.
                bucket = self._units[unit_key] = units if isinstance(units, set) else set(units)
                self._pending_units += len(bucket)
            else:
                before = len(bucket)
                bucket.update(units)
                self._pending_units += len(bucket) - before
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = [at, at]
        else:
            seen[0] = min(seen[0], at)
            seen[1] = max(seen[1], at)

    def add_slots(self, slots: Iterable[_Slot], now: float | None = None) -> None:
        """Drained counter slots, counted in the period that ends now."""
        now = self.clock() if now is None else now
        at = self.period_start
        self.period_start = now
        for result, n, units, _ in slots:
            if result.reason is _ERROR:
                if result.error_code is ErrorCode.FLAG_NOT_FOUND:
                    continue  # unknown keys are unbounded: Prometheus counts them, not stats
                self.add(result.key, ERROR_VARIANT, n, (), at)
            else:
                self.add(result.key, result.variant or "", n, units or (), at)

    @property
    def pending_units(self) -> int:
        return self._pending_units

    # -- to the store ----------------------------------------------------------------------

    def take(self) -> StatsBatch:
        counts, self._counts = self._counts, {}
        units, self._units = self._units, {}
        seen, self._seen = self._seen, {}
        self._pending_units = 0
        return StatsBatch(
            counts=[(k, v, m, n) for (k, v, m), n in counts.items()],
            units=[(k, v, h, list(u)) for (k, v, h), u in units.items()],
            seen=[(k, first, last) for k, (first, last) in seen.items()],
        )

    def restore(self, batch: StatsBatch) -> None:
        """Put back a batch the store did not take (it is added to what came since)."""
        for key, variant, minute, n in batch.counts:
            slot = (key, variant, minute)
            self._counts[slot] = self._counts.get(slot, 0) + n
        for key, variant, hour, units in batch.units:
            bucket = self._units.setdefault((key, variant, hour), set())
            before = len(bucket)
            bucket.update(units)
            self._pending_units += len(bucket) - before
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
