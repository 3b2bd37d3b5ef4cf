"""The decision after every drain (docs/spec.md, "Guarded rollouts", Decisions): the order
of the rules, each action with its evidence, and the ``--vs-control`` test's error rates
simulated through ``decide`` itself (docs/adr/0017-guarded-rollout-decisions.md)."""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest

from flagport.rollout.decision import (
    DecisionKind,
    Readings,
    Verdict,
    apply_decision,
    decide,
    gather_readings,
)
from flagport.rollout.limits import LATENCY_BOUNDS_MS
from flagport.rollout.outcomes import (
    BUCKETS,
    Cohort,
    OutcomeAggregate,
    OutcomeBatch,
    OutcomeEvent,
    OutcomeItem,
)
from flagport.rollout.plan import OnBreach, Plan, PlanSpec, PlanStatus, new_plan, start
from flagport.rollout.schedule import DailyWindow
from flagport.rollout.sequential import log_mixture_ratio, rejects
from tests.sdk.rollout.simulation import GUARD, T0, draw_traffic, readings_at, simulate

KEY = "ui-improvements"


def make_plan(
    *guards: str,
    on_breach: OnBreach = OnBreach.ROLLBACK,
    hold: int = 600,
    max_hold: int = 1800,
    vs_control: bool = False,
    min_sample: int = 200,
    window: DailyWindow | None = None,
    started: bool = True,
    health_url: str | None = None,
) -> Plan:
    spec = PlanSpec(
        key=KEY,
        steps=(10.0, 50.0, 100.0),
        hold=hold,
        max_hold=max_hold,
        guards=guards,
        on_breach=on_breach,
        min_sample=min_sample,
        vs_control=vs_control,
        window=window,
        health_url=health_url,
        # A promql guard needs a Prometheus URL (never queried here: readings are given).
        prometheus_url="http://prom:9090" if any("promql(" in g for g in guards) else None,
    )
    plan = new_plan(spec, T0 - 60)
    return start(plan, T0) if started else plan


def report(
    aggregate: OutcomeAggregate,
    at: float,
    cohort: Cohort,
    requests: int,
    failures: int = 0,
    *,
    bucket: int = 4,
    events: int = 0,
) -> None:
    buckets = [0] * BUCKETS
    buckets[bucket] = requests
    lower = LATENCY_BOUNDS_MS[bucket - 1] if bucket else 0.0
    middle = (lower + LATENCY_BOUNDS_MS[bucket]) / 2  # every request at its bucket's middle
    item = OutcomeItem(KEY, "on", cohort, requests, failures, requests * middle, buckets)
    reported = [OutcomeEvent(KEY, "on", cohort, "user_report", {"severity": "critical"}, events)]
    rejected = aggregate.add_batch(OutcomeBatch((at - 1, at), [item], reported), at)
    assert rejected == []


def healthy(aggregate: OutcomeAggregate, at: float) -> None:
    report(aggregate, at, Cohort.TREATMENT, 300, 3)
    report(aggregate, at, Cohort.CONTROL, 2700, 27)


def judged(plan: Plan, aggregate: OutcomeAggregate, now: float) -> DecisionKind:
    return decide(plan, gather_readings(plan, aggregate, now), now).kind


def test_a_whole_plan_holds_advances_and_completes() -> None:
    plan = make_plan("error_rate > 5% over 5m")
    aggregate = OutcomeAggregate()
    now = T0
    for step in range(3):
        assert plan.step == step
        healthy(aggregate, now + 30)
        assert judged(plan, aggregate, now + 30) is DecisionKind.HOLD
        healthy(aggregate, now + 600)
        decision = decide(plan, gather_readings(plan, aggregate, now + 600), now + 600)
        expected = DecisionKind.COMPLETE if step == 2 else DecisionKind.ADVANCE
        assert decision.kind is expected
        assert [j.verdict for j in decision.judgements] == [Verdict.PASS]
        successor = apply_decision(plan, decision, now + 600)
        assert successor is not None
        assert successor.version == plan.version + 1
        plan, now = successor, now + 600
    assert plan.status is PlanStatus.COMPLETED
    assert decide(plan, Readings(windows={}), now).kind is DecisionKind.NONE


