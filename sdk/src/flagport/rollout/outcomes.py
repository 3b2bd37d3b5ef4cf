"""Outcome signals (docs/spec.md, "Guarded rollouts", Outcome signals): the one wire shape of
``POST /v1/outcomes``, its validation, the per-minute aggregate per (flag, cohort) and the
window readings guards are judged on.

Times are seconds since the epoch (floats); nothing here reads the clock: ``now`` is always
an argument.

Exactness: counts are integers and the latency sum is kept in integer microseconds, so
merging batches in any order or grouping gives the same totals, on every worker and
instance. Percentiles come from the fixed histogram by linear interpolation inside the
bucket holding the rank (as Prometheus's ``histogram_quantile``): the q-quantile of n
requests is the ``q*n``-th; in bucket ``(lower, upper]`` holding ``c`` requests with ``b``
below it, it is ``lower + (upper - lower) * (q*n - b) / c``; the first bucket's lower bound
is 0, and a rank in the +inf bucket reads as 10,000 ms (at least 10 s).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Final

import msgspec

from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH
from flagport.rollout.errors import OutcomeError
from flagport.rollout.guards import EVENT_NAME_PATTERN, LABEL_NAME_PATTERN
from flagport.rollout.limits import (
    LATENCY_BOUNDS_MS,
    MAX_EVENT_COUNT,
    MAX_EVENT_NAME_LENGTH,
    MAX_LABEL_NAME_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_ITEMS,
    MAX_PERIOD_AGE_SECONDS,
    MAX_PERIOD_SECONDS,
    MAX_REQUESTS,
    MAX_VARIANT_LENGTH,
)

__all__ = [
    "BUCKETS",
    "EMPTY_READING",
    "MAX_CLOCK_SKEW_SECONDS",
    "MAX_EVENT_SERIES",
    "MAX_TOTAL",
    "Cohort",
    "CohortReading",
    "OutcomeAggregate",
    "OutcomeBatch",
    "OutcomeEvent",
    "OutcomeItem",
    "OutcomeRejection",
    "Totals",
    "WindowReading",
    "accept_batch",
    "batch_problem",
    "bucket_of",
    "event_problem",
    "item_problem",
    "minute_of",
    "period_minute",
    "period_problem",
    "quantile_ms",
    "series_key",
    "window_start",
]

#: Buckets in every histogram.
BUCKETS: Final = len(LATENCY_BOUNDS_MS)
#: How far in the future a period may end (a client's clock ahead of the server's).
MAX_CLOCK_SKEW_SECONDS: Final = 5
#: Distinct event series (name and labels) kept per flag, cohort and minute; events of
#: further series are refused, so one client cannot grow the aggregate without bound.
MAX_EVENT_SERIES: Final = 1000
#: A request's duration is at most a day: bounds ``latency_ms_sum`` per request.
_MAX_REQUEST_MS: Final = 86_400_000.0
#: Every total saturates here (2^53: exact as a double, in JSON and in Redis's Lua), so no
#: sum of accepted items, however many, overflows a store's 64-bit integers: a write that
#: failed half-way would be retried and count its first rows twice.
MAX_TOTAL: Final = 2**53


def _plus(total: int, added: int) -> int:
    return min(total + added, MAX_TOTAL)


_LABEL_NAME: Final = re.compile(LABEL_NAME_PATTERN)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH)]
_Variant = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_VARIANT_LENGTH)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_EventName = Annotated[
    str, msgspec.Meta(pattern=f"^{EVENT_NAME_PATTERN}$", max_length=MAX_EVENT_NAME_LENGTH)
]


class Cohort(enum.StrEnum):
    """The flag's own split: treatment got its on variant, control its off variant."""

    TREATMENT = "treatment"
    CONTROL = "control"


class OutcomeItem(msgspec.Struct, forbid_unknown_fields=True):
    """Requests served while a plan flag was read, for one flag, variant and cohort."""

    key: _Key
    variant: _Variant
    cohort: Cohort
    requests: _Count
    #: Requests answered with a status >= 500 or by an exception escaping the app.
    failures: _Count
    latency_ms_sum: Annotated[float, msgspec.Meta(ge=0)]
    #: Requests per latency bucket (bounds ``LATENCY_BOUNDS_MS``); they sum to ``requests``.
    latency_buckets: list[_Count]


class OutcomeEvent(msgspec.Struct, forbid_unknown_fields=True):
    """``report(name, **labels)`` calls, counted, for one flag, variant and cohort."""

    key: _Key
    variant: _Variant
    cohort: Cohort
    name: _EventName
    labels: dict[str, str]
    count: _Count


