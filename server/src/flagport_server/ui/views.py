"""What the admin UI's pages show, built from the admin services (no rule of its own: the
flags come from :class:`~flagport_server.services.AdminService`, the plans and their guard
readings from :class:`~flagport_server.plans.PlanService`, health from
:class:`~flagport_server.operations.Operations`)."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Final

from flagport.engine import Flag
from flagport.rollout.decision import DRIVER
from flagport.rollout.durations import format_duration
from flagport.rollout.outcomes import WindowReading
from flagport_server.operations import Operations
from flagport_server.services import AdminService
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.ui.common import percent
from flagport_server.wire.admin_v1 import PlanView

__all__ = [
    "COHORT_WINDOW_S",
    "MAX_FILTER_TAG",
    "MAX_FILTER_TEXT",
    "FlagNode",
    "MonitorView",
    "NextMove",
    "RolloutsView",
    "flag_tree",
    "matching_flags",
    "monitor_view",
    "next_move",
    "rollouts_view",
]

#: The monitor shows the flags changed this long ago at most (besides those under a plan).
RECENT_S: Final = 24 * 3600
#: Audit entries the monitor reads (the last day's, newest first) and shows per flag.
_AUDIT_READ: Final = 500
_ACTIONS_SHOWN: Final = 5
#: The driver's actions the rollouts page shows per plan, newest first.
_AUTOMATIC_SHOWN: Final = 10
#: Finished plans the rollouts page shows, most recently finished first.
FINISHED_SHOWN: Final = 50
#: The window of the monitor's cohort table (the guards' usual window).
COHORT_WINDOW_S: Final = 300
#: Plans shown whenever their flag changed: those not finished.
_LIVE_PLANS: Final = frozenset({"scheduled", "running", "paused"})


@dataclass
class FlagNode:
    """One segment of a dotted key: its flag, if one has that key, and its children."""

    name: str
    key: str
    flag: Flag | None = None
    children: dict[str, FlagNode] = field(default_factory=dict)


#: Longest filter text and tag the flags page takes (longer is cut, never an error: a
#: filter only narrows what is shown).
MAX_FILTER_TEXT: Final = 100
MAX_FILTER_TAG: Final = 64


#: Hours the flag list's sparklines show, and their size in SVG user units.
SPARK_HOURS: Final = 24
_SPARK_WIDTH: Final = 96
_SPARK_HEIGHT: Final = 16


@dataclass(frozen=True)
class Sparkline:
    """A flag's evaluations per minute over the last :data:`SPARK_HOURS` hours, one point
    per hour, as an SVG polyline's points (drawn server-side: no script, no library)."""

    points: str
    peak_per_minute: float
    total: int


def sparkline(counts: dict[int, int], since: int) -> Sparkline:
    """The sparkline of ``counts`` (hour -> evaluations) for the hours from ``since``."""
    per_minute = [counts.get(since + h * 3600, 0) / 60 for h in range(SPARK_HOURS)]
    peak = max(per_minute)
    step = _SPARK_WIDTH / (SPARK_HOURS - 1)
    points = " ".join(
        f"{i * step:.1f},{_SPARK_HEIGHT - (v / peak * (_SPARK_HEIGHT - 2) if peak else 0) - 1:.1f}"
        for i, v in enumerate(per_minute)
    )
    return Sparkline(points=points, peak_per_minute=peak, total=sum(counts.values()))


def matching_flags(flags: dict[str, Flag], text: str = "", tag: str = "") -> dict[str, Flag]:
    """The flags whose key, description or owner holds ``text`` (any case) and that carry
    ``tag``, with their ancestors (so each match stays in its place in the tree)."""
    text = text.strip()[:MAX_FILTER_TEXT].casefold()
    tag = tag.strip()[:MAX_FILTER_TAG]
    if not text and not tag:
        return flags
    found = {
        key
        for key, flag in flags.items()
        if (not tag or tag in flag.tags)
        and (
            not text
            or text in key.casefold()
            or text in (flag.description or "").casefold()
            or text in (flag.owner or "").casefold()
        )
    }
    for key in list(found):
        parts = key.split(".")
        found.update(".".join(parts[:end]) for end in range(1, len(parts)))
    return {key: flag for key, flag in flags.items() if key in found}


def flag_tree(flags: dict[str, Flag]) -> list[FlagNode]:
    """The flags as a tree by their dotted keys (``a.b`` under ``a``), sorted by key."""
    root = FlagNode("", "")
    for key in sorted(flags):
        node = root
        parts = key.split(".")
        for depth, part in enumerate(parts):
            child_key = ".".join(parts[: depth + 1])
            node = node.children.setdefault(part, FlagNode(part, child_key))
        node.flag = flags[key]
    return list(root.children.values())


@dataclass
class MonitoredFlag:
    key: str
    flag: Flag
    plan: PlanView | None
    actions: list[AuditEntry]
    #: Treatment and control over the last :data:`COHORT_WINDOW_S` (a plan not finished).
    cohorts: WindowReading | None = None


@dataclass
class MonitorView:
    flags: list[MonitoredFlag]
    readiness: dict[str, Any]
    ready: bool
    driver_missing_s: float | None
    driver_holding: bool
    workers: list[Any]
    at: str
    cohort_window: int = COHORT_WINDOW_S


