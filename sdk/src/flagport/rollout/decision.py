"""The decision the driver takes after every drain (docs/spec.md, "Guarded rollouts",
Decisions; the test and its figures: docs/adr/0017-guarded-rollout-decisions.md).

:func:`decide` is pure: a plan, the readings gathered for it and ``now`` give one
:class:`Decision`. :func:`apply_decision` turns it into the plan's next record (the driver
commits that with the flag change and the audit entry, evidence included).

Order of the rules, for a running plan:

1. every guard is judged (at any hour, whatever the hold or the window): a breach takes the
   plan's ``on_breach`` action (rollback, step-back or pause) with the evidence of the
   first breaching guard, in the plan's order;
2. the hold has not elapsed: hold;
3. a guard has not enough data: extend the hold, up to ``max_hold`` from the hold's start,
   then pause;
4. outside the plan's window: hold until it opens;
5. advance to the next step, or complete after the last step's hold.

A scheduled plan starts when its start time has come and its window (if any) is open.

With ``vs_control`` a per-cohort guard breaches only when the treatment is beyond the
threshold in the window **and** the one-sided always-valid test
(:mod:`flagport.rollout.sequential`) rejects "treatment <= control" on the data since the
step's hold started (a sliding window would look at ever new data, which the test's
guarantee does not cover; the hold's data is one growing sample at one allocation). At a
step of 100 % the control is empty: the guards judge on their thresholds alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from flagport.rollout.guards import Guard, Metric, Op, parse_guard
from flagport.rollout.limits import LATENCY_BOUNDS_MS
from flagport.rollout.outcomes import (
    CohortReading,
    OutcomeAggregate,
    WindowReading,
    window_start,
)
from flagport.rollout.plan import (
    OnBreach,
    Plan,
    PlanStatus,
    advance,
    complete,
    pause,
    rollback,
    start,
    step_back,
)
from flagport.rollout.schedule import next_opening, window_open
from flagport.rollout.sequential import (
    ALPHA,
    bernoulli_difference,
    log_mixture_ratio,
    mean_difference,
    rejects,
    z_score,
)

__all__ = [
    "DRIVER",
    "CohortSample",
    "Decision",
    "DecisionKind",
    "Evidence",
    "GuardCheck",
    "Judgement",
    "Readings",
    "Verdict",
    "apply_decision",
    "decide",
    "gather_readings",
    "guard_checks",
    "judge",
    "mixing_scale",
]

#: The actor of automatic transitions.
DRIVER: Final = "driver"


class Verdict(enum.StrEnum):
    PASS = "pass"
    BREACH = "breach"
    NOT_ENOUGH_DATA = "not enough data"


class DecisionKind(enum.StrEnum):
    NONE = "none"  # nothing to do (not running, or a scheduled plan not due)
    HOLD = "hold"
    EXTEND_HOLD = "extend-hold"
    START = "start"
    ADVANCE = "advance"
    COMPLETE = "complete"
    PAUSE = "pause"  # max-hold reached without enough data
    ROLLBACK = "rollback"
    STEP_BACK = "step-back"
    BREACH_PAUSE = "breach-pause"


class CohortSample(msgspec.Struct, frozen=True):
    """One cohort's figure for a guard: its value (None without data) and sample size."""

    value: float | None
    requests: int


