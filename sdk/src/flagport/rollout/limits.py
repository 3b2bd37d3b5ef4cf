"""Bounds of the guarded-rollout inputs, one home for the grammar, the outcome wire shape
and the plan record (docs/spec.md, "Guarded rollouts"). Anyone holding an ``sdk`` token can
post outcomes, so every size is bounded; the batch bounds are those of ``/v1/exposures``
(:mod:`flagport.exposures`: 1,000 items, 1 MiB), imported from there."""

from __future__ import annotations

from typing import Final

from flagport.exposures import MAX_EXPOSURE_BODY, MAX_EXPOSURE_COUNT, MAX_EXPOSURE_ITEMS

__all__ = [
    "LATENCY_BOUNDS_MS",
    "MAX_EVENT_COUNT",
    "MAX_EVENT_NAME_LENGTH",
    "MAX_GUARDS",
    "MAX_GUARD_LENGTH",
    "MAX_LABELS",
    "MAX_LABEL_NAME_LENGTH",
    "MAX_LABEL_VALUE_LENGTH",
    "MAX_OUTCOME_BODY",
    "MAX_OUTCOME_EVENTS",
    "MAX_OUTCOME_ITEMS",
    "MAX_PERIOD_AGE_SECONDS",
    "MAX_PERIOD_SECONDS",
    "MAX_REQUESTS",
    "MAX_STEPS",
    "MAX_VARIANT_LENGTH",
    "MAX_WINDOW_SECONDS",
    "MIN_WINDOW_SECONDS",
]

#: Upper bounds (ms) of the 13 latency buckets; the last is +inf. A request of d ms falls in
#: the first bucket whose bound is >= d. Fixed, so histograms merge exactly everywhere.
LATENCY_BOUNDS_MS: Final[tuple[float, ...]] = (
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2000.0,
    2500.0,
    5000.0,
    10000.0,
    float("inf"),
)

#: One outcome batch: items, events, body bytes (as ``/v1/exposures``).
MAX_OUTCOME_ITEMS: Final = MAX_EXPOSURE_ITEMS
MAX_OUTCOME_EVENTS: Final = MAX_EXPOSURE_ITEMS
MAX_OUTCOME_BODY: Final = MAX_EXPOSURE_BODY
#: Requests one item may report (as an exposure item's count), events one event item may.
MAX_REQUESTS: Final = MAX_EXPOSURE_COUNT
MAX_EVENT_COUNT: Final = MAX_EXPOSURE_COUNT
#: A period is at most this long, and must have ended at most this long before ``now``.
MAX_PERIOD_SECONDS: Final = 120
MAX_PERIOD_AGE_SECONDS: Final = 120

#: A variant name, as a flag's (docs/spec.md section 3).
MAX_VARIANT_LENGTH: Final = 100
#: Event names and labels, in guards and in outcome events alike.
MAX_EVENT_NAME_LENGTH: Final = 64
MAX_LABELS: Final = 8
MAX_LABEL_NAME_LENGTH: Final = 64
MAX_LABEL_VALUE_LENGTH: Final = 256

#: One guard rule's length (a promql query included), guards per plan, steps per plan.
MAX_GUARD_LENGTH: Final = 1000
MAX_GUARDS: Final = 20
MAX_STEPS: Final = 20
#: A guard's window: whole minutes, 1 minute to 24 hours (outcomes are kept 48 hours).
MIN_WINDOW_SECONDS: Final = 60
MAX_WINDOW_SECONDS: Final = 24 * 3600