@pytest.mark.parametrize(
    ("on_breach", "kind", "step", "percentage"),
    [
        (OnBreach.ROLLBACK, DecisionKind.ROLLBACK, -1, None),
        (OnBreach.STEP_BACK, DecisionKind.STEP_BACK, 0, 10.0),
        (OnBreach.PAUSE, DecisionKind.BREACH_PAUSE, 1, 50.0),
    ],
)
def test_each_action_on_breach_with_its_evidence(
    on_breach: OnBreach, kind: DecisionKind, step: int, percentage: float | None
) -> None:
    plan = make_plan("error_rate > 5% over 5m", on_breach=on_breach)
    plan = apply_decision(
        plan, decide(plan, _passing(plan, T0 + 600), T0 + 600), T0 + 600
    ) or pytest.fail("no advance")
    assert plan.step == 1
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 650, Cohort.TREATMENT, 400, 40)
    report(aggregate, T0 + 650, Cohort.CONTROL, 400, 4)
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 650), T0 + 650)
    assert (decision.kind, decision.step, decision.percentage) == (kind, step, percentage)
    evidence = decision.evidence
    assert evidence is not None
    assert evidence.rule == "error_rate > 5% over 5m"
    assert evidence.window == (T0 + 600 - 300, T0 + 650)
    assert evidence.treatment is not None
    assert evidence.control is not None
    assert (evidence.treatment.value, evidence.treatment.requests) == (0.1, 400)
    assert (evidence.control.value, evidence.control.requests) == (0.01, 400)
    assert evidence.threshold == 0.05
    paused = apply_decision(plan, decision, T0 + 650)
    assert paused is not None
    assert (paused.status, paused.step, paused.percentage) == (PlanStatus.PAUSED, step, percentage)
    assert paused.actor == "driver"
    assert paused.reason == "guard breached: error_rate > 5% over 5m"


def _passing(plan: Plan, now: float) -> Readings:
    aggregate = OutcomeAggregate()
    healthy(aggregate, now)
    return gather_readings(plan, aggregate, now)


def test_step_back_from_the_first_step_disables() -> None:
    plan = make_plan("error_rate > 5%", on_breach=OnBreach.STEP_BACK)
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 10, Cohort.TREATMENT, 300, 30)
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 10), T0 + 10)
    assert (decision.kind, decision.step, decision.percentage) == (DecisionKind.STEP_BACK, -1, None)


def test_guards_act_during_the_hold_and_outside_the_window() -> None:
    closed = DailyWindow("02:00", "04:00", "Europe/Berlin")  # T0 is 09:00 in Berlin
    plan = make_plan("error_rate > 5%", window=closed)
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 10, Cohort.TREATMENT, 300, 30)
    assert judged(plan, aggregate, T0 + 10) is DecisionKind.ROLLBACK


def test_not_enough_data_extends_the_hold_then_pauses_at_max_hold() -> None:
    plan = make_plan("error_rate > 5%", hold=600, max_hold=1800)
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 590, Cohort.TREATMENT, 150, 0)  # below min-sample 200
    assert judged(plan, aggregate, T0 + 590) is DecisionKind.HOLD
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 600), T0 + 600)
    assert decision.kind is DecisionKind.EXTEND_HOLD
    assert decision.until == T0 + 1800
    assert decision.judgements[0].verdict is Verdict.NOT_ENOUGH_DATA
    report(aggregate, T0 + 1800, Cohort.TREATMENT, 150, 0)
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 1800), T0 + 1800)
    assert decision.kind is DecisionKind.PAUSE
    assert "not enough data" in decision.reason
    paused = apply_decision(plan, decision, T0 + 1800)
    assert paused is not None
    assert paused.status is PlanStatus.PAUSED
    assert paused.percentage == 10.0  # exposure unchanged