class OutcomeBatch(msgspec.Struct, forbid_unknown_fields=True):
    #: ``[start, end]`` in seconds since the epoch: when the reported requests were served.
    period: tuple[float, float]
    items: list[OutcomeItem] = []
    events: list[OutcomeEvent] = []


class OutcomeRejection(msgspec.Struct):
    """One refused item or event: ``kind`` is ``item`` or ``event``, ``index`` its place."""

    kind: str
    index: int
    key: str
    error: str


def bucket_of(duration_ms: float) -> int:
    """The bucket a request of ``duration_ms`` falls in: the first bound >= it."""
    for index, bound in enumerate(LATENCY_BOUNDS_MS):
        if duration_ms <= bound:
            return index
    return BUCKETS - 1


def minute_of(at: float) -> int:
    """The start of the minute holding ``at`` (seconds since the epoch)."""
    return int(at // 60) * 60


def period_minute(period: tuple[float, float], now: float) -> int:
    """The minute a batch is counted in: the one holding the period's last instant (a
    period is ``[start, end)``: one ending on a minute's first second belongs to the minute
    before), at most ``now``'s minute."""
    start, end = period
    end = min(end, now)
    minute = minute_of(end)
    return minute - 60 if end == minute and start < end else minute


def window_start(window: int, now: float) -> int:
    """The first second of a window of ``window`` seconds (whole minutes) judged at
    ``now``: the current partial minute plus the ``window / 60`` whole minutes before it."""
    return minute_of(now) - window


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """The canonical text of an event series: ``name`` and its labels sorted by name."""
    return msgspec.json.encode([name, sorted(labels.items())]).decode()


_SeriesParts = tuple[str, tuple[tuple[str, str], ...]]
_series_decoder = msgspec.json.Decoder(_SeriesParts)


def batch_problem(batch: OutcomeBatch) -> str | None:
    """Why the whole batch is refused (400), if it is: too many items or events."""
    if len(batch.items) > MAX_OUTCOME_ITEMS:
        return f"{len(batch.items)} items: at most {MAX_OUTCOME_ITEMS} per batch (split it)"
    if len(batch.events) > MAX_OUTCOME_EVENTS:
        return f"{len(batch.events)} events: at most {MAX_OUTCOME_EVENTS} per batch (split it)"
    return None


def period_problem(period: tuple[float, float], now: float) -> str | None:
    """Why a period cannot be counted: unordered, longer than 120 s, ending in the future
    (beyond the clock skew allowed) or more than 120 s before ``now`` (stale)."""
    start, end = period
    if not (math.isfinite(start) and math.isfinite(end)) or start > end:
        return f"period must be [start, end] with start <= end, got {list(period)}"
    if end - start > MAX_PERIOD_SECONDS:
        return f"a period is at most {MAX_PERIOD_SECONDS} s long, got {end - start:.0f} s"
    if end > now + MAX_CLOCK_SKEW_SECONDS:
        return f"the period ends {end - now:.0f} s in the future (check the client's clock)"
    if end < now - MAX_PERIOD_AGE_SECONDS:
        return (
            f"stale: the period ended {now - end:.0f} s ago, at most "
            f"{MAX_PERIOD_AGE_SECONDS} s is accepted"
        )
    return None


def item_problem(item: OutcomeItem) -> str | None:
    """Why one item is refused whatever the flags are."""
    if len(item.latency_buckets) != BUCKETS:
        return f"latency_buckets must have {BUCKETS} counts, got {len(item.latency_buckets)}"
    if min((item.requests, item.failures, *item.latency_buckets)) < 0:
        return "counts must be at least 0"
    if item.requests > MAX_REQUESTS:
        return f"requests must be at most {MAX_REQUESTS:,}, got {item.requests:,} (split it)"
    if item.failures > item.requests:
        return f"failures ({item.failures}) exceed requests ({item.requests})"
    if sum(item.latency_buckets) != item.requests:
        return (
            f"latency_buckets count {sum(item.latency_buckets)} requests, "
            f"requests says {item.requests}"
        )
    if not (0 <= item.latency_ms_sum <= item.requests * _MAX_REQUEST_MS):
        return "latency_ms_sum must be between 0 and a day per request"
    return None


def event_problem(event: OutcomeEvent) -> str | None:
    """Why one event item is refused whatever the flags are."""
    if event.count < 0:
        return f"count must be at least 0, got {event.count}"
    if event.count > MAX_EVENT_COUNT:
        return f"count must be at most {MAX_EVENT_COUNT:,}, got {event.count:,} (split it)"
    if len(event.labels) > MAX_LABELS:
        return f"{len(event.labels)} labels: at most {MAX_LABELS}"
    for name, value in event.labels.items():
        if len(name) > MAX_LABEL_NAME_LENGTH or not _is_label_name(name):
            return f"invalid label name {name[:MAX_LABEL_NAME_LENGTH]!r}"
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            return f"label {name!r}: a value is at most {MAX_LABEL_VALUE_LENGTH} characters"
        if _CONTROL.search(value) is not None:
            # No guard can name it (the grammar's only escapes are \" and \\), and it would
            # forge lines wherever a series is shown.
            return f"label {name!r}: a value has a control character"
    return None


def _is_label_name(name: str) -> bool:
    return _LABEL_NAME.fullmatch(name) is not None


class Totals(msgspec.Struct):
    """What one flag's cohort reported in one minute (or a sum of minutes). ``events`` is
    keyed by :func:`series_key`."""

    requests: int = 0
    failures: int = 0
    latency_us_sum: int = 0
    latency_buckets: list[int] = msgspec.field(default_factory=lambda: [0] * BUCKETS)
    events: dict[str, int] = msgspec.field(default_factory=dict)

    def add_item(self, item: OutcomeItem) -> None:
        self.requests = _plus(self.requests, item.requests)
        self.failures = _plus(self.failures, item.failures)
        self.latency_us_sum = _plus(self.latency_us_sum, round(item.latency_ms_sum * 1000))
        buckets = self.latency_buckets
        for index, count in enumerate(item.latency_buckets):
            buckets[index] = _plus(buckets[index], count)

    def add_event(self, series: str, count: int) -> bool:
        """Count ``count`` events of ``series``; False (nothing counted) if it would be a
        series beyond :data:`MAX_EVENT_SERIES`."""
        if series not in self.events and len(self.events) >= MAX_EVENT_SERIES:
            return False
        self.events[series] = _plus(self.events.get(series, 0), count)
        return True

    def merge(self, other: Totals) -> None:
        """Add ``other`` into these totals (exact: integers only, up to :data:`MAX_TOTAL`)."""
        self.requests = _plus(self.requests, other.requests)
        self.failures = _plus(self.failures, other.failures)
        self.latency_us_sum = _plus(self.latency_us_sum, other.latency_us_sum)
        for index, count in enumerate(other.latency_buckets):
            self.latency_buckets[index] = _plus(self.latency_buckets[index], count)
        for series, count in other.events.items():
            self.events[series] = _plus(self.events.get(series, 0), count)


def quantile_ms(buckets: Iterable[int], q: float) -> float | None:
    """The q-quantile (0 < q < 1) of a histogram in ms, by linear interpolation inside the
    bucket holding rank ``q * n`` (see the module's docstring); None with no request."""
    counts = list(buckets)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    lower = 0.0
    for bound, count in zip(LATENCY_BOUNDS_MS, counts, strict=True):
        if count and below + count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / count
        below += count
        lower = bound if not math.isinf(bound) else lower
    return lower


class CohortReading(msgspec.Struct, frozen=True):
    """One cohort over one window: the figures every metric is computed from."""

    requests: int
    failures: int
    latency_us_sum: int
    latency_buckets: tuple[int, ...]
    events: Mapping[str, int]

    @classmethod
    def of(cls, totals: Totals) -> CohortReading:
        return cls(
            totals.requests,
            totals.failures,
            totals.latency_us_sum,
            tuple(totals.latency_buckets),
            dict(totals.events),
        )

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_us_sum / 1000 / self.requests if self.requests else None

    def quantile_ms(self, q: float) -> float | None:
        return quantile_ms(self.latency_buckets, q)

    def slower_than(self, threshold_ms: float) -> int:
        """Requests certainly slower than ``threshold_ms``: those in buckets whose lower
        bound is at least the threshold."""
        lower = 0.0
        slow = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, self.latency_buckets, strict=True):
            if lower >= threshold_ms:
                slow += count
            lower = bound
        return slow

    def count(self, event: str, labels: Iterable[tuple[str, str]] = ()) -> int:
        """Events named ``event`` whose labels include every pair of ``labels``."""
        wanted = set(labels)
        total = 0
        for series, count in self.events.items():
            name, pairs = _series_decoder.decode(series)
            if name == event and wanted.issubset(pairs):
                total += count
        return total


