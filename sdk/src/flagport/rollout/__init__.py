"""Guarded rollouts, the pure core (docs/spec.md, "Guarded rollouts"). No I/O and no clock:
every function that needs the time takes ``now``. The engine never imports this package.

- :mod:`~flagport.rollout.guards`: the guard grammar (``parse_guard``, ``parse_guards``
  with ``runbook``), canonical text;
- :mod:`~flagport.rollout.outcomes`: the ``POST /v1/outcomes`` wire shape, its validation,
  the exact per-minute aggregate and window readings;
- :mod:`~flagport.rollout.decision`: ``decide`` after every drain, with evidence;
  :mod:`~flagport.rollout.sequential`: the ``--vs-control`` test;
- :mod:`~flagport.rollout.schedule`: steps, holds, ``--start-at``, daily windows;
- :mod:`~flagport.rollout.plan`: the versioned plan record and its transitions;
- :mod:`~flagport.rollout.durations`, :mod:`~flagport.rollout.limits`,
  :mod:`~flagport.rollout.errors`.
"""

from __future__ import annotations

from flagport.rollout.decision import Decision, DecisionKind, Evidence, Readings, decide
from flagport.rollout.errors import (
    DurationError,
    GuardSyntaxError,
    OutcomeError,
    PlanTransitionError,
    RolloutError,
    ScheduleError,
)
from flagport.rollout.guards import Guard, parse_guard, parse_guards
from flagport.rollout.outcomes import Cohort, OutcomeAggregate, OutcomeBatch
from flagport.rollout.plan import OnBreach, Plan, PlanSpec, PlanStatus

__all__ = [
    "Cohort",
    "Decision",
    "DecisionKind",
    "DurationError",
    "Evidence",
    "Guard",
    "GuardSyntaxError",
    "OnBreach",
    "OutcomeAggregate",
    "OutcomeBatch",
    "OutcomeError",
    "Plan",
    "PlanSpec",
    "PlanStatus",
    "PlanTransitionError",
    "Readings",
    "RolloutError",
    "ScheduleError",
    "decide",
    "parse_guard",
    "parse_guards",
]
