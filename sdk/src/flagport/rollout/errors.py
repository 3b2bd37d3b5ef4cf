"""Errors of the guarded-rollout core (docs/spec.md, "Guarded rollouts"). Each names the
problem; the server and the CLI translate them (400 / exit code 2) in one place each."""

from __future__ import annotations

from flagport._exceptions import FlagportError

__all__ = [
    "DurationError",
    "GuardSyntaxError",
    "OutcomeError",
    "PlanTransitionError",
    "RolloutError",
    "ScheduleError",
]


class RolloutError(FlagportError, ValueError):
    """Base of every error the rollout core raises: bad input, nothing changed."""


class DurationError(RolloutError):
    """A duration (``30m``, ``1h30m``) that is malformed or out of range."""


class GuardSyntaxError(RolloutError):
    """A guard rule that does not follow the grammar. ``position`` is the 0-based index in
    ``rule`` where the problem is; ``str(error)`` shows the rule with a caret under it."""

    def __init__(self, problem: str, rule: str, position: int) -> None:
        self.problem = problem
        self.rule = rule
        self.position = max(0, min(position, len(rule)))
        shown = rule if len(rule) <= 200 else rule[:200] + "..."
        caret = " " * min(self.position, len(shown)) + "^"
        super().__init__(
            f"invalid guard: {problem} (at column {self.position + 1})\n  {shown}\n  {caret}"
        )


class OutcomeError(RolloutError):
    """An outcome batch or item that is refused (negative counts, a histogram of the wrong
    size, a stale period, ...). ``index`` names the item or event when there is one."""

    def __init__(self, problem: str, *, where: str | None = None) -> None:
        self.problem = problem
        self.where = where
        super().__init__(problem if where is None else f"{where}: {problem}")


class ScheduleError(RolloutError):
    """Steps, a hold, a start time, a window or a time zone that cannot be used."""


class PlanTransitionError(RolloutError):
    """A plan transition that its current state does not allow (resume a running plan,
    advance a paused one, anything after completed or aborted)."""


class PrometheusError(RolloutError):
    """A promql guard that cannot be used: Prometheus refused its query (its own message
    follows), answered something that is not its HTTP API, or could not be reached."""