#: A cohort that reported nothing.
EMPTY_READING: Final = CohortReading(0, 0, 0, (0,) * BUCKETS, {})


class WindowReading(msgspec.Struct, frozen=True):
    """One flag's cohorts over ``[start, now]``; ``seconds`` is its length."""

    start: float
    now: float
    treatment: CohortReading
    control: CohortReading

    @property
    def seconds(self) -> float:
        return self.now - self.start

    def cohort(self, cohort: Cohort) -> CohortReading:
        return self.treatment if cohort is Cohort.TREATMENT else self.control


class OutcomeAggregate:
    """Outcome totals per flag, cohort and minute, in memory. :meth:`add_batch` validates
    and counts a batch; :meth:`read` gives a window's reading. Minutes older than
    ``keep_seconds`` before the newest ``now`` seen are dropped by :meth:`prune`."""

    def __init__(self) -> None:
        #: flag -> minute -> cohort -> totals
        self.minutes: dict[str, dict[int, dict[Cohort, Totals]]] = {}

    def totals(self, key: str, minute: int, cohort: Cohort) -> Totals:
        by_cohort = self.minutes.setdefault(key, {}).setdefault(minute, {})
        found = by_cohort.get(cohort)
        if found is None:
            found = by_cohort[cohort] = Totals()
        return found

    def add_batch(
        self,
        batch: OutcomeBatch,
        now: float,
        variants_of: Callable[[str], Collection[str] | None] | None = None,
    ) -> list[OutcomeRejection]:
        """Count what :func:`accept_batch` accepts, in :func:`period_minute`; the
        refusals, each with why."""
        items, events, rejected = accept_batch(batch, now, variants_of)
        minute = period_minute(batch.period, now)
        for item in items:
            self.totals(item.key, minute, item.cohort).add_item(item)
        for index, event in events:
            series = series_key(event.name, event.labels)
            if not self.totals(event.key, minute, event.cohort).add_event(series, event.count):
                rejected.append(
                    OutcomeRejection(
                        "event", index, event.key, f"more than {MAX_EVENT_SERIES} event series"
                    )
                )
        return rejected

    def read(self, key: str, start: float, now: float) -> WindowReading:
        """Both cohorts of ``key`` over the minutes from ``minute_of(start)`` to ``now``'s."""
        first, last = minute_of(start), minute_of(now)
        sums = {Cohort.TREATMENT: Totals(), Cohort.CONTROL: Totals()}
        by_minute = self.minutes.get(key, {})
        for minute in range(first, last + 60, 60):  # the window's minutes, not all kept
            for cohort, totals in by_minute.get(minute, {}).items():
                sums[cohort].merge(totals)
        return WindowReading(
            float(first),
            now,
            CohortReading.of(sums[Cohort.TREATMENT]),
            CohortReading.of(sums[Cohort.CONTROL]),
        )

    def read_window(self, key: str, window: int, now: float) -> WindowReading:
        """A guard's window of ``window`` seconds at ``now`` (see :func:`window_start`)."""
        return self.read(key, window_start(window, now), now)

    def prune(self, now: float, keep_seconds: int) -> None:
        oldest = minute_of(now) - keep_seconds
        for key in list(self.minutes):
            by_minute = self.minutes[key]
            for minute in [m for m in by_minute if m < oldest]:
                del by_minute[minute]
            if not by_minute:
                del self.minutes[key]


