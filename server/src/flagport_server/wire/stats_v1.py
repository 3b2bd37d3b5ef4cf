"""Stats wire models: ``POST /v1/exposures`` (evaluation scope) and the admin API's
``GET /admin/v1/flags/{key}/stats`` and ``GET /admin/v1/stale``."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = [
    "MAX_EXPOSURE_BODY",
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
]

#: Bounds of one exposure batch: items, units per item, body bytes.
MAX_EXPOSURE_ITEMS: Final = 1000
MAX_EXPOSURE_UNITS: Final = 1000
MAX_EXPOSURE_BODY: Final = 1024 * 1024
#: Largest count one item may carry (a client sends a few seconds' worth).
MAX_EXPOSURE_COUNT: Final = 1_000_000_000


class ExposureItem(msgspec.Struct, forbid_unknown_fields=True):
    """Evaluations an in-process client made of one flag and variant since its last report."""

    key: str
    variant: str
    count: int
    #: The units (``context[bucket_by]``) served that variant; at most 1000 per item.
    units: list[str | int] = []


class ExposureBatch(msgspec.Struct, forbid_unknown_fields=True):
    exposures: Annotated[
        list[ExposureItem],
        msgspec.Meta(description="At most 1000 items; the body at most 1 MiB."),
    ]


class ExposureRejection(msgspec.Struct):
    index: int
    key: str | None
    error: str


class ExposureResponse(msgspec.Struct):
    """``counted``: items added to the stats; ``rejected``: the others, each with why.
    The status is 200 whenever the batch itself could be read: check ``rejected``."""

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
    any unit was seen); unique counts are HyperLogLog estimates (about 0.8 % error)."""

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
