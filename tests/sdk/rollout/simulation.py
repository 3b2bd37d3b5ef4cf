"""Simulated plans judged through :func:`flagport.rollout.decision.decide` itself
(docs/adr/0017-guarded-rollout-decisions.md): traffic and failures are drawn for every run
and second at once (numpy, a fixed seed), then every second of every run is one call of
``decide`` on the readings the driver would gather at that moment (the partial minute plus
the whole minutes of the guard's window, and the data since the hold started).
:func:`readings_at` builds them from cumulative sums; ``test_decision.py`` checks it gives
what ``gather_readings`` gives from a real :class:`OutcomeAggregate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flagport.rollout.decision import DecisionKind, Readings, decide, guard_checks
from flagport.rollout.outcomes import BUCKETS, CohortReading, WindowReading, window_start
from flagport.rollout.plan import OnBreach, Plan, PlanSpec, new_plan, start

#: Where simulated time starts: a minute boundary (the hold starts on it).
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
GUARD = "error_rate > 5% over 5m"
#: Requests per second in each cohort at a 10 % step of 20 requests per second.
TREATMENT_PER_SECOND = 2
CONTROL_PER_SECOND = 18


def running_plan(rule: str = GUARD, *, min_sample: int = 200) -> Plan:
    spec = PlanSpec(
        key="ui-improvements",
        steps=(10.0, 25.0, 50.0, 100.0),
        hold=24 * 3600,  # never elapses here: only the guards act
        max_hold=24 * 3600,
        guards=(rule,),
        on_breach=OnBreach.ROLLBACK,
        min_sample=min_sample,
        vs_control=True,
    )
    return start(new_plan(spec, T0 - 60), T0)


def _cohort(requests: int, failures: int) -> CohortReading:
    buckets = (requests,) + (0,) * (BUCKETS - 1)
    return CohortReading(requests, failures, requests * 50_000, buckets, {})


@dataclass
class Traffic:
    """Per run and second: requests and failures of each cohort, cumulated (index s holds
    the totals of seconds 0..s-1, so index 0 is zero)."""

    treatment_requests: np.ndarray
    treatment_failures: np.ndarray
    control_requests: np.ndarray
    control_failures: np.ndarray


def draw_traffic(
    rng: np.random.Generator, runs: int, seconds: int, treatment_rate: float, control_rate: float
) -> Traffic:
    def cumulated(per_second: np.ndarray) -> np.ndarray:
        out = np.zeros((runs, seconds + 1), dtype=np.int64)
        np.cumsum(per_second, axis=1, out=out[:, 1:])
        return out

    t_requests = np.full((runs, seconds), TREATMENT_PER_SECOND, dtype=np.int64)
    c_requests = np.full((runs, seconds), CONTROL_PER_SECOND, dtype=np.int64)
    return Traffic(
        cumulated(t_requests),
        cumulated(rng.binomial(t_requests, treatment_rate)),
        cumulated(c_requests),
        cumulated(rng.binomial(c_requests, control_rate)),
    )


def readings_at(traffic: Traffic, run: int, elapsed: int, window: int) -> Readings:
    """The readings at ``T0 + elapsed`` (``elapsed`` whole seconds have been reported)."""
    return _readings(_run_series(traffic, run), elapsed, window)


_Series = tuple[list[int], list[int], list[int], list[int]]


def _run_series(traffic: Traffic, run: int) -> _Series:
    return (
        traffic.treatment_requests[run].tolist(),
        traffic.treatment_failures[run].tolist(),
        traffic.control_requests[run].tolist(),
        traffic.control_failures[run].tolist(),
    )


def _readings(series: _Series, elapsed: int, window: int) -> Readings:
    tr, tf, cr, cf = series
    now = T0 + elapsed
    start = window_start(window, now)
    first = max(0, int(start - T0))
    in_window = WindowReading(
        float(start),
        now,
        _cohort(tr[elapsed] - tr[first], tf[elapsed] - tf[first]),
        _cohort(cr[elapsed] - cr[first], cf[elapsed] - cf[first]),
    )
    since_hold = WindowReading(
        T0, now, _cohort(tr[elapsed], tf[elapsed]), _cohort(cr[elapsed], cf[elapsed])
    )
    return Readings(windows={window: in_window}, since_hold=since_hold)


@dataclass
class Outcome:
    breached: int
    runs: int
    #: Treatment requests seen when each breaching run breached.
    treatment_requests_at_breach: list[int]
    decisions: int


def simulate(
    runs: int,
    seconds: int,
    treatment_rate: float,
    control_rate: float,
    *,
    seed: int,
    stop_after_treatment_requests: int | None = None,
) -> Outcome:
    """Each run judged every second (from the first second) until it breaches or the time
    (or the treatment requests) run out."""
    rng = np.random.default_rng(seed)
    traffic = draw_traffic(rng, runs, seconds, treatment_rate, control_rate)
    plan = running_plan()
    checks = guard_checks(plan)
    window = checks[0].guard.window
    assert window is not None
    breached, at_breach, decisions = 0, [], 0
    for run in range(runs):
        series = _run_series(traffic, run)
        for elapsed in range(1, seconds + 1):
            treatment_seen = series[0][elapsed]
            if (
                stop_after_treatment_requests is not None
                and treatment_seen > stop_after_treatment_requests
            ):
                break
            decision = decide(plan, _readings(series, elapsed, window), T0 + elapsed, checks)
            decisions += 1
            if decision.kind is DecisionKind.ROLLBACK:
                breached += 1
                at_breach.append(treatment_seen)
                break
            assert decision.kind is DecisionKind.HOLD, decision
    return Outcome(breached, runs, at_breach, decisions)
