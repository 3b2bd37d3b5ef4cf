"""Adoption stats over HTTP: exposure reports from in-process clients (evaluation scope) and
the admin API's per-flag report and stale-flag list. The counting itself is
:mod:`flagport_server.stats`."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from flagport.durations import DEFAULT_STATS_SINCE, hour_of, stats_window_start
from flagport.engine import CompiledFlag, Reason
from flagport.tally import counted_unit
from flagport_server.auth import SDK, TOKEN_REQUIRED, VIEWER, requires, scope_guard
from flagport_server.errors import InvalidInput, StoreUnavailable
from flagport_server.services import AdminService
from flagport_server.stats import StatsRecorder
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.wire.stats_v1 import (
    MAX_EXPOSURE_BODY,
    ExposureBatch,
    ExposureRejection,
    ExposureResponse,
    FlagState,
    FlagStats,
    SeriesPoint,
    StaleFlag,
    StaleReport,
    StatsChange,
    exposure_batch_problem,
    exposure_item_problem,
)

__all__ = ["exposures", "stats_router"]


def iso(at: float) -> str:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- exposures (evaluation scope) -----------------------------------------------------------


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
async def exposures(
    data: JSONBody[ExposureBatch], request: Request[Any, Any, State]
) -> ExposureResponse:
    """Items naming an unknown flag or variant, a count out of bounds or too many units are
    rejected one by one (listed in ``rejected``, with why); the others are counted, apart
    from what the server counted itself. Too many items or evaluations refuse the batch."""
    state = request.app.state
    snapshot = state.runtime.snapshot
    if snapshot is None:
        raise StoreUnavailable("no snapshot loaded yet; retry shortly")
    problem = exposure_batch_problem(data)
    if problem is not None:
        raise InvalidInput(problem, "$.exposures")
    recorder: StatsRecorder | None = state.stats if state.runtime.settings.stats else None
    now = time.time()
    rejected: list[ExposureRejection] = []
    counted = evaluations = 0
    for index, item in enumerate(data.exposures):
        compiled = snapshot.flag(item.key)
        if compiled is None:
            problem = f"unknown flag {item.key!r}"
        elif item.variant not in compiled.flag.variants:
            problem = f"flag {item.key!r} has no variant {item.variant!r}"
        else:
            problem = exposure_item_problem(item)
        if problem is not None:
            rejected.append(ExposureRejection(index=index, key=item.key, error=problem))
            continue
        units = [unit for u in item.units if (unit := counted_unit(u)) is not None]
        if recorder is not None:
            recorder.add(item.key, item.variant, item.count, units, now, reported=True)
        state.metrics.exposures.labels(item.key, item.variant).inc(item.count)
        counted += 1
        evaluations += item.count
    return ExposureResponse(counted=counted, evaluations=evaluations, rejected=rejected)


# -- admin ----------------------------------------------------------------------------------


def _service(request: Request[Any, Any, State]) -> AdminService:
    return request.app.state.service  # type: ignore[no-any-return]


def _changed(entry: AuditEntry) -> str | None:
    """ "off -> on, 10 % -> 50 %" for an entry that changed what a flag serves, else None."""
    before, after = entry.before, entry.after
    if after is not None and before is None:
        return f"created ({'on' if after.get('enabled') else 'off'}, {after.get('percentage')} %)"
    if before is not None and after is None:
        return "deleted"
    if before is None or after is None:
        return None
    parts = []
    if bool(before.get("enabled")) != bool(after.get("enabled")):
        parts.append("on" if after.get("enabled") else "off")
    old, new = before.get("percentage", 100), after.get("percentage", 100)
    if old != new:
        parts.append(f"{_pct(old)} % -> {_pct(new)} %")
    return ", ".join(parts) or None


def _pct(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{float(value):.3f}".rstrip("0").rstrip(".")
    return str(value)


def _serves_everyone(flag: CompiledFlag) -> str | None:
    """How the flag serves everyone alike, if its own settings do."""
    result = flag.serves_everyone
    if result is None:
        return None
    if result.reason is Reason.DISABLED:
        return "off for everyone (disabled)"
    state = "off" if result.variant == flag.off_variant else "on"
    return f"{state} for everyone ({_pct(flag.flag.percentage)} %)"


@get("/flags/{key:str}/stats", summary="Adoption: evaluations, unique units, series, changes")
async def flag_stats(
    key: FromPath[str],
    request: Request[Any, Any, State],
    since: Annotated[str, QueryParameter(required=False)] = DEFAULT_STATS_SINCE,
) -> FlagStats:
    """``since``: ``1h``, ``24h``, ``7d`` or an ISO-8601 date-time, rounded down to the hour,
    at most 7 days back."""
    now = time.time()
    try:
        start = stats_window_start(since, now)
    except ValueError as error:
        raise InvalidInput(str(error), "since") from None
    service = _service(request)
    flag, _ = await service.get_flag(key)
    until = hour_of(now) + 3600
    view = await service.store.stats(key, start, until, off_variant=flag.off_variant)
    entries = await service.store.audit(AuditQuery(key=key, since=iso(start), limit=1000))
    changes = [
        StatsChange(at=e.at, actor=e.actor, action=e.action, summary=summary, reason=e.reason)
        for e in reversed(entries)
        if (summary := _changed(e)) is not None
    ]
    seen = view.units_seen
    on = min(view.units_on, seen)
    return FlagStats(
        key=key,
        percentage=flag.percentage,
        enabled=on,
        adoption=round(on / seen, 4) if seen else None,
        evaluations=view.evaluations,
        unique_units=view.unique_units,
        units_seen=seen,
        total_evaluations=sum(view.evaluations.values()),
        since=iso(start),
        until=iso(min(until, now)),
        state=FlagState(
            enabled=flag.enabled,
            percentage=flag.percentage,
            version=flag.version,
            variants=list(flag.variants),
            on_variant=flag.on_variant,
            off_variant=flag.off_variant,
        ),
        first_seen=iso(view.first_seen) if view.first_seen is not None else None,
        last_seen=iso(view.last_seen) if view.last_seen is not None else None,
        series=[SeriesPoint(at=iso(minute), evaluations=counts) for minute, counts in view.series],
        changes=changes,
        stats_enabled=request.app.state.runtime.settings.stats,
        reported_evaluations=view.reported,
        total_reported_evaluations=sum(view.reported.values()),
    )


@get("/stale", summary="Flags not evaluated, or serving everyone alike, for a number of days")
async def stale(
    request: Request[Any, Any, State],
    days: Annotated[int, QueryParameter(required=False, ge=1, le=3650)] = 30,
) -> StaleReport:
    now = time.time()
    cutoff = now - days * 86400
    service = _service(request)
    document = await service.document()
    served = request.app.state.runtime.snapshot
    seen = await service.store.last_seen()
    last_change: dict[str, str] = {}
    before_id = None
    for _ in range(20):  # at most 20,000 entries: the newest changes are what matter
        page = await service.store.audit(
            AuditQuery(since=iso(cutoff), before_id=before_id, limit=1000)
        )
        for entry in page:
            if entry.kind == "flag" and _changed(entry) is not None:
                last_change.setdefault(entry.key, entry.at)
        if len(page) < 1000:
            break
        before_id = page[-1].id
    not_evaluated: list[StaleFlag] = []
    static: list[StaleFlag] = []
    for key, flag in sorted(document.flags.items()):
        created = flag.created_at
        if created is not None and dt.datetime.fromisoformat(created).timestamp() > cutoff:
            continue  # too new to judge
        record = seen.get(key)
        if record is None or record.last_seen < cutoff:
            not_evaluated.append(
                StaleFlag(
                    key=key,
                    why=f"not evaluated in {days} days"
                    if record
                    else "never evaluated (since stats were kept)",
                    enabled=flag.enabled,
                    percentage=flag.percentage,
                    last_seen=iso(record.last_seen) if record else None,
                )
            )
        compiled = served.flag(key) if served is not None else None
        serves = _serves_everyone(compiled) if compiled is not None else None
        if serves is not None and key not in last_change:
            static.append(
                StaleFlag(
                    key=key,
                    why=f"{serves} for {days} days or more",
                    enabled=flag.enabled,
                    percentage=flag.percentage,
                    last_seen=iso(record.last_seen) if record else None,
                    last_change=flag.updated_at,
                )
            )
    return StaleReport(days=days, since=iso(cutoff), not_evaluated=not_evaluated, static=static)


stats_router = Router(
    path="/admin/v1",
    guards=[scope_guard],
    opt=requires(VIEWER),  # reads only
    security=TOKEN_REQUIRED,
    tags=["admin"],
    route_handlers=[flag_stats, stale],
)
