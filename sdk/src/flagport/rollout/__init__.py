"""Guarded rollouts, the pure core (docs/spec.md, "Guarded rollouts"): the guard grammar,
outcome signals and their window readings, the decision taken after every drain, schedules
and the plan record with its transitions. No I/O and no clock: every function that needs
the time takes ``now``. The engine never imports this package."""
