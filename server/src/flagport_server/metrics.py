"""Prometheus metrics, correct with several worker processes.

Evaluation counts are kept by :class:`~flagport_server.stats.EvaluationCounter` on the
request path (a dict lookup and an increment, no lock, no file I/O); the stats pump
(:class:`~flagport_server.stats.StatsPump`) drains it every half second and before each
scrape and hands what it drained to :meth:`Metrics.add_drained`. With several workers
``flags serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, and
prometheus_client's multiprocess collector adds up their files.
"""

from __future__ import annotations

import datetime
import os
from bisect import bisect_left
from collections.abc import Awaitable, Mapping, Sequence
from time import perf_counter

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from flagport.engine import CompiledSnapshot, SnapshotDocument
from flagport.rollout.plan import Plan
from flagport_server.stats.counter import Drained

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "StatusNote", "route_label"]

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _add_to_histogram(histogram: Histogram, tally: list[float]) -> None:
    """Add a local tally (counts per bucket, then the sum) to a prometheus_client histogram
    child. prometheus_client has no bulk ``observe``; its children keep one value per
    bucket (non-cumulative, +Inf last) and a sum, which is what ``observe`` increments."""
    buckets = histogram._buckets
    for index, count in enumerate(tally[:-1]):
        if count:
            buckets[index].inc(count)
    histogram._sum.inc(tally[-1])


def _last_change(document: SnapshotDocument) -> float:
    stamps = [f.updated_at for f in document.flags.values() if f.updated_at]
    stamps += [g.updated_at for g in document.segments.values() if g.updated_at]
    if not stamps:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(max(stamps)).timestamp()
    except ValueError:
        return 0.0


_HTTP: str = ScopeType.HTTP