def _iso(moment: float) -> str:
    return (
        datetime.datetime.fromtimestamp(moment, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


async def monitor_view(admin: AdminService, operations: Operations) -> MonitorView:
    """The flags under a plan not finished or changed in the last :data:`RECENT_S`, each
    with its plan's readings (cohort sizes and values per guard) and last actions; the
    store's, the workers' and the driver's health."""
    now = time.time()
    since = _iso(now - RECENT_S)
    state = await admin.state()
    plans = {view.key: view for view in (await admin.plans.list(state)).plans}
    entries = await admin.audit(AuditQuery(since=since, limit=_AUDIT_READ))
    actions: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        if entry.kind == "flag":
            shown = actions.setdefault(entry.key, [])
            if len(shown) < _ACTIONS_SHOWN:
                shown.append(entry)
    keys = {k for k, view in plans.items() if view.status in _LIVE_PLANS}
    keys |= set(actions)
    keys |= {k for k, f in state.document.flags.items() if (f.updated_at or "") >= since}
    flags = state.document.flags
    # The flags under a plan first, then the most recently changed: what the people watching
    # a release look for, at the top of a phone's screen.
    ordered = sorted((k for k in keys if k in flags), key=lambda k: flags[k].updated_at or "")
    ordered.reverse()
    ordered.sort(key=lambda k: not (k in plans and plans[k].status in _LIVE_PLANS))
    monitored = []
    for key in ordered:
        plan = plans.get(key)
        live = plan is not None and plan.status in _LIVE_PLANS
        cohorts = await admin.plans.cohorts(key, COHORT_WINDOW_S) if live else None
        monitored.append(
            MonitoredFlag(key, state.document.flags[key], plan, actions.get(key, []), cohorts)
        )
    readiness, status = operations.readiness()
    version = readiness.get("snapshot", {}).get("version", 0)
    propagation = await admin.propagation(version)
    driver = operations.driver
    return MonitorView(
        flags=monitored,
        readiness=readiness,
        ready=status == 200,
        driver_missing_s=operations.driver_missing(),
        driver_holding=bool(driver is not None and driver.holding),
        workers=list(propagation.workers),
        at=_iso(now),
    )


@dataclass(frozen=True)
class NextMove:
    """What a plan not finished does next and when: ``what`` (start, a step, completion),
    ``due_in`` (a duration, or ``now`` when it is due and waits for the driver's next
    tick or for its guards), ``at`` (ISO-8601 UTC)."""

    what: str
    due_in: str
    at: str


def next_move(plan: PlanView) -> NextMove | None:
    """``plan``'s next move, or None when it has none to wait for (finished, paused, or a
    time not yet known)."""
    if plan.next_at is None or plan.status not in ("scheduled", "running"):
        return None
    if plan.status == "scheduled":
        what = f"start at {percent(plan.steps[0])}"
    elif plan.step >= len(plan.steps):
        what = "complete"
    else:
        what = f"step to {percent(plan.steps[plan.step])}"
    left = plan.next_at - plan.now
    due_in = format_duration(int(left)) if left >= 1 else "now"
    return NextMove(what=what, due_in=due_in, at=_iso(plan.next_at))


@dataclass
class RolloutItem:
    plan: PlanView
    #: None when the plan's flag was deleted (a plan outlives it, aborted).
    flag: Flag | None
    next: NextMove | None
    #: The driver's actions on this plan, newest first, each with its evidence.
    automatic: list[AuditEntry]


@dataclass
class RolloutsView:
    live: list[RolloutItem]
    finished: list[RolloutItem]
    #: Finished plans older than those shown.
    finished_hidden: int
    unreadable: dict[str, str]
    at: str


def _timestamp(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


#: The live plans' order on the page: those moving first.
_LIVE_ORDER: Final = {"running": 0, "paused": 1, "scheduled": 2}


async def rollouts_view(admin: AdminService) -> RolloutsView:
    """Every plan: those not finished first (running, paused, scheduled), then the most
    recently finished; each with its next move, guard readings and the driver's actions
    (read in one audit query: the driver's last :data:`_AUDIT_READ`)."""
    state = await admin.state()
    listed = await admin.plans.list(state)
    entries = await admin.audit(AuditQuery(actor=DRIVER, limit=_AUDIT_READ))
    by_key: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        by_key.setdefault(entry.key, []).append(entry)
    live: list[RolloutItem] = []
    finished: list[RolloutItem] = []
    for view in listed.plans:
        # Only this plan's actions: an earlier plan on the same flag had its own.
        started = view.plan.created_at - 1
        automatic = [e for e in by_key.get(view.key, []) if _timestamp(e.at) >= started]
        item = RolloutItem(
            plan=view,
            flag=state.document.flags.get(view.key),
            next=next_move(view),
            automatic=automatic[:_AUTOMATIC_SHOWN],
        )
        (live if view.status in _LIVE_PLANS else finished).append(item)
    live.sort(key=lambda item: (_LIVE_ORDER.get(item.plan.status, 3), item.plan.key))
    finished.sort(key=lambda item: item.plan.plan.updated_at, reverse=True)
    return RolloutsView(
        live=live,
        finished=finished[:FINISHED_SHOWN],
        finished_hidden=max(0, len(finished) - FINISHED_SHOWN),
        unreadable=dict(listed.unreadable),
        at=_iso(time.time()),
    )