def test_min_sample_does_not_apply_to_counts_or_throughput() -> None:
    plan = make_plan('count(user_report{severity="critical"}) > 10 over 10m')
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 30, Cohort.TREATMENT, 5, events=11)
    assert judged(plan, aggregate, T0 + 30) is DecisionKind.ROLLBACK
    plan = make_plan("throughput < 50/min over 5m")
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 30, Cohort.TREATMENT, 100)  # 100 in 5.5 minutes: 18/min
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 30), T0 + 30)
    assert decision.kind is DecisionKind.ROLLBACK
    assert decision.evidence is not None
    assert decision.evidence.treatment is not None
    assert decision.evidence.treatment.value == pytest.approx(100 * 60 / 330)


def test_latency_guards_read_the_histogram() -> None:
    plan = make_plan("p95_latency > 1.5s over 5m", "avg_latency > 2s over 5m")
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 30, Cohort.TREATMENT, 280, bucket=4)  # (50, 100] ms
    report(aggregate, T0 + 30, Cohort.TREATMENT, 20, bucket=8)  # (1000, 2000] ms
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 30), T0 + 30)
    p95 = decision.judgements[0].evidence.treatment
    assert p95 is not None
    assert p95.value == pytest.approx(1000 + 1000 * (285 - 280) / 20)
    assert decision.kind is DecisionKind.HOLD  # 1250 ms and 80 ms: both pass


def test_health_failures_and_promql_are_site_wide() -> None:
    plan = make_plan(
        "health_failures >= 3", "promql(sum(up)) < 1", health_url="http://localhost/health"
    )
    aggregate = OutcomeAggregate()
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 700), T0 + 700)
    assert [j.verdict for j in decision.judgements] == [Verdict.NOT_ENOUGH_DATA] * 2
    assert decision.kind is DecisionKind.EXTEND_HOLD
    assert decision.judgements[1].evidence.note == "not queried yet"
    readings = gather_readings(
        plan, aggregate, T0 + 700, promql={"sum(up)": None}, promql_notes={"sum(up)": "no data"}
    )
    assert decide(plan, readings, T0 + 700).judgements[1].evidence.note == "no data"
    readings = gather_readings(
        plan, aggregate, T0 + 700, health_failures=2, promql={"sum(up)": 3.0}
    )
    assert decide(plan, readings, T0 + 700).kind is DecisionKind.ADVANCE
    readings = gather_readings(plan, aggregate, T0 + 700, health_failures=3)
    decision = decide(plan, readings, T0 + 700)
    assert decision.kind is DecisionKind.ROLLBACK
    assert decision.evidence is not None
    assert decision.evidence.value == 3.0


def test_steps_advance_only_inside_the_window() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert datetime.fromtimestamp(T0, berlin).isoformat() == "2027-01-15T09:00:00+01:00"
    window = DailyWindow("02:00", "04:00", "Europe/Berlin")
    plan = make_plan("error_rate > 5%", window=window)
    decision = decide(plan, _passing(plan, T0 + 600), T0 + 600)
    assert decision.kind is DecisionKind.HOLD
    assert decision.reason == "waiting for the window"
    opens = decision.until
    assert opens is not None
    assert datetime.fromtimestamp(opens, berlin).isoformat() == "2027-01-16T02:00:00+01:00"
    assert decide(plan, _passing(plan, opens - 1), opens - 1).kind is DecisionKind.HOLD
    assert decide(plan, _passing(plan, opens), opens).kind is DecisionKind.ADVANCE


def test_a_scheduled_plan_starts_when_due_and_in_its_window() -> None:
    plan = make_plan("error_rate > 5%", started=False)
    assert decide(plan, Readings(windows={}), T0).kind is DecisionKind.START
    started = apply_decision(plan, decide(plan, Readings(windows={}), T0), T0)
    assert started is not None
    assert (started.status, started.step, started.percentage) == (PlanStatus.RUNNING, 0, 10.0)
    window = DailyWindow("02:00", "04:00", "Europe/Berlin")
    waiting = make_plan("error_rate > 5%", started=False, window=window)
    decision = decide(waiting, Readings(windows={}), T0)
    assert decision.kind is DecisionKind.NONE
    assert decision.until is not None
    assert decision.until > T0