class StatusNote:
    """``send``, noting the answer's status on the way. A plain call that hands back the
    inner ``send``'s awaitable: no coroutine of its own per message (two per request)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        return self.send(message)


def route_label(path: str) -> str:
    """A bounded route label (never the flag key: callers choose those)."""
    if path.startswith("/ofrep/v1/evaluate/flags/"):
        return "ofrep_single"
    if path == "/ofrep/v1/evaluate/flags":
        return "ofrep_bulk"
    if path.startswith("/v1/evaluate/"):
        return "evaluate_get"
    if path.startswith("/v1/"):
        return "feeds"
    if path.startswith("/admin/"):
        return "admin"
    return "operations"


_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class Metrics:
    """One per process. In tests several apps may live in one process: each gets its own
    registry unless multiprocess mode is on."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if _MULTIPROCESS else self.registry
        self.evaluations = Counter(
            "flagport_evaluations",
            "Flag evaluations served, by flag, variant and reason (ERROR carries no variant).",
            ["flag", "variant", "reason"],
            registry=registry,
        )
        self.requests = Histogram(
            "flagport_request_duration_seconds",
            "Request latency by route and status class.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_version = Gauge(
            "flagport_snapshot_version",
            "Snapshot version applied by each worker.",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.rollout_step = Gauge(
            "flagport_rollout_step",
            "The step a rollout plan is at (1-based; 0: no step exposed).",
            ["flag"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.rollout_guard = Gauge(
            "flagport_rollout_guard_value",
            "A rollout guard's last value in its window (treatment cohort; site-wide for "
            "health and promql), by plan flag and the guard's index in the plan.",
            ["flag", "guard"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.rollout_breaches = Counter(
            "flagport_rollout_breaches",
            "Automatic actions a rollout driver took on a guard's breach, by plan flag.",
            ["flag"],
            registry=registry,
        )
        self.rollout_driver_missing = Gauge(
            "flagport_rollout_driver_missing",
            "1 while a running rollout plan has had no driver for 10 s (as each worker sees).",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "flagport_webhook_attempts",
            "Webhook delivery attempts by result: delivered (2xx), failed (retried later), "
            "dead (failed past the retry window: a dead letter).",
            ["result"],
            registry=registry,
        )
        self._breaches_seen: dict[str, int] = {}
        self.apply_lag = Gauge(
            "flagport_snapshot_apply_lag_seconds",
            "Seconds between a change's commit and this worker applying it (last change).",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.snapshot_age = Gauge(
            "flagport_snapshot_age_seconds",
            "Seconds since this worker applied its snapshot.",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.store_up = Gauge(
            "flagport_store_up",
            "1 when this worker reached the store at its last check, else 0.",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.store_regressed = Gauge(
            "flagport_store_regressed",
            "1 while this worker refuses a store that went backwards (wiped, flushed, restored "
            "from an old backup) and keeps serving its last snapshot, else 0.",
            ["pid"],
            multiprocess_mode="all",
            registry=registry,
        )
        self.exposures = Counter(
            "flagport_exposures",
            "Evaluations reported by in-process clients (POST /v1/exposures), by flag and variant.",
            ["flag", "variant"],
            registry=registry,
        )
        self.outcome_requests = Counter(
            "flagport_outcome_requests",
            "Requests reported per rollout cohort (POST /v1/outcomes, counted), by flag and "
            "cohort: flat while a plan runs means its outcomes stopped arriving.",
            ["flag", "cohort"],
            registry=registry,
        )
        self.unique_units = Gauge(
            "flagport_unique_units",
            "Distinct units (bucket_by values) served each variant over the last 24 hours, "
            "from the store (refreshed at a low rate; every worker and instance counted).",
            ["flag", "variant"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        #: (route, status class) -> [count per bucket..., sum of seconds]
        self._latencies: dict[tuple[str, str], list[float]] = {}
        self._pid = str(os.getpid())
        #: When the last flag or segment change applied was committed (0: none yet).
        self._last_change = 0.0

    def record_apply(self, snapshot: CompiledSnapshot, applied_at: float) -> None:
        """A snapshot was applied (``Runtime.on_apply``): its version, and how long this
        worker took to apply its newest change."""
        pid = str(os.getpid())
        self.snapshot_version.labels(pid).set(snapshot.version)
        # The newest updated_at is when the last flag/segment change was committed (by the
        # committing host's clock); its distance to now is how long this worker took.
        changed = _last_change(snapshot.document)
        if changed > self._last_change:
            if self._last_change:
                self.apply_lag.labels(pid).set(max(0.0, applied_at - changed))
            self._last_change = changed

    # -- off the request path -----------------------------------------------------------

    def add_drained(self, drained: Drained, now: float) -> None:
        """Add the evaluations the stats pump drained to ``flagport_evaluations``."""
        evaluations = self.evaluations
        for evaluations_of in drained.counted:
            result = evaluations_of.result
            labels = evaluations.labels(result.key, result.variant or "", result.reason.value)
            labels.inc(evaluations_of.evaluations)

    def flush_latencies(self) -> None:
        """Add the request latencies tallied since the last call to the histogram."""
        latencies, self._latencies = self._latencies, {}
        for (route, status), tally in latencies.items():
            _add_to_histogram(self.requests.labels(route, status), tally)

    def latency_middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware timing each request. It only bumps a bucket in a local tally;
        :meth:`flush_latencies` adds the tallies to the histogram, a few increments per second (one
        ``observe`` per request there blocked the event loop for tens of milliseconds at
        14k requests per second, which showed as p99 latency)."""
        note_latency = self.note_latency

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != _HTTP or scope["path"] == "/v1/stream":
                await app(scope, receive, send)
                return
            started = perf_counter()
            noted = StatusNote(send)
            try:
                await app(scope, receive, noted)
            finally:
                note_latency(route_label(scope["path"]), noted.status, perf_counter() - started)

        return timed

    def note_latency(self, route: str, status: int, seconds: float) -> None:
        """Count one request of ``route`` (a :func:`route_label`) answered with ``status``
        after ``seconds`` in the local tally (the evaluation dispatch times its own requests
        with it, :meth:`latency_middleware` every other)."""
        label = (route, _STATUS_CLASS.get(status // 100, "5xx"))
        # The dict is swapped on flush: always read it through self.
        tally = self._latencies.get(label)
        if tally is None:
            tally = self._latencies[label] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        tally[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        tally[-1] += seconds

    def observe_worker(
        self, version: int, age: float, store_up: bool, regressed: bool = False
    ) -> None:
        self.snapshot_version.labels(self._pid).set(version)
        self.snapshot_age.labels(self._pid).set(age)
        self.store_up.labels(self._pid).set(1 if store_up else 0)
        self.store_regressed.labels(self._pid).set(1 if regressed else 0)

    def observe_rollouts(
        self,
        plans: Mapping[str, Plan],
        guard_values: Mapping[str, Sequence[float | None]],
        breaches: Mapping[str, int],
        driver_missing: bool,
    ) -> None:
        """The rollout gauges: each plan's step (1-based; 0: no step exposed), each guard's
        last value on the driving worker (labelled by its index in the plan), the automatic
        actions on breaches, and whether a running plan has had no driver for 10 s."""
        for key, plan in plans.items():
            self.rollout_step.labels(key).set(plan.step + 1)
        for key, values in guard_values.items():
            for index, value in enumerate(values):
                if value is not None:
                    self.rollout_guard.labels(key, str(index)).set(value)
        for key, count in breaches.items():
            added = count - self._breaches_seen.get(key, 0)
            if added > 0:
                self.rollout_breaches.labels(key).inc(added)
                self._breaches_seen[key] = count
        self.rollout_driver_missing.labels(self._pid).set(1 if driver_missing else 0)

    def render(self) -> bytes:
        """The exposition (the caller drains the stats pump first: :meth:`StatsPump.drain`)."""
        self.flush_latencies()
        if _MULTIPROCESS:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