def accept_batch(
    batch: OutcomeBatch,
    now: float,
    variants_of: Callable[[str], Collection[str] | None] | None = None,
) -> tuple[list[OutcomeItem], list[tuple[int, OutcomeEvent]], list[OutcomeRejection]]:
    """Split a batch into what may be counted and what is refused, each refusal with why.
    A batch-wide problem (:func:`batch_problem`) raises :class:`OutcomeError`: nothing is
    counted. A bad period refuses every item and event. ``variants_of(key)`` names a flag's
    variants (None: no such flag); without it flags are not checked."""
    problem = batch_problem(batch)
    if problem is not None:
        raise OutcomeError(problem)
    stale = period_problem(batch.period, now)
    items: list[OutcomeItem] = []
    events: list[tuple[int, OutcomeEvent]] = []
    rejected: list[OutcomeRejection] = []

    def flag_problem(key: str, variant: str) -> str | None:
        if variants_of is None:
            return None
        variants = variants_of(key)
        if variants is None:
            return f"unknown flag {key!r}"
        if variant not in variants:
            return f"flag {key!r} has no variant {variant!r}"
        return None

    for index, item in enumerate(batch.items):
        why = stale or item_problem(item) or flag_problem(item.key, item.variant)
        if why is None:
            items.append(item)
        else:
            rejected.append(OutcomeRejection("item", index, item.key, why))
    for index, event in enumerate(batch.events):
        why = stale or event_problem(event) or flag_problem(event.key, event.variant)
        if why is None:
            events.append((index, event))
        else:
            rejected.append(OutcomeRejection("event", index, event.key, why))
    return items, events, rejected
