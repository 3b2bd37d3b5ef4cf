"""The stats the API serves: exposure reports from in-process clients (evaluation scope), and
the admin API's per-flag report and stale-flag list, from the store."""

from __future__ import annotations

import datetime as dt
import time

from flagport.durations import DEFAULT_STATS_SINCE, stats_window_start
from flagport.engine import CompiledFlag, Reason
from flagport.tally import counted_unit
from flagport_server.audit import audit_entry, change_summary, percentage_text
from flagport_server.errors import InvalidInput, StoreUnavailable
from flagport_server.metrics import Metrics
from flagport_server.plans import DRIVER_ACTOR
from flagport_server.services import AdminService, utc_now
from flagport_server.stats.recorder import StatsRecorder, hour_of
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.wire.stats_v1 import (
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

__all__ = ["DEFAULT_SINCE", "STALE_NOTICE", "StatsService", "iso", "parse_since"]

DEFAULT_SINCE = DEFAULT_STATS_SINCE
#: The action of the notice the daily check writes for a newly stale flag (its event).
STALE_NOTICE = "flag.stale"
#: Notices committed together at most.
_NOTICES_PER_COMMIT = 500


def iso(at: float) -> str:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_since(text: str, now: float) -> int:
    """The start of the window: ``since`` read by the one reading of "since" values
    (:func:`flagport.durations.stats_window_start`), its error an HTTP 400 on ``since``."""
    try:
        return stats_window_start(text, now)
    except ValueError as error:
        raise InvalidInput(str(error), "since") from None


def _serves_everyone(flag: CompiledFlag) -> str | None:
    """How the flag serves everyone alike, if its own settings do."""
    result = flag.serves_everyone
    if result is None:
        return None
    if result.reason is Reason.DISABLED:
        return "off for everyone (disabled)"
    state = "off" if result.variant == flag.off_variant else "on"
    return f"{state} for everyone ({percentage_text(flag.flag.percentage)} %)"


class StatsService:
    """One per app: the exposures intake and the stats reports."""

    def __init__(
        self, admin: AdminService, metrics: Metrics, recorder: StatsRecorder | None
    ) -> None:
        self.admin = admin
        self.runtime = admin.runtime
        self.store = admin.store
        self.metrics = metrics
        #: ``None`` under ``--no-stats``: exposures reach Prometheus only.
        self.recorder = recorder

    async def record_exposures(self, batch: ExposureBatch) -> ExposureResponse:
        """Items naming an unknown flag or variant, a count out of bounds or too many units
        are rejected one by one (listed in ``rejected``, with why); the others are counted,
        apart from what the server counted itself. Too many items or evaluations refuse the
        batch."""
        snapshot = self.runtime.snapshot
        if snapshot is None:
            raise StoreUnavailable("no snapshot loaded yet; retry shortly")
        problem = exposure_batch_problem(batch)
        if problem is not None:
            raise InvalidInput(problem, "$.exposures")
        recorder = self.recorder
        now = time.time()
        rejected: list[ExposureRejection] = []
        counted = evaluations = 0
        for index, item in enumerate(batch.exposures):
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
            self.metrics.exposures.labels(item.key, item.variant).inc(item.count)
            counted += 1
            evaluations += item.count
        return ExposureResponse(counted=counted, evaluations=evaluations, rejected=rejected)

    async def flag_report(self, key: str, since: str) -> FlagStats:
        """Adoption of flag ``key`` since ``since`` (see :func:`parse_since`)."""
        now = time.time()
        start = parse_since(since, now)
        flag, _ = await self.admin.get_flag(key)
        until = hour_of(now) + 3600
        view = await self.store.stats(key, start, until, off_variant=flag.off_variant)
        entries = await self.store.audit(AuditQuery(key=key, since=iso(start), limit=1000))
        changes = [
            StatsChange(at=e.at, actor=e.actor, action=e.action, summary=summary, reason=e.reason)
            for e in reversed(entries)
            if (summary := change_summary(e)) is not None
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
            series=[
                SeriesPoint(at=iso(minute), evaluations=counts) for minute, counts in view.series
            ],
            changes=changes,
            stats_enabled=self.recorder is not None,
            reported_evaluations=view.reported,
            total_reported_evaluations=sum(view.reported.values()),
        )

    async def unique_units_series(
        self, key: str, start: int, until: int, step: int, off_variant: str | None = None
    ) -> list[tuple[int, dict[str, int]]]:
        """Unique units per variant in each ``step``-second bucket of ``[start, until)``
        (hours: ``start`` and ``step`` multiples of 3600): each bucket the union of its hourly
        sketches, so a unit seen in two hours of one bucket counts once. One store read per
        bucket: callers keep the buckets few (the admin UI's chart reads 28)."""
        buckets = []
        for bucket in range(start, until, step):
            view = await self.store.stats(key, bucket, min(bucket + step, until), off_variant)
            buckets.append((bucket, dict(view.unique_units)))
        return buckets

    async def stale_report(self, days: int) -> StaleReport:
        """Flags not evaluated, or serving everyone alike, for ``days`` days or more."""
        now = time.time()
        cutoff = now - days * 86400
        document = await self.admin.document()
        served = self.runtime.snapshot
        seen = await self.store.last_seen()
        last_change: dict[str, str] = {}
        before_id = None
        for _ in range(20):  # at most 20,000 entries: the newest changes are what matter
            page = await self.store.audit(
                AuditQuery(since=iso(cutoff), before_id=before_id, limit=1000)
            )
            for entry in page:
                if entry.kind == "flag" and change_summary(entry) is not None:
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

    async def write_stale_notices(self, days: int) -> int:
        """The daily check: a ``notice`` audit entry (action ``flag.stale``, the flag's body
        as ``after``, why as the reason) for each flag of :meth:`stale_report` that has
        none for the time it has been stale: once per flag while it stays stale, again
        once it was changed or evaluated since its last notice and is stale anew. How many
        were written."""
        report = await self.stale_report(days)
        stale: dict[str, str] = {}
        for item in (*report.not_evaluated, *report.static):
            stale.setdefault(item.key, item.why)
        if not stale:
            return 0
        document = await self.admin.document()
        seen = await self.store.last_seen()
        now = utc_now()
        notices: list[AuditEntry] = []
        for key, why in stale.items():
            flag = document.flags.get(key)
            if flag is None or await self._noticed(key, seen.get(key)):
                continue
            notices.append(
                audit_entry(
                    DRIVER_ACTOR, STALE_NOTICE, key, now, kind="notice", reason=why, after=flag
                )
            )
        for start in range(0, len(notices), _NOTICES_PER_COMMIT):
            await self.admin.record_entries(notices[start : start + _NOTICES_PER_COMMIT])
        return len(notices)

    async def _noticed(self, key: str, seen: object) -> bool:
        """Whether flag ``key`` has a stale notice with no change of the flag and no
        evaluation after it."""
        entries = await self.store.audit(AuditQuery(key=key, limit=50))
        for entry in entries:  # newest first
            if entry.kind == "flag":
                return False  # changed since any notice
            if entry.kind == "notice" and entry.action == STALE_NOTICE:
                noticed = dt.datetime.fromisoformat(entry.at).timestamp()
                last_seen = getattr(seen, "last_seen", None)
                return last_seen is None or last_seen <= noticed
        return False
