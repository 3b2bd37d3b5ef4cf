"""The plan record and its transitions (docs/spec.md, "Guarded rollouts", Plans)."""

from __future__ import annotations

import msgspec
import pytest

from flagport.engine.models import Flag
from flagport.rollout.errors import (
    GuardSyntaxError,
    PlanTransitionError,
    RolloutError,
    ScheduleError,
)
from flagport.rollout.guards import RUNBOOK
from flagport.rollout.plan import (
    PLAN_FORMAT,
    OnBreach,
    Plan,
    PlanSpec,
    PlanStatus,
    abort,
    advance,
    check_flag,
    complete,
    decode_plan,
    new_plan,
    pause,
    restart_hold,
    resume,
    rollback,
    start,
    step_back,
)
from flagport.rollout.schedule import DailyWindow

NOW = 1_800_000_000.0


def spec(**changes: object) -> PlanSpec:
    base = PlanSpec(key="ui-improvements", steps=(10.0, 25.0, 50.0, 100.0), hold=1800)
    return msgspec.structs.replace(base, **changes)


def running(step: int = 0) -> Plan:
    plan = start(new_plan(spec(guards=("error_rate>5%",)), NOW), NOW + 1)
    for _ in range(step):
        plan = advance(plan, plan.updated_at + 1)
    return plan


def test_a_new_plan_is_scheduled_with_canonical_guards() -> None:
    plan = new_plan(spec(guards=("runbook",), health_url="https://portal.example/health"), NOW)
    assert (plan.status, plan.version, plan.step, plan.percentage) == (
        PlanStatus.SCHEDULED,
        1,
        -1,
        None,
    )
    assert plan.spec.guards == RUNBOOK
    assert plan.format == PLAN_FORMAT


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"key": "Bad Key"}, RolloutError, "invalid key"),
        ({"steps": (25.0, 10.0)}, ScheduleError, "must increase"),
        ({"hold": 0}, ScheduleError, "positive"),
        ({"hold": 3600, "max_hold": 1800}, ScheduleError, "shorter than the hold"),
        ({"guards": ("error_rate > 5",)}, GuardSyntaxError, "'%'"),
        ({"guards": ("runbook",)}, RolloutError, "needs a health URL"),
        ({"health_url": "file:///etc/passwd"}, RolloutError, r"http\(s\)"),
        ({"health_url": "http://"}, RolloutError, r"http\(s\)"),
        ({"min_sample": 0}, RolloutError, "min-sample"),
        ({"start_at": NOW - 1}, ScheduleError, "in the past"),
        ({"window": DailyWindow("02:00", "02:00", "Europe/Berlin")}, ScheduleError, "empty"),
        ({"window": DailyWindow("02:00", "04:00", "Mars/Base")}, ScheduleError, "time zone"),
        ({"health_interval": 0}, ScheduleError, "health interval"),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        new_plan(spec(**changes), NOW)


def test_the_first_step_is_not_below_an_enabled_flags_percentage() -> None:
    with pytest.raises(ScheduleError, match="below the flag's current"):
        new_plan(spec(), NOW, enabled_percentage=20.0)
    assert new_plan(spec(steps=(20.0, 100.0)), NOW, enabled_percentage=20.0).spec.steps[0] == 20


def test_start_advance_complete() -> None:
    plan = running()
    assert (plan.status, plan.step, plan.percentage, plan.hold_started_at) == (
        PlanStatus.RUNNING,
        0,
        10.0,
        NOW + 1,
    )
    for expected in (25.0, 50.0, 100.0):
        plan = advance(plan, plan.updated_at + 10)
        assert plan.percentage == expected
        assert plan.hold_started_at == plan.updated_at
    with pytest.raises(PlanTransitionError, match="last step"):
        advance(plan, NOW + 100)
    done = complete(plan, NOW + 100)
    assert done.status is PlanStatus.COMPLETED
    assert done.version == plan.version + 1
    with pytest.raises(PlanTransitionError, match="it is completed"):
        pause(done, "why", NOW + 101, actor="alice")
    with pytest.raises(PlanTransitionError, match="completed"):
        abort(done, "why", NOW + 101, actor="alice")


def test_complete_only_after_the_last_step() -> None:
    with pytest.raises(PlanTransitionError, match="step 1 of 4"):
        complete(running(), NOW + 5)


