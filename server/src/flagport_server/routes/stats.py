"""Adoption stats over HTTP: exposure reports from in-process clients (evaluation scope) and
the admin API's per-flag report and stale-flag list. The counting is
:mod:`flagport_server.stats`; what these routes answer, :mod:`flagport_server.stats.reports`."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from flagport_server.auth import SDK, TOKEN_REQUIRED, VIEWER, requires, scope_guard
from flagport_server.stats.reports import DEFAULT_SINCE, StatsService
from flagport_server.wire.stats_v1 import (
    MAX_EXPOSURE_BODY,
    ExposureBatch,
    ExposureResponse,
    FlagStats,
    StaleReport,
)

__all__ = ["exposures", "stats_router"]

#: The app's StatsService, injected by name (``create_app``'s dependencies).
Stats = NamedDependency[StatsService]


@post(
    "/v1/exposures",
    status_code=200,
    name="exposures",
    summary="Report evaluations made in process (batched; see `rejected` in the answer)",
    tags=["evaluation"],
    guards=[scope_guard],
    opt=requires(SDK),
    request_max_body_size=MAX_EXPOSURE_BODY,
)
async def exposures(data: JSONBody[ExposureBatch], stats: Stats) -> ExposureResponse:
    """Items naming an unknown flag or variant, a count out of bounds or too many units are
    rejected one by one (listed in ``rejected``, with why); the others are counted, apart
    from what the server counted itself. Too many items or evaluations refuse the batch."""
    return await stats.record_exposures(data)


@get("/flags/{key:str}/stats", summary="Adoption: evaluations, unique units, series, changes")
async def flag_stats(
    key: FromPath[str],
    stats: Stats,
    since: Annotated[str, QueryParameter(required=False)] = DEFAULT_SINCE,
) -> FlagStats:
    """``since``: ``1h``, ``24h``, ``7d`` or an ISO-8601 date-time, rounded down to the hour,
    at most 7 days back."""
    return await stats.flag_report(key, since)


@get("/stale", summary="Flags not evaluated, or serving everyone alike, for a number of days")
async def stale(
    stats: Stats,
    days: Annotated[int, QueryParameter(required=False, ge=1, le=3650)] = 30,
) -> StaleReport:
    return await stats.stale_report(days)


stats_router = Router(
    path="/admin/v1",
    guards=[scope_guard],
    opt=requires(VIEWER),  # reads only
    security=TOKEN_REQUIRED,
    tags=["admin"],
    route_handlers=[flag_stats, stale],
)
