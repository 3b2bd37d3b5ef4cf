"""Stats wire models: ``POST /v1/exposures`` (evaluation scope) and the admin API's
``GET /admin/v1/flags/{key}/stats`` and ``GET /admin/v1/stale``."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH

__all__ = [
    "MAX_EXPOSURE_BATCH_EVALUATIONS",
    "MAX_EXPOSURE_BODY",
    "MAX_EXPOSURE_COUNT",
    "MAX_EXPOSURE_ITEMS",
    "MAX_EXPOSURE_UNITS",
    "ExposureBatch",
    "ExposureItem",
    "ExposureRejection",
    "ExposureResponse",
    "FlagState",
    "FlagStats",
    "SeriesPoint",
    "StaleFlag",
    "StaleReport",
    "StatsChange",
    "exposure_batch_problem",
    "exposure_item_problem",
]

#: Bounds of one exposure batch: items, units per item, body bytes.
MAX_EXPOSURE_ITEMS: Final = 1000
MAX_EXPOSURE_UNITS: Final = 1000
MAX_EXPOSURE_BODY: Final = 1024 * 1024
#: Evaluations one item may report, and one batch: a client sends a few seconds' worth, and
#: splits more (``LocalClient`` does). Anyone holding an evaluation token can report
#: exposures, so these bound what one request can add to the stats (``flags stats`` shows the
#: reported part apart from what the server counted itself).
MAX_EXPOSURE_COUNT: Final = 1_000_000
MAX_EXPOSURE_BATCH_EVALUATIONS: Final = 10_000_000


class ExposureItem(msgspec.Struct, forbid_unknown_fields=True):
    """Evaluations an in-process client made of one flag and variant since its last report."""

    #: A flag key (a key that can name no flag is a broken client: the batch is refused).
    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH)]
    variant: str
    count: Annotated[int, msgspec.Meta(description=f"0 to {MAX_EXPOSURE_COUNT:,}")]
    #: The units (``context[bucket_by]``) served that variant; at most 1000 per item.
    units: list[str | int] = []


class ExposureBatch(msgspec.Struct, forbid_unknown_fields=True):
    exposures: Annotated[
        list[ExposureItem],
        msgspec.Meta(
            description=f"At most {MAX_EXPOSURE_ITEMS:,} items and "
            f"{MAX_EXPOSURE_BATCH_EVALUATIONS:,} evaluations in all; the body at most 1 MiB."
        ),
    ]


def exposure_batch_problem(batch: ExposureBatch) -> str | None:
    """Why the whole batch is refused (400), if it is: too many items or evaluations."""
    items = batch.exposures
    if len(items) > MAX_EXPOSURE_ITEMS:
        return f"{len(items)} exposure items: at most {MAX_EXPOSURE_ITEMS} per batch (split it)"
    total = sum(item.count for item in items if exposure_item_problem(item) is None)
    if total > MAX_EXPOSURE_BATCH_EVALUATIONS:
        return (
            f"{total:,} evaluations in one batch: at most {MAX_EXPOSURE_BATCH_EVALUATIONS:,} "
            "(split it)"
        )
    return None


def exposure_item_problem(item: ExposureItem) -> str | None:
    """Why one item is rejected whatever the flags are (it is listed in ``rejected``)."""
    if item.count < 0:
        return f"count must be at least 0, got {item.count}"
    if item.count > MAX_EXPOSURE_COUNT:
        return f"count must be at most {MAX_EXPOSURE_COUNT:,}, got {item.count:,} (split it)"
    if len(item.units) > MAX_EXPOSURE_UNITS:
        return f"{len(item.units)} units: at most {MAX_EXPOSURE_UNITS} per item (split it)"
    return None


class ExposureRejection(msgspec.Struct):
    index: int
    key: str | None
    error: str


class ExposureResponse(msgspec.Struct):
    """``counted``: items added to the stats; ``rejected``: the others, each with why.
    The status is 200 whenever the batch itself is acceptable: check ``rejected``."""

    counted: int
    evaluations: int
    rejected: list[ExposureRejection]


class FlagState(msgspec.Struct):
    enabled: bool
    percentage: float
    version: int
    variants: list[str]
    on_variant: str
    off_variant: str


class SeriesPoint(msgspec.Struct):
    at: str  # the minute, ISO-8601 UTC
    evaluations: dict[str, int]


class StatsChange(msgspec.Struct, omit_defaults=True):
    at: str
    actor: str
    action: str
    summary: str
    reason: str | None = None


class FlagStats(msgspec.Struct):
    """One flag's adoption over ``[since, until)``. ``enabled``: distinct units served any
    variant but the off variant; ``adoption``: ``enabled / units_seen`` (``null`` before
    any unit was seen); unique counts are HyperLogLog estimates (about 0.8 % error).
    ``evaluations`` counts every evaluation; ``reported_evaluations`` is the part of it
    in-process clients reported (``POST /v1/exposures``, per variant: the rest the server
    counted itself), ``total_reported_evaluations`` its sum."""

    key: str
    percentage: float
    enabled: int
    adoption: float | None
    evaluations: dict[str, int]
    unique_units: dict[str, int]
    units_seen: int
    total_evaluations: int
    since: str
    until: str
    state: FlagState
    first_seen: str | None
    last_seen: str | None
    series: list[SeriesPoint]
    changes: list[StatsChange]
    stats_enabled: bool
    reported_evaluations: dict[str, int] = {}
    total_reported_evaluations: int = 0


class StaleFlag(msgspec.Struct, omit_defaults=True):
    key: str
    why: str
    enabled: bool
    percentage: float
    last_seen: str | None = None
    last_change: str | None = None


class StaleReport(msgspec.Struct):
    """``not_evaluated``: no evaluation since ``since``; ``static``: served the same to
    everyone (off, or on at 0 % / 100 % with no targets or rules) since ``since``."""

    days: int
    since: str
    not_evaluated: list[StaleFlag]
    static: list[StaleFlag]
