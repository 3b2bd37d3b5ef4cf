"""What the admin UI's page of one flag shows (``/ui/flags/{key}``), built from the admin
services: the flag (:class:`~flagport_server.services.AdminService`), its stats as charts
(:class:`~flagport_server.stats.reports.StatsService`), its audit trail, the approval policy
that guards it, and ``explain`` for a unit typed in. The one UI rule of its own is the
estimate of how many units a new percentage adds or removes (:func:`percentage_estimate`)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from flagport.durations import STATS_DAYS_KEPT, hour_of
from flagport.engine import Flag, check_percentage
from flagport_server.approval_policy import guarding_policy
from flagport_server.audit import change_summary
from flagport_server.errors import InvalidInput, document_errors_as_input
from flagport_server.services import AdminService
from flagport_server.stats.reports import StatsService
from flagport_server.stores.base import ApprovalPolicy, AuditEntry, AuditQuery
from flagport_server.ui.charts import Chart, dense_buckets, time_chart
from flagport_server.wire.stats_v1 import FlagStats

__all__ = [
    "AUDIT_PAGE",
    "ESTIMATE_WINDOW",
    "EVALUATION_WINDOWS",
    "MAX_UNIT",
    "AuditRow",
    "FlagPage",
    "PercentageEstimate",
    "flag_page_view",
    "parse_percentage",
    "percentage_estimate",
]

#: The evaluations chart's windows: (span, bucket) in seconds, from the per-minute series the
#: stats keep for 48 hours. Each draws at most 96 points per variant.
EVALUATION_WINDOWS: Final = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "48h": (48 * 3600, 1800),
}
DEFAULT_WINDOW: Final = "6h"
#: The unique-units chart: the hourly sketches of the stats' 7 days, merged per 6 hours (28
#: store reads a page).
UNITS_STEP: Final = 6 * 3600
#: The stats window of the percentage estimate (the units seen in it).
ESTIMATE_WINDOW: Final = f"{STATS_DAYS_KEPT}d"
#: Audit entries per page of the trail.
AUDIT_PAGE: Final = 20
#: Longest unit ``explain`` takes from the page (the stats count longer ones by digest).
MAX_UNIT: Final = 256


@dataclass(frozen=True)
class PercentageEstimate:
    """How many units a percentage change adds (positive) or removes (negative): the units
    seen over the stats window times the change of the share served on."""

    units: int
    units_seen: int
    before: float  # the share served on now: the percentage if enabled, else 0
    after: float
    window: str = ESTIMATE_WINDOW


def percentage_estimate(units_seen: int, flag: Flag, percentage: float) -> PercentageEstimate:
    """The estimate of enabling ``flag`` at ``percentage``, from ``units_seen`` (targets,
    rules and ancestors aside: it is the flag's own split that moves)."""
    before = flag.percentage if flag.enabled else 0.0
    return PercentageEstimate(
        units=round(units_seen * (percentage - before) / 100),
        units_seen=units_seen,
        before=before,
        after=percentage,
    )


def parse_percentage(text: str) -> float:
    """A percentage typed in a form (``12.5``, ``50 %``), checked by the engine's rule (0 to
    100, at most 3 decimals); :class:`InvalidInput` on the field ``percentage`` saying why."""
    cleaned = text.strip().removesuffix("%").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise InvalidInput(
            f"percentage must be a number from 0 to 100, such as 25 or 12.5, not {text[:32]!r}",
            "percentage",
        ) from None
    with document_errors_as_input():
        check_percentage(value, "percentage")
    return value


@dataclass(frozen=True)
class AuditRow:
    entry: AuditEntry
    #: What changed in what the flag serves ("off -> on, 10 % -> 50 %"), if anything.
    summary: str | None


@dataclass
class FlagPage:
    key: str
    flag: Flag
    stats: FlagStats
    window: str
    evaluations: Chart
    units: Chart
    audit: list[AuditRow]
    next_before_id: int | None
    policy: ApprovalPolicy | None
    unit: str
    explained: str | None
    #: The flag's targets and rules as the admin API's JSON (the forms' text).
    targets_json: str
    rules_json: str


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _moment(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def _changes(stats: FlagStats) -> list[tuple[float, str]]:
    return [
        (
            _moment(c.at),
            f"{c.at} {c.actor}: {c.action} ({c.summary})" + (f", {c.reason}" if c.reason else ""),
        )
        for c in stats.changes
    ]


async def flag_page_view(
    admin: AdminService,
    stats: StatsService,
    key: str,
    policies: Sequence[ApprovalPolicy],
    *,
    window: str = DEFAULT_WINDOW,
    before_id: int | None = None,
    unit: str = "",
) -> FlagPage:
    """Everything the page of flag ``key`` shows (:class:`NotFound` if there is none);
    ``policies``: the approval policies (the one guarding the flag is named)."""
    flag, _ = await admin.get_flag(key)
    report = await stats.flag_report(key, ESTIMATE_WINDOW)
    now = time.time()
    changes = _changes(report)
    span, step = EVALUATION_WINDOWS.get(window, EVALUATION_WINDOWS[DEFAULT_WINDOW])
    end = int(now // step + 1) * step
    series = [(_moment(point.at), point.evaluations) for point in report.series]
    evaluations = time_chart(
        "Evaluations per variant",
        f"per {step // 60} min over the last {window} (UTC)",
        dense_buckets(series, end - span, end, step),
        step,
        list(flag.variants),
        changes,
    )
    units_end = hour_of(now) + 3600
    units_start = units_end - STATS_DAYS_KEPT * 86400
    units = time_chart(
        "Unique units per variant",
        f"per {UNITS_STEP // 3600} h over the last {STATS_DAYS_KEPT} days (UTC)",
        await stats.unique_units_series(key, units_start, units_end, UNITS_STEP, flag.off_variant),
        UNITS_STEP,
        list(flag.variants),
        changes,
    )
    entries = await admin.audit(AuditQuery(key=key, before_id=before_id, limit=AUDIT_PAGE))
    explained = None
    unit = unit[:MAX_UNIT]
    if unit:
        trace: dict[str, Any] = admin.explain(key, {"targetingKey": unit})
        explained = _json(trace)
    return FlagPage(
        key=key,
        flag=flag,
        stats=report,
        window=window if window in EVALUATION_WINDOWS else DEFAULT_WINDOW,
        evaluations=evaluations,
        units=units,
        audit=[AuditRow(entry, change_summary(entry)) for entry in entries],
        next_before_id=entries[-1].id if len(entries) == AUDIT_PAGE else None,
        policy=guarding_policy(policies, key, flag),
        unit=unit,
        explained=explained,
        targets_json=_json(flag.targets),
        rules_json=_json(flag.rules),
    )