class Evidence(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a guard passed, breached or lacked data: the rule, its window (``[start, end]``
    in seconds since the epoch; None for health and promql), the threshold in the reading's
    unit (a fraction for %, ms, per minute, a count), each cohort's value and sample in the
    window, a site-wide value (health polls, promql), and with ``vs_control`` the test:
    its samples since the hold started, ``statistic`` (the mixture likelihood ratio,
    rejecting at ``1 / alpha``), the difference and its z-score."""

    rule: str
    window: tuple[float, float] | None = None
    threshold: float
    treatment: CohortSample | None = None
    control: CohortSample | None = None
    value: float | None = None
    test_treatment: CohortSample | None = None
    test_control: CohortSample | None = None
    statistic: float | None = None
    difference: float | None = None
    z: float | None = None
    alpha: float | None = None
    #: Why a site-wide guard has no value (a promql query: ``no data``, Prometheus's error,
    #: a timeout).
    note: str | None = None


class Judgement(msgspec.Struct, frozen=True):
    guard: int  # index in the plan's guards
    verdict: Verdict
    evidence: Evidence


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One action. ``step`` and ``percentage`` are where it leads (``percentage`` None with
    a rollback or a step-back from the first step: the flag is disabled); ``until`` is when
    a hold ends or a window opens; ``evidence`` is the breaching guard's."""

    kind: DecisionKind
    reason: str = ""
    step: int | None = None
    percentage: float | None = None
    until: float | None = None
    evidence: Evidence | None = None
    judgements: tuple[Judgement, ...] = ()


class GuardCheck(msgspec.Struct, frozen=True):
    """A guard ready to be judged many times: the guard, its canonical rule, its threshold
    in the reading's unit and the test's mixing scale (:func:`mixing_scale`)."""

    guard: Guard
    rule: str
    threshold: float
    tau: float

    @classmethod
    def of(cls, guard: Guard) -> GuardCheck:
        return cls(guard, str(guard), guard.threshold_value, mixing_scale(guard))


def guard_checks(plan: Plan) -> tuple[GuardCheck, ...]:
    """The plan's guards, parsed and prepared once (a driver judges them every drain)."""
    return tuple(GuardCheck.of(parse_guard(rule)) for rule in plan.spec.guards)


class Readings(msgspec.Struct, frozen=True, kw_only=True):
    """What the guards are judged on: per guard window (seconds) the window's reading of
    the plan's flag; the reading since the hold started (for ``vs_control``); consecutive
    failed health polls (None: none polled yet); each promql query's value (None or
    absent: no answer), keyed by the guard's query as written, and why one has none."""

    windows: Mapping[int, WindowReading]
    since_hold: WindowReading | None = None
    health_failures: int | None = None
    promql: Mapping[str, float | None] = {}
    promql_notes: Mapping[str, str] = {}


def gather_readings(
    plan: Plan,
    aggregate: OutcomeAggregate,
    now: float,
    *,
    health_failures: int | None = None,
    promql: Mapping[str, float | None] | None = None,
    promql_notes: Mapping[str, str] | None = None,
) -> Readings:
    """The readings :func:`decide` needs for ``plan``, from the outcome aggregate."""
    guards = [parse_guard(rule) for rule in plan.spec.guards]
    key = plan.spec.key
    windows = {
        guard.window: aggregate.read(key, window_start(guard.window, now), now)
        for guard in guards
        if guard.window is not None
    }
    since = plan.hold_started_at
    return Readings(
        windows=windows,
        since_hold=aggregate.read(key, since, now) if since is not None else None,
        health_failures=health_failures,
        promql=promql or {},
        promql_notes=promql_notes or {},
    )


def mixing_scale(guard: Guard) -> float:
    """The mixing scale ``tau`` of the test for ``guard``: the size of a difference the
    test is tuned to (docs/adr/0017-guarded-rollout-decisions.md): the threshold for rates
    (at least 1 point), the tail's share for percentiles, half the threshold for average
    latency, 0.05 events per request for counts. It depends on the rule only, never on the
    data."""
    if guard.metric is Metric.ERROR_RATE:
        return max(guard.threshold_value, 0.01)
    if guard.metric is Metric.P95_LATENCY:
        return 0.05
    if guard.metric is Metric.P99_LATENCY:
        return 0.01
    if guard.metric is Metric.AVG_LATENCY:
        return max(guard.threshold_value / 2, 1.0)
    return 0.05


def _value(guard: Guard, cohort: CohortReading, seconds: float) -> float | None:
    metric = guard.metric
    if metric is Metric.ERROR_RATE:
        return cohort.error_rate
    if metric is Metric.AVG_LATENCY:
        return cohort.avg_latency_ms
    if metric is Metric.P95_LATENCY:
        return cohort.quantile_ms(0.95)
    if metric is Metric.P99_LATENCY:
        return cohort.quantile_ms(0.99)
    if metric is Metric.THROUGHPUT:
        return cohort.requests * 60 / seconds if seconds > 0 else None
    if metric is Metric.COUNT:
        return float(cohort.count(guard.event or "", guard.labels))
    raise AssertionError(f"{metric} is not read per cohort")  # pragma: no cover


def _latency_variance(cohort: CohortReading) -> float:
    """The variance of a request's latency, estimated from the histogram around the exact
    mean: each request spread evenly over its bucket (its midpoint, plus the bucket's
    width squared over 12); the +inf bucket as 10 s exactly."""
    if cohort.requests == 0:
        return 0.0
    mean = cohort.latency_us_sum / 1000 / cohort.requests
    lower, total = 0.0, 0.0
    for bound, count in zip(LATENCY_BOUNDS_MS, cohort.latency_buckets, strict=True):
        if math.isinf(bound):
            total += count * (lower - mean) ** 2
            break
        width = bound - lower
        total += count * (((lower + bound) / 2 - mean) ** 2 + width * width / 12)
        lower = bound
    return total / cohort.requests


def _test(check: GuardCheck, since: WindowReading) -> tuple[float, float, float] | None:
    """(log Lambda, D, V) of the test for ``guard`` on the data since the hold started,
    D oriented so that positive is worse for the treatment; None when it cannot be run."""
    treatment, control = since.treatment, since.control
    guard = check.guard
    metric = guard.metric
    estimate: tuple[float, float] | None
    if metric is Metric.ERROR_RATE:
        estimate = bernoulli_difference(
            treatment.failures, treatment.requests, control.failures, control.requests
        )
    elif metric in (Metric.P95_LATENCY, Metric.P99_LATENCY):
        threshold = check.threshold
        estimate = bernoulli_difference(
            treatment.slower_than(threshold),
            treatment.requests,
            control.slower_than(threshold),
            control.requests,
        )
    elif metric is Metric.AVG_LATENCY:
        estimate = mean_difference(
            treatment.avg_latency_ms or 0.0,
            _latency_variance(treatment),
            treatment.requests,
            control.avg_latency_ms or 0.0,
            _latency_variance(control),
            control.requests,
        )
    elif metric is Metric.COUNT:
        event, labels = guard.event or "", guard.labels
        hits_t, hits_c = treatment.count(event, labels), control.count(event, labels)
        n_t, n_c = treatment.requests, control.requests
        if n_t <= 0 or n_c <= 0 or hits_t + hits_c == 0:
            estimate = None
        else:  # events per request, Poisson variance at the pooled rate
            pooled = (hits_t + hits_c) / (n_t + n_c)
            estimate = (hits_t / n_t - hits_c / n_c, pooled * (1 / n_t + 1 / n_c))
    else:
        return None
    if estimate is None:
        return None
    difference, variance = estimate
    if guard.op in (Op.LT, Op.LE):
        difference = -difference
    if variance <= 0:  # every request alike in both cohorts: no evidence of a difference
        return -math.inf, difference, variance
    return log_mixture_ratio(difference, variance, check.tau), difference, variance


def judge(
    check: GuardCheck,
    readings: Readings,
    *,
    min_sample: int,
    vs_control: bool,
) -> tuple[Verdict, Evidence]:
    """One guard's verdict and its evidence."""
    guard, rule, threshold = check.guard, check.rule, check.threshold
    metric = guard.metric
    if metric is Metric.HEALTH_FAILURES or metric is Metric.PROMQL:
        note = None
        if metric is Metric.HEALTH_FAILURES:
            failed = readings.health_failures
            site = None if failed is None else float(failed)
        else:
            query = guard.query or ""
            site = readings.promql.get(query)
            if site is None:
                note = readings.promql_notes.get(query, "not queried yet")
        evidence = Evidence(rule=rule, threshold=threshold, value=site, note=note)
        if site is None:
            return Verdict.NOT_ENOUGH_DATA, evidence
        return (Verdict.BREACH if guard.op.holds(site, threshold) else Verdict.PASS), evidence

    assert guard.window is not None
    window = readings.windows[guard.window]
    seconds = window.seconds
    treatment = CohortSample(_value(guard, window.treatment, seconds), window.treatment.requests)
    control = CohortSample(_value(guard, window.control, seconds), window.control.requests)
    span = (window.start, window.now)
    # min-sample does not apply to counts and throughput: their value is the sample.
    sampled = metric is not Metric.COUNT and metric is not Metric.THROUGHPUT
    value = treatment.value
    enough = value is not None and (
        not sampled
        or (treatment.requests >= min_sample and (not vs_control or control.requests >= min_sample))
    )
    beyond = enough and value is not None and guard.op.holds(value, threshold)
    since = readings.since_hold
    tested = (
        _test(check, since)
        if beyond and vs_control and since is not None and metric is not Metric.THROUGHPUT
        else None
    )
    if tested is None or since is None:
        evidence = Evidence(
            rule=rule, window=span, threshold=threshold, treatment=treatment, control=control
        )
        if not enough:
            return Verdict.NOT_ENOUGH_DATA, evidence
        if not beyond:
            return Verdict.PASS, evidence
        if vs_control and metric is not Metric.THROUGHPUT:
            return Verdict.NOT_ENOUGH_DATA, evidence  # beyond, but nothing to test yet
        return Verdict.BREACH, evidence
    log_ratio, difference, variance = tested
    evidence = Evidence(
        rule=rule,
        window=span,
        threshold=threshold,
        treatment=treatment,
        control=control,
        test_treatment=CohortSample(
            _value(guard, since.treatment, since.seconds), since.treatment.requests
        ),
        test_control=CohortSample(
            _value(guard, since.control, since.seconds), since.control.requests
        ),
        statistic=math.exp(min(log_ratio, 700.0)),
        difference=difference,
        z=z_score(difference, variance),
        alpha=ALPHA,
    )
    return (Verdict.BREACH if rejects(log_ratio) else Verdict.PASS), evidence


_BREACH_KINDS: Final = {
    OnBreach.ROLLBACK: DecisionKind.ROLLBACK,
    OnBreach.STEP_BACK: DecisionKind.STEP_BACK,
    OnBreach.PAUSE: DecisionKind.BREACH_PAUSE,
}


def decide(
    plan: Plan, readings: Readings, now: float, checks: Sequence[GuardCheck] | None = None
) -> Decision:
    """The one action for ``plan`` at ``now`` (see the module's docstring for the order).
    ``checks`` are :func:`guard_checks` of the plan (made here if not given: a driver
    judging every 0.5 s makes them once per plan record)."""
    spec = plan.spec
    if plan.status is PlanStatus.SCHEDULED:
        moment = datetime.fromtimestamp(now, UTC)
        if spec.start_at is not None and now < spec.start_at:
            return Decision(kind=DecisionKind.NONE, reason="scheduled", until=spec.start_at)
        if spec.window is not None and not window_open(spec.window, moment):
            opens = next_opening(spec.window, moment).timestamp()
            return Decision(kind=DecisionKind.NONE, reason="waiting for the window", until=opens)
        return Decision(kind=DecisionKind.START, reason="start", step=0, percentage=spec.steps[0])
    if plan.status is not PlanStatus.RUNNING:
        return Decision(kind=DecisionKind.NONE, reason=plan.status.value)

    prepared = checks if checks is not None else guard_checks(plan)
    # At 100 % nobody is left in the control: there the guards judge the treatment on
    # their thresholds alone (else the last step could neither breach nor complete).
    vs_control = spec.vs_control and plan.percentage is not None and plan.percentage < 100
    judgements = []
    for index, check in enumerate(prepared):
        verdict, evidence = judge(
            check, readings, min_sample=spec.min_sample, vs_control=vs_control
        )
        judgements.append(Judgement(index, verdict, evidence))
    judged = tuple(judgements)
    for judgement in judged:
        if judgement.verdict is Verdict.BREACH:
            kind = _BREACH_KINDS[spec.on_breach]
            step, percentage = plan.step, plan.percentage
            if kind is DecisionKind.ROLLBACK:
                step, percentage = -1, None
            elif kind is DecisionKind.STEP_BACK:
                step = plan.step - 1
                percentage = spec.steps[step] if step >= 0 else None
            return Decision(
                kind=kind,
                reason=f"guard breached: {judgement.evidence.rule}",
                step=step,
                percentage=percentage,
                evidence=judgement.evidence,
                judgements=judged,
            )
    held_since = plan.hold_started_at if plan.hold_started_at is not None else now
    hold_ends = held_since + spec.hold
    if now < hold_ends:
        return Decision(
            kind=DecisionKind.HOLD,
            reason="holding",
            step=plan.step,
            percentage=plan.percentage,
            until=hold_ends,
            judgements=judged,
        )
    lacking = [j for j in judged if j.verdict is Verdict.NOT_ENOUGH_DATA]
    if lacking:
        rules = "; ".join(j.evidence.rule for j in lacking)
        if now >= held_since + spec.max_hold:
            return Decision(
                kind=DecisionKind.PAUSE,
                reason=f"not enough data after the max hold: {rules}",
                step=plan.step,
                percentage=plan.percentage,
                evidence=lacking[0].evidence,
                judgements=judged,
            )
        return Decision(
            kind=DecisionKind.EXTEND_HOLD,
            reason=f"not enough data: {rules}",
            step=plan.step,
            percentage=plan.percentage,
            until=held_since + spec.max_hold,
            judgements=judged,
        )
    moment = datetime.fromtimestamp(now, UTC)
    if spec.window is not None and not window_open(spec.window, moment):
        return Decision(
            kind=DecisionKind.HOLD,
            reason="waiting for the window",
            step=plan.step,
            percentage=plan.percentage,
            until=next_opening(spec.window, moment).timestamp(),
            judgements=judged,
        )
    if plan.is_last_step:
        return Decision(
            kind=DecisionKind.COMPLETE,
            reason="every step held",
            step=plan.step,
            percentage=plan.percentage,
            judgements=judged,
        )
    return Decision(
        kind=DecisionKind.ADVANCE,
        reason="the hold passed and every guard passed",
        step=plan.step + 1,
        percentage=spec.steps[plan.step + 1],
        judgements=judged,
    )


def apply_decision(plan: Plan, decision: Decision, now: float) -> Plan | None:
    """The plan's next record for ``decision``, or None when the record does not change
    (none, hold, extend-hold)."""
    kind = decision.kind
    if kind is DecisionKind.START:
        return start(plan, now)
    if kind is DecisionKind.ADVANCE:
        return advance(plan, now)
    if kind is DecisionKind.COMPLETE:
        return complete(plan, now)
    if kind is DecisionKind.PAUSE or kind is DecisionKind.BREACH_PAUSE:
        return pause(plan, decision.reason, now, actor=DRIVER)
    if kind is DecisionKind.ROLLBACK:
        return rollback(plan, decision.reason, now, actor=DRIVER)
    if kind is DecisionKind.STEP_BACK:
        return step_back(plan, decision.reason, now, actor=DRIVER)
    return None