def test_vs_control_a_site_wide_incident_takes_no_action() -> None:
    plan = make_plan("error_rate > 5% over 5m", vs_control=True)
    aggregate = OutcomeAggregate()
    for second in range(1, 300):
        report(aggregate, T0 + second, Cohort.TREATMENT, 2, 0 if second % 12 else 2)
        report(aggregate, T0 + second, Cohort.CONTROL, 18, 2 if second % 12 == 0 else 1)
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 299), T0 + 299)
    judgement = decision.judgements[0]
    evidence = judgement.evidence
    assert evidence.treatment is not None
    assert evidence.treatment.value is not None
    assert evidence.treatment.value > 0.05  # beyond the threshold ...
    assert judgement.verdict is Verdict.PASS  # ... but no worse than control
    assert evidence.statistic is not None
    assert evidence.statistic < 20
    assert evidence.test_treatment is not None
    assert evidence.test_treatment.requests == 598
    assert decision.kind is DecisionKind.HOLD


def test_vs_control_a_treatment_incident_rolls_back_with_the_statistic() -> None:
    plan = make_plan("error_rate > 5% over 5m", vs_control=True)
    aggregate = OutcomeAggregate()
    report(aggregate, T0 + 60, Cohort.TREATMENT, 400, 40)
    report(aggregate, T0 + 60, Cohort.CONTROL, 3600, 72)
    decision = decide(plan, gather_readings(plan, aggregate, T0 + 60), T0 + 60)
    assert decision.kind is DecisionKind.ROLLBACK
    evidence = decision.evidence
    assert evidence is not None
    assert evidence.statistic is not None
    assert evidence.statistic >= 20
    assert evidence.alpha == 0.05
    assert evidence.difference == pytest.approx(0.1 - 0.02)
    assert evidence.z is not None
    assert evidence.z > 5


def test_vs_control_at_100_percent_judges_on_the_threshold_alone() -> None:
    """At the last step of 100 % nobody is in the control: a bad treatment rolls back and a
    good one completes, instead of waiting for a control sample until max_hold pauses it
    at 100 %."""
    plan = msgspec.structs.replace(
        make_plan("error_rate > 5% over 5m", vs_control=True, min_sample=100),
        step=2,
        percentage=100.0,
    )
    bad = OutcomeAggregate()
    report(bad, T0 + 60, Cohort.TREATMENT, 400, 40)
    assert judged(plan, bad, T0 + 60) is DecisionKind.ROLLBACK
    good = OutcomeAggregate()
    for minute in range(1, 12):
        report(good, T0 + 60 * minute, Cohort.TREATMENT, 400, 4)
    assert judged(plan, good, T0 + 660) is DecisionKind.COMPLETE
    below = msgspec.structs.replace(plan, step=1, percentage=50.0)  # a control exists: tested
    assert judged(below, bad, T0 + 60) is DecisionKind.HOLD  # no control sample yet


def test_the_mixture_ratio_matches_its_integral() -> None:
    """``log_mixture_ratio`` against the half-normal mixture of normal likelihood ratios,
    integrated numerically: the closed form is the integral."""
    for difference, variance, tau in [(0.02, 1e-4, 0.05), (-0.01, 4e-4, 0.05), (3.0, 2.0, 1.0)]:
        thetas = np.linspace(0, 12 * tau, 200_001)
        density = 2 / (tau * math.sqrt(2 * math.pi)) * np.exp(-(thetas**2) / (2 * tau**2))
        ratio = np.exp((thetas * difference - thetas**2 / 2) / variance)
        integral = float(np.sum(density * ratio) * (thetas[1] - thetas[0]))
        assert log_mixture_ratio(difference, variance, tau) == pytest.approx(
            math.log(integral), abs=1e-3
        )
    assert rejects(math.log(20))
    assert not rejects(math.log(19.9))