def test_pause_and_resume_restart_the_hold_and_never_lower_exposure() -> None:
    plan = running(step=1)  # 25 %
    paused = pause(plan, "manual write to ui-improvements by alice", NOW + 50, actor="alice")
    assert (paused.status, paused.percentage, paused.actor) == (PlanStatus.PAUSED, 25.0, "alice")
    with pytest.raises(PlanTransitionError, match="cannot advance"):
        advance(paused, NOW + 51)
    with pytest.raises(PlanTransitionError, match="cannot pause"):
        pause(paused, "again", NOW + 51, actor="alice")
    resumed = resume(paused, NOW + 60, exposure=25.0)
    assert (resumed.status, resumed.step, resumed.percentage) == (PlanStatus.RUNNING, 1, 25.0)
    assert resumed.hold_started_at == NOW + 60
    # The person raised the flag to 40 % meanwhile: resume keeps 40 and the step below it.
    raised = resume(paused, NOW + 60, exposure=40.0)
    assert (raised.step, raised.percentage) == (1, 40.0)
    assert advance(raised, NOW + 70).percentage == 50.0
    # ... or to 60 %: the plan continues from the 50 % step.
    higher = resume(paused, NOW + 60, exposure=60.0)
    assert (higher.step, higher.percentage) == (2, 60.0)
    with pytest.raises(PlanTransitionError, match="cannot resume"):
        resume(resumed, NOW + 61, exposure=25.0)


def test_rollback_and_step_back() -> None:
    plan = running(step=2)  # 50 %
    back = step_back(plan, "guard breached", NOW + 60, actor="driver")
    assert (back.status, back.step, back.percentage) == (PlanStatus.PAUSED, 1, 25.0)
    first = step_back(running(), "guard breached", NOW + 60, actor="driver")
    assert (first.step, first.percentage) == (-1, None)
    killed = rollback(plan, "guard breached", NOW + 60, actor="driver")
    assert (killed.status, killed.step, killed.percentage) == (PlanStatus.PAUSED, -1, None)
    # Resuming after a rollback starts again from the first step.
    again = resume(killed, NOW + 120, exposure=None)
    assert (again.status, again.step, again.percentage) == (PlanStatus.RUNNING, 0, 10.0)


def test_abort_and_restart_hold() -> None:
    plan = running(step=1)
    aborted = abort(plan, "flag deleted", NOW + 5, actor="alice")
    assert (aborted.status, aborted.percentage) == (PlanStatus.ABORTED, 25.0)
    disabled = abort(plan, "abort --rollback", NOW + 5, actor="alice", disable=True)
    assert disabled.percentage is None
    with pytest.raises(PlanTransitionError, match="aborted"):
        resume(aborted, NOW + 6, exposure=None)
    restarted = restart_hold(plan, NOW + 500)
    assert (restarted.hold_started_at, restarted.step_started_at) == (
        NOW + 500,
        plan.step_started_at,
    )
    with pytest.raises(PlanTransitionError, match="scheduled"):
        restart_hold(new_plan(spec(), NOW), NOW + 1)


def test_every_transition_bumps_the_version() -> None:
    plan = running()
    chain = [plan]
    chain.append(advance(chain[-1], NOW + 10))
    chain.append(pause(chain[-1], "x", NOW + 11, actor="a"))
    chain.append(resume(chain[-1], NOW + 12, exposure=25.0))
    chain.append(rollback(chain[-1], "x", NOW + 13, actor="driver"))
    chain.append(abort(chain[-1], "x", NOW + 14, actor="a"))
    assert [p.version for p in chain] == list(range(plan.version, plan.version + 6))


def test_the_record_round_trips_and_a_newer_format_is_refused() -> None:
    plan = running()
    assert decode_plan(msgspec.json.encode(plan)) == plan
    newer = msgspec.json.encode(msgspec.structs.replace(plan, format=PLAN_FORMAT + 1))
    with pytest.raises(RolloutError, match="upgrade"):
        decode_plan(newer)
    # Fields a newer release adds are ignored.
    data = msgspec.json.decode(msgspec.json.encode(plan))
    data["spec"]["future"] = 1
    data["future"] = {"x": 1}
    assert decode_plan(msgspec.json.encode(data)) == plan
    assert OnBreach("step-back") is OnBreach.STEP_BACK


def test_which_flags_may_have_a_plan() -> None:
    assert check_flag("a", Flag(enabled=True, percentage=20.0), has_plan=False) == 20.0
    assert check_flag("a", Flag(enabled=False, percentage=100.0), has_plan=False) is None
    with pytest.raises(RolloutError, match="unknown flag 'a'"):
        check_flag("a", None, has_plan=False)
    with pytest.raises(RolloutError, match="weights"):
        check_flag("a", Flag(enabled=True, weights={"on": 1, "off": 1}), has_plan=False)
    with pytest.raises(RolloutError, match="already has a plan"):
        check_flag("a", Flag(), has_plan=True)
