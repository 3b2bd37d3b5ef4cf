"""Stats wire models: ``POST /v1/exposures`` (evaluation scope: its shape and bounds are the
SDK's :mod:`flagport.exposures`, shared with the in-process clients that send it) and the
admin API's ``GET /admin/v1/flags/{key}/stats`` and ``GET /admin/v1/stale``."""

from __future__ import annotations

import msgspec

from flagport.exposures import (
    MAX_EXPOSURE_BATCH_EVALUATIONS,
    MAX_EXPOSURE_BODY,
    MAX_EXPOSURE_COUNT,
    MAX_EXPOSURE_ITEMS,
    MAX_EXPOSURE_UNITS,
    ExposureBatch,
    ExposureItem,
    ExposureRejection,
    ExposureResponse,
    exposure_batch_problem,
    exposure_item_problem,
)

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
