"""Adoption stats: evaluations and unique units per flag and variant, counted in memory off the
request path and added to the store every few seconds (docs/spec.md section 7, ADR 0007).

Three stages, each cheaper where it runs more often:

1. :class:`EvaluationCounter`, on the request path: the SDK's evaluation tally
   (:class:`flagport.tally.EvaluationTally`, which ``LocalClient`` counts with too), one
   tally per *result object*. The engine shares prepared result objects per
   flag/variant/reason, so a dict lookup by ``id(result)`` and an atomic increment count an
   evaluation. With stats on, a single evaluation puts its unit (``context[flag.bucket_by]``)
   into the tally's set; a bulk evaluation only logs its context and results (two appends,
   whatever the number of flags). No tuple building, no clock, no I/O.
2. :class:`StatsPump` drains the counter every half second (and at each minute boundary) on
   the event loop and hands what it drained to every sink: the Prometheus counters, the
   outcome signals other features register, and, with stats on,
   :meth:`StatsRecorder.add_drained`, which makes it per-minute counts and per-hour unit
   sets. Counts are stamped with the minute the drained period started in. The bulk log is
   expanded into the unit lists right after (:meth:`StatsRecorder.expand_units`, in bounded
   steps with the event loop free between two), skipping a unit already recorded this hour
   with the same results: the portal's users come back all day, and a unit already in a
   sketch changes nothing when added again.
3. :meth:`StatsRecorder.flush`, a periodic sink of the pump, every ``stats_flush_interval``
   seconds and at shutdown: one
   :class:`~flagport_server.stores.base.StatsBatch` to the store, which adds it to what every
   other worker and instance wrote. A failed flush keeps the batch for the next one.
"""

from flagport_server.stats.counter import (
    UNKNOWN_FLAG_LABEL,
    UNKNOWN_RESULT,
    Drained,
    EvaluationCounter,
)
from flagport_server.stats.pipeline import Stats
from flagport_server.stats.pump import DRAIN_INTERVAL, DrainedSink, PeriodicSink, StatsPump
from flagport_server.stats.recorder import (
    ERROR_VARIANT,
    MAX_PENDING_UNITS,
    RECENT_UNITS_LIMIT,
    StatsRecorder,
    hour_of,
    minute_of,
)

__all__ = [
    "DRAIN_INTERVAL",
    "ERROR_VARIANT",
    "MAX_PENDING_UNITS",
    "RECENT_UNITS_LIMIT",
    "UNKNOWN_FLAG_LABEL",
    "UNKNOWN_RESULT",
    "Drained",
    "DrainedSink",
    "EvaluationCounter",
    "PeriodicSink",
    "Stats",
    "StatsPump",
    "StatsRecorder",
    "hour_of",
    "minute_of",
]
