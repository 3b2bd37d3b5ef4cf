"""Outcome signals on the wire: ``POST /v1/outcomes`` (sdk scope). The batch's shape, its
bounds and its validation are the rollout core's (:mod:`flagport.rollout.outcomes`, shared
with every client that sends it); this is the answer."""

from __future__ import annotations

import msgspec

from flagport.rollout.limits import MAX_OUTCOME_BODY
from flagport.rollout.outcomes import OutcomeBatch, OutcomeRejection

__all__ = ["MAX_OUTCOME_BODY", "OutcomeBatch", "OutcomeRejection", "OutcomeResponse"]


class OutcomeResponse(msgspec.Struct):
    """``counted``: items and events counted; ``requests``: the requests those items
    reported; ``events``: the events those event items reported; ``rejected``: every item
    and event refused, with why (an unknown flag or variant, counts that do not add up, a
    stale period, ...), none of them counted."""

    counted: int
    requests: int
    events: int
    rejected: list[OutcomeRejection]
