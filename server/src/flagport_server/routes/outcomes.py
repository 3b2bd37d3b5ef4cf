"""Outcome signals over HTTP (docs/spec.md, "Guarded rollouts", Outcome signals): what the
SDK middleware and the PHP bridge report for the plans' cohorts. ``sdk`` scope, never
cross-origin (not part of the evaluation surface). The counting is
:mod:`flagport_server.outcomes`."""

from __future__ import annotations

from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from flagport_server.auth import SDK, requires, scope_guard
from flagport_server.outcomes import OutcomeService
from flagport_server.wire.outcomes_v1 import MAX_OUTCOME_BODY, OutcomeBatch, OutcomeResponse

__all__ = ["outcomes"]

#: The app's OutcomeService, injected by name (``create_app``'s dependencies).
OutcomeSignals = NamedDependency[OutcomeService]


@post(
    "/v1/outcomes",
    status_code=200,
    name="outcomes",
    summary="Report requests and events per rollout cohort (batched; see `rejected`)",
    tags=["evaluation"],
    guards=[scope_guard],
    opt=requires(SDK),
    request_max_body_size=MAX_OUTCOME_BODY,
)
async def outcomes(
    data: JSONBody[OutcomeBatch], outcome_signals: OutcomeSignals
) -> OutcomeResponse:
    """Items and events naming an unknown flag or variant, counts out of bounds or a
    histogram that does not add up are rejected one by one (listed in ``rejected``, with
    why); a period that ended more than 120 s ago (or ends in the future) rejects all of
    them; the others are counted. More than 1,000 items or events refuse the batch (400);
    503 while this worker's outcomes wait for the store (retry later)."""
    return await outcome_signals.record(data)
