"""The plan record and its state machine (docs/spec.md, "Guarded rollouts", Plans).

A plan is stored as one versioned record: ``version`` is bumped by every transition and is
the expected version of the commit that writes the next one, so two drivers can never both
take a step. ``format`` is the record's layout (readers refuse a newer one). States::

    scheduled --start--> running(step i, holding since t) --advance--> running(step i+1)
    running(last step) --complete--> completed
    scheduled | running --pause(reason)--> paused --resume--> running (the hold restarts)
    running --rollback / step-back (reason)--> paused
    anything but completed / aborted --abort(reason)--> aborted

Every function here is pure: it returns a new record (or raises
:class:`~flagport.rollout.errors.PlanTransitionError` naming why the transition is
impossible, and nothing changed) and takes ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import validate_key
from flagport.engine.models import Flag
from flagport.rollout.errors import PlanTransitionError, RolloutError, ScheduleError
from flagport.rollout.guards import Metric, needs_health_check, parse_guards
from flagport.rollout.promql import check_prometheus_url, substitute
from flagport.rollout.schedule import DailyWindow, check_steps, parse_window

__all__ = [
    "DEFAULT_HEALTH_INTERVAL",
    "DEFAULT_MAX_HOLD",
    "DEFAULT_MIN_SAMPLE",
    "PLAN_FORMAT",
    "OnBreach",
    "Plan",
    "PlanSpec",
    "PlanStatus",
    "abort",
    "advance",
    "check_flag",
    "check_spec",
    "complete",
    "decode_plan",
    "new_plan",
    "pause",
    "restart_hold",
    "resume",
    "rollback",
    "start",
    "step_back",
]

#: The layout of the stored record; a reader refuses a plan of a newer format.
PLAN_FORMAT: Final = 1
DEFAULT_MIN_SAMPLE: Final = 200
DEFAULT_MAX_HOLD: Final = 4 * 3600
DEFAULT_HEALTH_INTERVAL: Final = 30
_MAX_MIN_SAMPLE: Final = 10_000_000
_MAX_URL: Final = 2048


class PlanStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class OnBreach(enum.StrEnum):
    """What a breach does: the kill switch, the previous step, or only pause."""

    ROLLBACK = "rollback"
    STEP_BACK = "step-back"
    PAUSE = "pause"


class PlanSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a person asked for (``flags rollout start``). Times in seconds since the epoch,
    durations in seconds, guards as their canonical text."""

    key: str
    steps: tuple[float, ...]
    hold: int
    max_hold: int = DEFAULT_MAX_HOLD
    guards: tuple[str, ...] = ()
    on_breach: OnBreach = OnBreach.ROLLBACK
    min_sample: int = DEFAULT_MIN_SAMPLE
    vs_control: bool = False
    start_at: float | None = None
    window: DailyWindow | None = None
    health_url: str | None = None
    health_interval: int = DEFAULT_HEALTH_INTERVAL
    #: The Prometheus HTTP API base URL promql guards query (``--prometheus``).
    prometheus_url: str | None = None
    #: The flag's on variant when the plan was made (``$variant`` in promql guards); set
    #: by the server, which knows the flag.
    treatment_variant: str | None = None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The stored record. ``step`` indexes ``spec.steps`` (-1: no step is exposed, before
    the start or after a rollback or a step-back from the first step); ``percentage`` is
    the exposure the plan last set (None: the flag is disabled by the plan or untouched).
    ``hold_started_at`` is when the current step's hold (re)started. ``reason`` says why
    the plan is paused, completed or aborted, ``actor`` who did it (a token name, or
    ``driver`` for an automatic action)."""

    format: int = PLAN_FORMAT
    version: int
    spec: PlanSpec
    status: PlanStatus
    step: int = -1
    percentage: float | None = None
    step_started_at: float | None = None
    hold_started_at: float | None = None
    reason: str | None = None
    actor: str | None = None
    created_at: float
    updated_at: float

    @property
    def is_last_step(self) -> bool:
        return self.step == len(self.spec.steps) - 1

    @property
    def finished(self) -> bool:
        return self.status in (PlanStatus.COMPLETED, PlanStatus.ABORTED)


def decode_plan(data: bytes) -> Plan:
    """A stored plan (JSON). Unknown fields are ignored (a newer release may add some);
    a newer ``format`` is refused."""
    plan = msgspec.json.decode(data, type=Plan)
    if plan.format > PLAN_FORMAT:
        raise RolloutError(
            f"plan of {plan.spec.key!r} has format {plan.format}; this release reads "
            f"up to {PLAN_FORMAT}: upgrade"
        )
    return plan


def check_flag(key: str, flag: Flag | None, *, has_plan: bool) -> float | None:
    """Whether a plan may be put on ``flag`` (None: no such flag): not one with
    ``weights`` (a split into more than two variants has no control), not one that already
    has a plan. The answer is the percentage the first step may not be below (the flag's,
    if it is enabled; None if it is disabled: the plan enables it at the first step)."""
    if flag is None:
        raise RolloutError(f"unknown flag {key!r}")
    if flag.weights:
        raise RolloutError(
            f"flag {key!r} splits by weights: a plan needs an on and an off variant "
            "(treatment and control)"
        )
    if has_plan:
        raise RolloutError(f"flag {key!r} already has a plan (abort it first)")
    return flag.percentage if flag.enabled else None


def check_spec(spec: PlanSpec, now: float, *, enabled_percentage: float | None = None) -> PlanSpec:
    """``spec`` with its steps and guards in canonical form, or a :class:`RolloutError`
    naming the first problem. ``enabled_percentage`` is the flag's percentage if it is
    enabled (the first step may not be below it)."""
    try:
        validate_key(spec.key, "key")
    except InvalidDocumentError as error:
        raise RolloutError(error.problem) from None
    steps = check_steps(spec.steps, enabled_percentage)
    if spec.hold <= 0:
        raise ScheduleError(f"the hold must be positive, got {spec.hold} s")
    if spec.max_hold < spec.hold:
        raise ScheduleError(f"max-hold ({spec.max_hold} s) is shorter than the hold")
    guards = parse_guards(spec.guards)
    if not 1 <= spec.min_sample <= _MAX_MIN_SAMPLE:
        raise RolloutError(f"min-sample must be 1 to {_MAX_MIN_SAMPLE:,}, got {spec.min_sample}")
    if spec.start_at is not None and spec.start_at <= now:
        moment = datetime.fromtimestamp(spec.start_at, UTC).isoformat()
        raise ScheduleError(f"the start time {moment} is in the past")
    if spec.window is not None:
        parse_window(f"{spec.window.start}-{spec.window.end}", spec.window.tz)
    if spec.health_url is not None:
        _check_health_url(spec.health_url)
    elif needs_health_check(guards):
        raise RolloutError("health_failures (in the runbook) needs a health URL (--health-url)")
    if not 1 <= spec.health_interval <= 3600:
        raise ScheduleError(f"the health interval is 1 s to 1 h, got {spec.health_interval} s")
    prometheus = spec.prometheus_url
    if prometheus is not None:
        prometheus = check_prometheus_url(prometheus)
    queries = [guard.query or "" for guard in guards if guard.metric is Metric.PROMQL]
    if queries and prometheus is None:
        raise RolloutError("a promql(...) guard needs a Prometheus URL (--prometheus)")
    for query in queries:  # refuses a variant name that cannot be substituted safely
        substitute(query, flag=spec.key, variant=spec.treatment_variant or "on")
    return msgspec.structs.replace(
        spec,
        steps=steps,
        guards=tuple(str(guard) for guard in guards),
        prometheus_url=prometheus,
    )


def _check_health_url(url: str) -> None:
    if len(url) > _MAX_URL:
        raise RolloutError(f"the health URL is at most {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise RolloutError(f"invalid health URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RolloutError(f"the health URL must be http(s)://host/..., got {url!r}")


def new_plan(spec: PlanSpec, now: float, *, enabled_percentage: float | None = None) -> Plan:
    """A scheduled plan for a checked ``spec`` (version 1). The driver starts it when
    its start time and window allow (:func:`flagport.rollout.decision.decide`)."""
    checked = check_spec(spec, now, enabled_percentage=enabled_percentage)
    return Plan(
        version=1, spec=checked, status=PlanStatus.SCHEDULED, created_at=now, updated_at=now
    )


def _require(plan: Plan, action: str, allowed: Iterable[PlanStatus]) -> None:
    allowed = tuple(allowed)
    if plan.status not in allowed:
        wanted = " or ".join(status.value for status in allowed)
        raise PlanTransitionError(
            f"cannot {action} the plan of {plan.spec.key!r}: it is {plan.status.value} "
            f"(only a {wanted} plan can be)"
        )


def _next(plan: Plan, now: float, **changes: object) -> Plan:
    return msgspec.structs.replace(plan, version=plan.version + 1, updated_at=now, **changes)


def _at_step(plan: Plan, step: int, now: float, **changes: object) -> Plan:
    return _next(
        plan,
        now,
        status=PlanStatus.RUNNING,
        step=step,
        percentage=plan.spec.steps[step],
        step_started_at=now,
        hold_started_at=now,
        reason=None,
        actor=None,
        **changes,
    )


def start(plan: Plan, now: float) -> Plan:
    """Scheduled -> running at the first step (the flag is enabled at its percentage)."""
    _require(plan, "start", [PlanStatus.SCHEDULED])
    return _at_step(plan, 0, now)


def advance(plan: Plan, now: float) -> Plan:
    """Running at step i -> running at step i + 1, its hold starting now."""
    _require(plan, "advance", [PlanStatus.RUNNING])
    if plan.is_last_step:
        raise PlanTransitionError(
            f"cannot advance the plan of {plan.spec.key!r}: it is at its last step "
            "(it completes after that step's hold)"
        )
    return _at_step(plan, plan.step + 1, now)


def complete(plan: Plan, now: float) -> Plan:
    """Running at the last step, its hold passed -> completed."""
    _require(plan, "complete", [PlanStatus.RUNNING])
    if not plan.is_last_step:
        raise PlanTransitionError(
            f"cannot complete the plan of {plan.spec.key!r}: it is at step {plan.step + 1} "
            f"of {len(plan.spec.steps)}"
        )
    return _next(plan, now, status=PlanStatus.COMPLETED, reason="every step held", actor=None)


def pause(plan: Plan, reason: str, now: float, *, actor: str) -> Plan:
    """Scheduled or running -> paused, naming why and who (exposure unchanged)."""
    _require(plan, "pause", [PlanStatus.SCHEDULED, PlanStatus.RUNNING])
    return _next(plan, now, status=PlanStatus.PAUSED, reason=reason, actor=actor)


def rollback(plan: Plan, reason: str, now: float, *, actor: str) -> Plan:
    """Running or paused -> paused with the flag disabled (the kill switch): no step is
    exposed any more; a resume starts again from the first step."""
    _require(plan, "roll back", [PlanStatus.RUNNING, PlanStatus.PAUSED])
    return _next(
        plan,
        now,
        status=PlanStatus.PAUSED,
        step=-1,
        percentage=None,
        reason=reason,
        actor=actor,
    )


def step_back(plan: Plan, reason: str, now: float, *, actor: str) -> Plan:
    """Running -> paused at the previous step's percentage (lowering the percentage keeps
    the earlier cohort exactly: docs/spec.md section 1); from the first step the flag is
    disabled."""
    _require(plan, "step back", [PlanStatus.RUNNING])
    step = plan.step - 1
    return _next(
        plan,
        now,
        status=PlanStatus.PAUSED,
        step=step,
        percentage=plan.spec.steps[step] if step >= 0 else None,
        reason=reason,
        actor=actor,
    )


def resume(plan: Plan, now: float, *, exposure: float | None) -> Plan:
    """Paused -> running; the step's hold restarts now. Exposure is never lowered:
    ``exposure`` is the flag's percentage now (None: disabled), and the plan runs at the
    highest step not above it, at ``max(step, exposure)`` percent."""
    _require(plan, "resume", [PlanStatus.PAUSED])
    steps = plan.spec.steps
    current = exposure or 0.0
    reached = max((i for i, step in enumerate(steps) if step <= current), default=0)
    step = max(plan.step, reached, 0)
    return _next(
        plan,
        now,
        status=PlanStatus.RUNNING,
        step=step,
        percentage=max(steps[step], current),
        step_started_at=now if step != plan.step else plan.step_started_at or now,
        hold_started_at=now,
        reason=None,
        actor=None,
    )


def restart_hold(plan: Plan, now: float) -> Plan:
    """A running plan's hold starts again now: a driver taking over after downtime does
    not catch up on a hold nobody watched."""
    _require(plan, "restart the hold of", [PlanStatus.RUNNING])
    return _next(plan, now, hold_started_at=now)


def abort(plan: Plan, reason: str, now: float, *, actor: str, disable: bool = False) -> Plan:
    """Anything but completed or aborted -> aborted. ``disable`` (``abort --rollback``):
    the flag is disabled in the same commit."""
    _require(plan, "abort", [PlanStatus.SCHEDULED, PlanStatus.RUNNING, PlanStatus.PAUSED])
    changes: dict[str, object] = {"status": PlanStatus.ABORTED, "reason": reason, "actor": actor}
    if disable:
        changes.update(step=-1, percentage=None)
    return _next(plan, now, **changes)
