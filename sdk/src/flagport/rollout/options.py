"""A plan's options as a person writes them (``flags rollout start``'s options, the admin
API's ``POST /admin/v1/rollouts`` body) and their one reading into a
:class:`~flagport.rollout.plan.PlanSpec` (docs/spec.md, "Guarded rollouts"). Pure: ``now``
is given. The CLI reads them before any request (a mistake exits 2) and the server again
(it answers 400): the same function, the same words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

import msgspec

from flagport.rollout.durations import parse_duration
from flagport.rollout.errors import DurationError, RolloutError, ScheduleError
from flagport.rollout.plan import DEFAULT_HEALTH_INTERVAL, DEFAULT_MIN_SAMPLE, OnBreach, PlanSpec
from flagport.rollout.schedule import (
    DEFAULT_STEPS,
    parse_hold,
    parse_max_hold,
    parse_start_at,
    parse_steps,
    parse_time_zone,
    parse_window,
)

__all__ = ["DEFAULT_HOLD", "PlanOptions", "plan_spec"]

DEFAULT_HOLD: Final = "30m"
_Text = Annotated[str, msgspec.Meta(max_length=2048)]


class PlanOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``flags rollout start KEY [--steps 10,25,50,100] [--hold 30m] [--start-at ...]
    [--tz ZONE] [--window 02:00-04:00] [--guard RULE ...] [--on-breach ...]
    [--min-sample N] [--vs-control] [--max-hold 4h] [--health-url URL]
    [--health-interval 30s] [--prometheus URL]``, as text."""

    key: Annotated[str, msgspec.Meta(max_length=512)]
    steps: _Text | None = None
    hold: _Text = DEFAULT_HOLD
    max_hold: _Text | None = None
    start_at: _Text | None = None
    tz: _Text | None = None
    window: _Text | None = None
    guards: Annotated[list[_Text], msgspec.Meta(max_length=100)] = []
    on_breach: _Text = OnBreach.ROLLBACK.value
    min_sample: int = DEFAULT_MIN_SAMPLE
    vs_control: bool = False
    health_url: _Text | None = None
    health_interval: _Text | None = None
    prometheus: _Text | None = None


def plan_spec(options: PlanOptions, now: float) -> PlanSpec:
    """The spec ``options`` ask for, or a :class:`RolloutError` naming the first problem.
    What needs the flag (its percentage, weights, an existing plan) is checked by
    :func:`~flagport.rollout.plan.check_flag` and :func:`~flagport.rollout.plan.new_plan`."""
    moment = datetime.fromtimestamp(now, UTC)
    if options.tz is not None:
        parse_time_zone(options.tz)
    steps = parse_steps(options.steps) if options.steps is not None else DEFAULT_STEPS
    hold = parse_hold(options.hold)
    max_hold = parse_max_hold(options.max_hold, hold) if options.max_hold is not None else None
    start_at = (
        parse_start_at(options.start_at, options.tz, moment).timestamp()
        if options.start_at is not None
        else None
    )
    window = parse_window(options.window, options.tz) if options.window is not None else None
    try:
        on_breach = OnBreach(options.on_breach)
    except ValueError:
        choices = ", ".join(kind.value for kind in OnBreach)
        raise RolloutError(
            f"--on-breach must be one of {choices}, got {options.on_breach!r}"
        ) from None
    interval = DEFAULT_HEALTH_INTERVAL
    if options.health_interval is not None:
        try:
            interval = parse_duration(options.health_interval)
        except DurationError as error:
            raise ScheduleError(f"--health-interval: {error}") from None
    spec = PlanSpec(
        key=options.key,
        steps=steps,
        hold=hold,
        guards=tuple(options.guards),
        on_breach=on_breach,
        min_sample=options.min_sample,
        vs_control=options.vs_control,
        start_at=start_at,
        window=window,
        health_url=options.health_url,
        health_interval=interval,
        prometheus_url=options.prometheus,
    )
    if max_hold is not None:
        spec = msgspec.structs.replace(spec, max_hold=max_hold)
    elif spec.max_hold < hold:
        spec = msgspec.structs.replace(spec, max_hold=hold)
    return spec