def test_the_simulations_readings_are_the_drivers() -> None:
    """The simulation's readings from cumulative sums equal ``gather_readings`` over a real
    aggregate fed the same traffic second by second."""
    traffic = draw_traffic(np.random.default_rng(5), 1, 500, 0.08, 0.08)
    plan = make_plan(GUARD, vs_control=True)
    aggregate = OutcomeAggregate()
    for second in range(500):
        now = T0 + second + 1
        for cohort, requests, failures in (
            (Cohort.TREATMENT, traffic.treatment_requests, traffic.treatment_failures),
            (Cohort.CONTROL, traffic.control_requests, traffic.control_failures),
        ):
            count = int(requests[0, second + 1] - requests[0, second])
            failed = int(failures[0, second + 1] - failures[0, second])
            report(aggregate, now, cohort, count, failed)
        if second % 37 == 0 or second == 499:
            gathered = gather_readings(plan, aggregate, now)
            simulated = readings_at(traffic, 0, second + 1, 300)
            for got, want in (
                (gathered.windows[300], simulated.windows[300]),
                (gathered.since_hold, simulated.since_hold),
            ):
                assert got is not None
                assert want is not None
                assert (got.start, got.now) == (want.start, want.now)
                for cohort in Cohort:
                    a, b = got.cohort(cohort), want.cohort(cohort)
                    assert (a.requests, a.failures) == (b.requests, b.failures)


@pytest.mark.slow
def test_vs_control_false_rollbacks_and_power_200_runs() -> None:
    """A/A: both cohorts at 8 % errors, judged every second for an hour: at most 5 % of
    runs roll back. 2 % vs 6 %: at least 95 % caught within 2,000 treatment requests.
    (Figures for 1,000 runs: benchmarks/test_rollout_decisions.py, benchmarks/RESULTS.md.)"""
    null = simulate(200, 3600, 0.08, 0.08, seed=17)
    assert null.decisions > 190 * 3600
    assert null.breached / null.runs <= 0.05, null
    power = simulate(200, 1000, 0.06, 0.02, seed=18, stop_after_treatment_requests=2000)
    assert power.breached / power.runs >= 0.95, power
    assert max(power.treatment_requests_at_breach) <= 2000
    print(
        f"A/A false rollbacks {null.breached}/{null.runs}; power {power.breached}/"
        f"{power.runs}, median {statistics.median(power.treatment_requests_at_breach)} "
        "treatment requests"
    )


@pytest.mark.parametrize(
    ("rule", "worse", "same"),
    [
        # (bucket, failures, events) per request group for the treatment; control as "same"
        ("p95_latency > 400ms over 5m", {"bucket": 7}, {"bucket": 4}),
        ("avg_latency > 200ms over 5m", {"bucket": 7}, {"bucket": 4}),
        ('count(user_report{severity="critical"}) > 10 over 5m', {"events": 60}, {"events": 1}),
    ],
)
def test_vs_control_tests_each_per_cohort_metric(
    rule: str, worse: dict[str, int], same: dict[str, int]
) -> None:
    """A treatment clearly worse than the control is a breach with the statistic; the same
    figures in both cohorts are not, however far beyond the threshold."""
    plan = make_plan(rule, vs_control=True)
    bad = OutcomeAggregate()
    report(bad, T0 + 60, Cohort.TREATMENT, 300, **same)
    report(bad, T0 + 60, Cohort.TREATMENT, 300, **worse)
    report(bad, T0 + 60, Cohort.CONTROL, 3000, **same)
    decision = decide(plan, gather_readings(plan, bad, T0 + 60), T0 + 60)
    assert decision.kind is DecisionKind.ROLLBACK, decision.judgements
    assert decision.evidence is not None
    assert decision.evidence.statistic is not None
    assert decision.evidence.statistic >= 20
    everywhere = OutcomeAggregate()
    report(everywhere, T0 + 60, Cohort.TREATMENT, 600, **worse)
    # Ten times the requests: ten times the events, the same rate per request.
    scaled = {name: count * 10 if name == "events" else count for name, count in worse.items()}
    report(everywhere, T0 + 60, Cohort.CONTROL, 6000, **scaled)
    decision = decide(plan, gather_readings(plan, everywhere, T0 + 60), T0 + 60)
    (judgement,) = decision.judgements
    assert judgement.evidence.treatment is not None
    assert judgement.evidence.treatment.value is not None
    assert judgement.evidence.treatment.value > judgement.evidence.threshold
    assert judgement.verdict is Verdict.PASS
    assert decision.kind is DecisionKind.HOLD
