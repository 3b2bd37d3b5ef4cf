"""Outcome signals from Python (docs/spec.md section 13, "Outcome signals" and "Cohort
metadata"): which plan flags a request read, what became of the request, and the background
reporter that posts it all to ``POST /v1/outcomes``.

Three parts, one home each:

- **Reads.** Every evaluation a client makes passes the answer's metadata to
  :func:`note_read` (``RemoteCore`` for :class:`~flagport.Client` and
  :class:`~flagport.AsyncClient`, ``LocalClient.evaluate``/``is_enabled`` in process). An
  answer of a flag under a running plan, or gated by one, for a unit in one of the plan's
  cohorts carries ``rolloutFlag``, ``rolloutCohort`` and ``rolloutVariant``; the read is
  added to the current request's set (:data:`PLAN_READS`, a :mod:`contextvars` variable
  the middleware sets per request; :func:`open_reads` for other scopes, such as a job).
  Outside one, nothing is noted.
- **Aggregation.** :class:`OutcomeRecorder` adds a finished request (status and duration)
  to every (plan flag, variant, cohort) it read, and ``report(event, **labels)`` calls to
  the same. The request path only appends to a deque (atomic, no lock); the reporter's
  thread adds up. Counts are integers and durations integer microseconds, so what is sent
  is exactly the sum of the requests.
- **Delivery.** :class:`OutcomeReporter` takes the aggregate every second on a daemon
  thread, splits it within the batch bounds (:mod:`flagport.rollout.limits`) and posts it.
  A post that fails (unreachable, 5xx, 429) is retried with the next ones while its period
  is fresh (ended at most 120 s ago, less a margin for the trip), then dropped with a
  warning. Nothing here raises into the application, and what is held is bounded.

Outside a request, ``report()`` counts nothing (and returns 0): an event is attributed only
to the plan flags read while serving the request it happened in, never to a cohort read
earlier, possibly for another unit.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any, Final, NamedTuple

import httpx
import msgspec

from flagport._exceptions import ClientError
from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH
from flagport.rollout.guards import EVENT_NAME_PATTERN
from flagport.rollout.limits import (
    LATENCY_BOUNDS_MS,
    MAX_EVENT_COUNT,
    MAX_EVENT_NAME_LENGTH,
    MAX_OUTCOME_BODY,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_ITEMS,
    MAX_PERIOD_AGE_SECONDS,
    MAX_PERIOD_SECONDS,
    MAX_REQUESTS,
    MAX_VARIANT_LENGTH,
)
from flagport.rollout.outcomes import (
    BUCKETS,
    MAX_EVENT_SERIES,
    Cohort,
    OutcomeBatch,
    OutcomeEvent,
    OutcomeItem,
    bucket_of,
    event_problem,
)

__all__ = [
    "COHORT_KEY",
    "FLAG_KEY",
    "OUTCOMES_PATH",
    "PLAN_READS",
    "REPORT_INTERVAL",
    "VARIANT_KEY",
    "OutcomeRecorder",
    "OutcomeReporter",
    "Read",
    "ReportsOutcomes",
    "Taken",
    "close_reads",
    "cohort_read",
    "current_reads",
    "encode_batches",
    "note_read",
    "open_reads",
]

logger = logging.getLogger("flagport")

#: The answer metadata naming a plan's cohort (flat entries: OFREP metadata values are
#: strings, numbers or booleans).
FLAG_KEY: Final = "rolloutFlag"
COHORT_KEY: Final = "rolloutCohort"
VARIANT_KEY: Final = "rolloutVariant"
OUTCOMES_PATH: Final = "/v1/outcomes"
#: Seconds between two batches.
REPORT_INTERVAL: Final = 1.0
#: A batch is not posted once its period ended this long ago: it would arrive stale (the
#: server refuses periods that ended more than 120 s before its ``now``).
_FRESH_SECONDS: Final = MAX_PERIOD_AGE_SECONDS - 10
#: Distinct plan reads one request keeps (a plan per ancestor chain: a handful at most).
_MAX_READS_PER_REQUEST: Final = 64
#: Requests (and events) waiting for the next take: about a second's worth of a busy process.
_HELD_REQUESTS_LIMIT: Final = 100_000
#: Distinct (flag, variant, cohort) items and event series per period.
_HELD_ITEMS_LIMIT: Final = 10_000
_HELD_SERIES_LIMIT: Final = MAX_EVENT_SERIES
#: Bodies waiting to be (re)posted: more than a fresh period's worth means the server is away.
_MAX_PENDING: Final = 1_000
#: A request longer than a day counts as a day (the server's bound per request).
_MAX_REQUEST_US: Final = 86_400_000_000
_POST_TIMEOUT: Final = httpx.Timeout(5.0, connect=1.0)
_COHORTS: Final = frozenset(cohort.value for cohort in Cohort)
_KEY: Final = re.compile(KEY_PATTERN)
_EVENT_NAME: Final = re.compile(EVENT_NAME_PATTERN)


class Read(NamedTuple):
    """One plan's cohort as an answer named it: the plan flag, the variant the plan flag
    served the unit, and the cohort (a :class:`Cohort`'s value, as the answer gives it)."""

    flag: str
    variant: str
    cohort: str


def cohort_read(metadata: Mapping[str, Any]) -> Read | None:
    """The plan cohort an answer's metadata names, or None (no plan, neither cohort, or
    entries that are not the contract's: wrong types, bad key, unknown cohort)."""
    flag = metadata.get(FLAG_KEY)
    if flag is None:
        return None
    variant = metadata.get(VARIANT_KEY)
    cohort = metadata.get(COHORT_KEY)
    if (
        type(cohort) is not str
        or cohort not in _COHORTS
        or type(flag) is not str
        or type(variant) is not str
        or not 0 < len(variant) <= MAX_VARIANT_LENGTH
        or len(flag) > MAX_KEY_LENGTH
        or _KEY.match(flag) is None
    ):
        return None
    return Read(flag, variant, cohort)


# -- reads of the current request ---------------------------------------------------------

#: The plan reads of the request being served (None: not in a request). The middleware sets
#: and resets it directly (the request path); others use :func:`open_reads`.
PLAN_READS: ContextVar[set[Read] | None] = ContextVar("flagport_plan_reads", default=None)
#: Validated reads by the metadata's identity: answers are shared objects (the engine's
#: results, a remote client's remembered answers), so most reads skip the validation.
_known: dict[int, tuple[Mapping[str, Any], Read | None]] = {}


def note_read(metadata: Mapping[str, Any]) -> None:
    """Note an evaluation's answer metadata: a plan cohort read while serving a request is
    added to its set. The one hook of every client's evaluation path."""
    if FLAG_KEY not in metadata:
        return
    reads = PLAN_READS.get()
    if reads is None:
        return
    known = _known.get(id(metadata))
    if known is not None and known[0] is metadata:
        read = known[1]
    else:
        read = cohort_read(metadata)
        if len(_known) >= 1_000:
            _known.clear()
        _known[id(metadata)] = (metadata, read)
    if read is not None and len(reads) < _MAX_READS_PER_REQUEST:
        reads.add(read)


def open_reads() -> tuple[set[Read], Token[set[Read] | None]]:
    """Start collecting the plan reads of a request (in this context and those copied from
    it): the set, and the token :func:`close_reads` takes."""
    reads: set[Read] = set()
    return reads, PLAN_READS.set(reads)


def close_reads(token: Token[set[Read] | None]) -> None:
    """Stop collecting (the context is as before :func:`open_reads`)."""
    try:
        PLAN_READS.reset(token)
    except ValueError:  # closed from another context than it was opened in
        PLAN_READS.set(None)


def current_reads() -> frozenset[Read]:
    """The plan reads of the request being served so far (empty outside a request)."""
    reads = PLAN_READS.get()
    return frozenset(reads) if reads else frozenset()


# -- aggregation ----------------------------------------------------------------------------


#: Per (flag, variant, cohort): requests, failures, latency in microseconds, then the
#: histogram's counts (a list: the cheapest thing to add to).
_REQUESTS, _FAILURES, _LATENCY, _FIRST_BUCKET = 0, 1, 2, 3
#: The bucket of a duration of ``ms`` ms rounded up, for ``ms`` up to just past the last
#: finite bound, from :func:`bucket_of` itself. Every finite bound is a whole number of ms, so
#: ``d <= bound`` exactly when ``ceil(d) <= bound``: the rounded-up duration falls in the same
#: bucket as the duration.
_LAST_FINITE_MS: Final = int(LATENCY_BOUNDS_MS[-2])
assert all(bound == int(bound) for bound in LATENCY_BOUNDS_MS[:-1])
_BUCKET_BY_MS: Final = tuple(bucket_of(ms) for ms in range(_LAST_FINITE_MS + 2))


_Series = tuple[Read, str, tuple[tuple[str, str], ...]]


class Taken(NamedTuple):
    """What one take hands over: the period and its items and events."""

    period: tuple[float, float]
    items: list[OutcomeItem]
    events: list[OutcomeEvent]

    @property
    def requests(self) -> int:
        return sum(item.requests for item in self.items)


class OutcomeRecorder:
    """Requests and events per (plan flag, variant, cohort) since the last :meth:`take`.
    Thread-safe, and cheap where it is called: the request path appends one tuple to a
    deque (atomic, no lock); :meth:`take`, on the reporter's thread, adds them up.
    ``clock`` gives seconds since the epoch (the periods' times)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        #: (reads, failed, seconds) per request; (reads, name, label pairs) per event.
        self._requests: deque[tuple[tuple[Read, ...], bool, float]] = deque()
        self._events: deque[tuple[tuple[Read, ...], str, tuple[tuple[str, str], ...]]] = deque()
        self._take_lock = threading.Lock()
        self._since: float = clock()
        #: Requests and events not counted because a bound was reached (since the start).
        self.dropped = 0

    def add_request(self, reads: Iterable[Read], failed: bool, seconds: float) -> None:
        """One finished request that read ``reads``: failed (status >= 500 or an exception
        escaping the app) or not, and how long it took."""
        queue = self._requests
        if len(queue) < _HELD_REQUESTS_LIMIT:
            queue.append((tuple(reads), failed, seconds))
        else:
            self.dropped += 1

    def add_event(self, reads: Iterable[Read], name: str, labels: Mapping[str, str]) -> int:
        """One ``report(name, **labels)`` for each of ``reads``; how many were noted."""
        reads = tuple(reads)
        queue = self._events
        if len(queue) >= _HELD_REQUESTS_LIMIT:
            self.dropped += 1
            return 0
        queue.append((reads, name, tuple(sorted(labels.items()))))
        return len(reads)

    def restart_period(self) -> None:
        """The next period starts now (nothing was counted since the last take)."""
        self._since = self._clock()

    def take(self) -> Taken | None:
        """Everything counted since the last take (None if nothing was), as wire items; the
        period runs from the last take to now, at most 120 s."""
        with self._take_lock:
            now = self._clock()
            end = max(now, self._since)
            start = max(self._since, end - MAX_PERIOD_SECONDS)
            self._since = end
            items = self._add_requests()
            events = self._add_events()
        if not items and not events:
            return None
        return Taken(
            (start, end),
            [
                OutcomeItem(
                    key=read.flag,
                    variant=read.variant,
                    cohort=Cohort(read.cohort),
                    requests=totals[_REQUESTS],
                    failures=totals[_FAILURES],
                    latency_ms_sum=totals[_LATENCY] / 1000,
                    latency_buckets=totals[_FIRST_BUCKET:],
                )
                for read, totals in items.items()
            ],
            [
                OutcomeEvent(
                    key=read.flag,
                    variant=read.variant,
                    cohort=Cohort(read.cohort),
                    name=name,
                    labels=dict(pairs),
                    count=count,
                )
                for (read, name, pairs), count in events.items()
            ],
        )

    def _add_requests(self) -> dict[Read, list[int]]:
        items: dict[Read, list[int]] = {}
        queue = self._requests
        for _ in range(len(queue)):  # what is there now; later ones wait for the next take
            reads, failed, seconds = queue.popleft()
            micros = min(max(round(seconds * 1_000_000), 0), _MAX_REQUEST_US)
            slot = _FIRST_BUCKET + _BUCKET_BY_MS[min(-(-micros // 1000), _LAST_FINITE_MS + 1)]
            for read in reads:
                totals = items.get(read)
                if totals is None:
                    if len(items) >= _HELD_ITEMS_LIMIT:
                        self.dropped += 1
                        continue
                    totals = items[read] = [0] * (_FIRST_BUCKET + BUCKETS)
                totals[_REQUESTS] += 1
                totals[_FAILURES] += failed
                totals[_LATENCY] += micros
                totals[slot] += 1
        return items

    def _add_events(self) -> dict[_Series, int]:
        events: dict[_Series, int] = {}
        queue = self._events
        for _ in range(len(queue)):
            reads, name, pairs = queue.popleft()
            for read in reads:
                series = (read, name, pairs)
                count = events.get(series)
                if count is None and len(events) >= _HELD_SERIES_LIMIT:
                    self.dropped += 1
                    continue
                events[series] = (count or 0) + 1
        return events


def event_input_problem(name: str, labels: Mapping[str, Any]) -> str | None:
    """Why ``report(name, **labels)`` is refused: a name or labels the wire shape does not
    take (docs/spec.md section 13: names ``[A-Za-z_][A-Za-z0-9_.:-]*`` of at most 64
    characters; at most 8 labels, string values of at most 256 characters)."""
    if (
        type(name) is not str
        or len(name) > MAX_EVENT_NAME_LENGTH
        or not _EVENT_NAME.fullmatch(name)
    ):
        return (
            f"invalid event name {str(name)[:MAX_EVENT_NAME_LENGTH]!r}: "
            f"{EVENT_NAME_PATTERN}, at most {MAX_EVENT_NAME_LENGTH} characters"
        )
    for label, value in labels.items():
        if type(value) is not str:
            return f"label {label!r}: a value is a string, got {type(value).__name__}"
    return event_problem(
        OutcomeEvent(
            key="x", variant="x", cohort=Cohort.TREATMENT, name=name, labels=dict(labels), count=1
        )
    )


# -- splitting within the batch bounds ------------------------------------------------------

_encode = msgspec.json.Encoder().encode
#: A batch's bytes besides its items and events (the period's numbers at their widest).
_ENVELOPE_BYTES: Final = len(_encode(OutcomeBatch(period=(1e300, 1e300)))) + 2


def _split_item(item: OutcomeItem) -> list[OutcomeItem]:
    """An item of more than :data:`MAX_REQUESTS` requests as several within it: buckets
    peeled off in order, failures first, the latency sum (integer microseconds, exact)
    shared in proportion."""
    if item.requests <= MAX_REQUESTS:
        return [item]
    parts: list[OutcomeItem] = []
    left = list(item.latency_buckets)
    failures = item.failures
    latency_us = round(item.latency_ms_sum * 1000)
    remaining = item.requests
    while remaining:
        buckets = [0] * BUCKETS
        room = MAX_REQUESTS
        for index, count in enumerate(left):
            taken = min(count, room)
            buckets[index] = taken
            left[index] -= taken
            room -= taken
        requests = MAX_REQUESTS - room
        part_failures = min(failures, requests)
        part_us = latency_us * requests // remaining
        parts.append(
            msgspec.structs.replace(
                item,
                requests=requests,
                failures=part_failures,
                latency_ms_sum=part_us / 1000,
                latency_buckets=buckets,
            )
        )
        failures -= part_failures
        latency_us -= part_us
        remaining -= requests
    return parts


def _split_event(event: OutcomeEvent) -> list[OutcomeEvent]:
    counts = [MAX_EVENT_COUNT] * (event.count // MAX_EVENT_COUNT)
    if event.count % MAX_EVENT_COUNT or not counts:
        counts.append(event.count % MAX_EVENT_COUNT)
    return [msgspec.structs.replace(event, count=count) for count in counts]


def encode_batches(taken: Taken) -> list[bytes]:
    """The bodies of the posts carrying ``taken``, each within the bounds of one batch: at
    most 1,000 items, 1,000 events and 1 MiB, every count within its bound."""
    items = [part for item in taken.items for part in _split_item(item)]
    events = [part for event in taken.events for part in _split_event(event)]
    bodies: list[bytes] = []
    batch_items: list[OutcomeItem] = []
    batch_events: list[OutcomeEvent] = []
    size = _ENVELOPE_BYTES

    def close() -> None:
        nonlocal batch_items, batch_events, size
        bodies.append(_encode(OutcomeBatch(taken.period, batch_items, batch_events)))
        batch_items, batch_events, size = [], [], _ENVELOPE_BYTES

    for item in items:
        cost = len(_encode(item)) + 1
        if len(batch_items) == MAX_OUTCOME_ITEMS or size + cost > MAX_OUTCOME_BODY:
            close()
        batch_items.append(item)
        size += cost
    for event in events:
        cost = len(_encode(event)) + 1
        if len(batch_events) == MAX_OUTCOME_EVENTS or size + cost > MAX_OUTCOME_BODY:
            close()
        batch_events.append(event)
        size += cost
    if batch_items or batch_events:
        close()
    return bodies


# -- delivery -------------------------------------------------------------------------------


class _Pending(NamedTuple):
    ends: float
    body: bytes
    requests: int


class OutcomeReporter:
    """Counts what a client's requests read and posts it to ``POST /v1/outcomes`` from a
    daemon thread every ``interval`` seconds (started on the first count), through the
    client's ``http`` connection pool (its base URL, token and transport). :meth:`flush`
    sends now; :meth:`close` stops the thread and flushes. Never raises into the app."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        interval: float = REPORT_INTERVAL,
        clock: Any = time.time,
        log_interval: float = 30.0,
    ) -> None:
        self._http = http
        self._interval = interval
        self._clock = clock
        self.recorder = OutcomeRecorder(clock)
        self._pending: deque[_Pending] = deque()
        self._send_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: No post before this (monotonic): set for a while after the server could not
        #: be reached, so an outage costs one attempt per few intervals.
        self._retry_at = 0.0
        self._log_interval = log_interval
        self._last_log = -1e9
        #: Requests reported (acknowledged by the server) and dropped, since the start.
        self.delivered = 0
        self.lost = 0
        # A worker forked from a process that reported (a pre-forking server) starts afresh:
        # the parent's thread does not exist in the child, and the parent's counts are the
        # parent's to send.
        forget = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := forget()) and method())

    # -- the request path ---------------------------------------------------------------

    def record_request(self, reads: Iterable[Read], failed: bool, seconds: float) -> None:
        """A finished request that read the plan cohorts ``reads`` (the middleware's end)."""
        self.recorder.add_request(reads, failed, seconds)
        if self._thread is None:
            self._start()

    def report(self, event: str, labels: Mapping[str, Any]) -> int:
        """Count ``event`` with ``labels`` for every plan cohort read in the current
        request; how many were counted (0 outside a request). A name or labels the wire
        shape does not take raise :class:`~flagport.ClientError` naming the problem."""
        problem = event_input_problem(event, labels)
        if problem is not None:
            raise ClientError(problem)
        reads = PLAN_READS.get()
        if not reads:
            return 0
        counted = self.recorder.add_event(list(reads), event, labels)
        if self._thread is None:
            self._start()
        return counted

    def _after_fork(self) -> None:
        self._thread = None
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._pending.clear()
        self.recorder = OutcomeRecorder(self._clock)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="flagport-outcomes", daemon=True)
            self._thread.start()

    # -- the background thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush(now=False)
            except Exception as error:  # never let the thread die
                self._log(f"outcomes not reported: {error!r}")

    def flush(self, *, now: bool = True) -> int:
        """Take what was counted and post every pending batch; the requests the server
        acknowledged. ``now=False`` (the thread) waits out the pause after a failed
        attempt."""
        with self._send_lock:
            taken = self.recorder.take()
            if taken is not None:
                requests = taken.requests
                for body in encode_batches(taken):
                    self._pending.append(_Pending(taken.period[1], body, requests))
                    requests = 0  # counted once, with the first body
                while len(self._pending) > _MAX_PENDING:
                    self._drop(self._pending.popleft(), "too many batches waiting")
            return self._send(now)

    def _send(self, now: bool) -> int:
        delivered = 0
        pending = self._pending
        while pending:
            first = pending[0]
            if first.ends < self._clock() - _FRESH_SECONDS:
                self._drop(pending.popleft(), "its period is stale")
                continue
            if not now and time.monotonic() < self._retry_at:
                break
            try:
                response = self._http.post(
                    OUTCOMES_PATH,
                    content=first.body,
                    headers={"Content-Type": "application/json"},
                    timeout=_POST_TIMEOUT,
                )
            except httpx.HTTPError as error:
                self._retry_at = time.monotonic() + 5 * self._interval
                self._log(f"outcomes not reported (retrying): {type(error).__name__}: {error}")
                break
            status = response.status_code
            if status < 300:
                pending.popleft()
                delivered += first.requests
                self._note_rejections(response)
                continue
            if status == 429 or status >= 500:
                self._log(f"POST {OUTCOMES_PATH} answered HTTP {status}; retrying")
                break
            # Refused as a whole (400, 401, 403, 404, 413): sending it again cannot help.
            self._drop(pending.popleft(), f"the server refused it (HTTP {status})")
        self.delivered += delivered
        return delivered

    def _note_rejections(self, response: httpx.Response) -> None:
        try:
            rejected = msgspec.json.decode(response.content).get("rejected")
        except Exception:
            return
        if rejected:
            self._log(f"POST {OUTCOMES_PATH}: the server refused part of a batch: {rejected[:3]}")

    def _drop(self, pending: _Pending, why: str) -> None:
        self.lost += pending.requests
        self._log(f"outcomes of {pending.requests} request(s) dropped: {why}")

    def _log(self, message: str) -> None:
        """A warning at most once per ``log_interval`` (an outage is one line)."""
        now = time.monotonic()
        if now - self._last_log >= self._log_interval:
            self._last_log = now
            logger.warning("flagport: %s", message)

    def close(self) -> None:
        """Stop the thread and post what is left (one attempt)."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(self._interval + 6.0)
        try:
            self.flush()
        except Exception as error:
            self._log(f"outcomes not reported: {error!r}")


_made = threading.Lock()


class ReportsOutcomes:
    """What the clients share: their :attr:`outcomes` reporter, made on first use over the
    connection pool :meth:`_outcomes_http` gives, and :meth:`report`."""

    _outcomes: OutcomeReporter | None = None

    def _outcomes_http(self) -> httpx.Client:
        raise NotImplementedError

    @property
    def outcomes(self) -> OutcomeReporter:
        """The reporter of the requests' outcomes for the plan flags they read (its thread
        starts with the first count): what :class:`~flagport.middleware.OutcomeMiddleware`
        and :meth:`report` count into."""
        reporter = self._outcomes
        if reporter is None:
            with _made:
                reporter = self._outcomes
                if reporter is None:
                    reporter = self._outcomes = OutcomeReporter(self._outcomes_http())
        return reporter

    def report(self, event: str, **labels: str) -> int:
        """Count ``event`` (with ``labels``) for every plan flag read while serving the
        current request; how many were counted, 0 outside a request (see
        :mod:`flagport.reporting`). Never does I/O. A name or labels outcome events cannot
        carry raise :class:`~flagport.ClientError`."""
        return self.outcomes.report(event, labels)

    def _close_outcomes(self) -> None:
        """Post what is left (at the client's close)."""
        if self._outcomes is not None:
            self._outcomes.close()
