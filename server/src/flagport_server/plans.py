"""Rollout plans in the server (docs/spec.md, "Guarded rollouts"; the state machine, the
lease and the fencing: docs/adr/0023-rollout-plans-driver-lease.md).

Every plan transition, a person's or the driver's, is one store commit built by
:func:`transition_commit`: a ``plan`` mutation guarded by the record's version, the flag
change the transition makes (guarded by the flag's version) and one audit entry carrying the
plan record after it and, for an automatic action, the evidence. Two drivers, or a driver
and a person, can never both commit a transition from the same record.

"A human always wins": :func:`human_wins` is called on every manual write
(``AdminService``) and adds, in the same commit, a pause of every plan whose flag, an
ancestor, a prerequisite or a segment it uses the write changes, naming the cause; the
deletion of the plan's flag aborts the plan.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from flagport.engine import Flag
from flagport.rollout.decision import (
    DRIVER,
    DecisionKind,
    Evidence,
    Judgement,
    Readings,
    decide,
    gather_readings,
    guard_checks,
    judge,
)
from flagport.rollout.guards import Metric, parse_guard
from flagport.rollout.options import PlanOptions, plan_spec
from flagport.rollout.outcomes import OutcomeAggregate, WindowReading, minute_of, window_start
from flagport.rollout.plan import (
    Plan,
    PlanSpec,
    PlanStatus,
    abort,
    check_flag,
    new_plan,
    pause,
    resume,
)
from flagport.rollout.promql import PromqlReading, substitute
from flagport_server.audit import audit_entry
from flagport_server.auth import Actor
from flagport_server.errors import Conflict, NotFound, VersionConflict
from flagport_server.prometheus import check_queries
from flagport_server.stores.base import (
    OUTCOME_MINUTES_KEPT,
    AuditEntry,
    Mutation,
    Store,
    StoreState,
)
from flagport_server.wire.admin_v1 import PlanCreate, PlanGuard, PlanList, PlanView

__all__ = [
    "DRIVER_ACTOR",
    "Exposure",
    "PlanService",
    "PromqlLookup",
    "active_plan",
    "human_wins",
    "iso",
    "needs_health",
    "outcome_window",
    "plan_readings",
    "plan_view",
    "promql_queries",
    "transition_commit",
    "uses_segment",
]

#: The audit actor of the driver's automatic transitions.
DRIVER_ACTOR: Final = Actor(DRIVER)
_RETRIES: Final = 20
#: Plans a change can still pause or abort.
_LIVE: Final = (PlanStatus.SCHEDULED, PlanStatus.RUNNING, PlanStatus.PAUSED)


class Exposure(enum.Enum):
    """What a transition does to the plan's flag."""

    KEEP = "keep"  # nothing (pause, complete, a restarted hold)
    EXPOSE = "expose"  # enabled at the plan's percentage (start, advance, resume, step-back)
    DISABLE = (
        "disable"  # the kill switch (rollback, step-back from the first step, abort --rollback)
    )


def iso(at: float) -> str:
    """An audit timestamp for ``at`` (seconds since the epoch)."""
    moment = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def active_plan(plan: Plan | None) -> bool:
    """Whether ``plan`` blocks a new plan on its flag (completed and aborted ones do not)."""
    return plan is not None and not plan.finished


def transition_commit(
    state: StoreState,
    before: Plan | None,
    after: Plan,
    exposure: Exposure,
    action: str,
    actor: Actor,
    *,
    reason: str | None = None,
    evidence: Evidence | None = None,
) -> tuple[list[Mutation], list[AuditEntry]]:
    """The one commit of a plan transition from ``before`` (None: a new plan) to ``after``:
    the guarded plan mutation, the flag change ``exposure`` asks for (guarded by the flag's
    version) and one audit entry (``action`` ``plan-...``) with the flag's bodies before
    and after, the plan record after and the evidence."""
    key = after.spec.key
    plan_guard = None if before is None else before.version
    existing = state.plans.get(key)
    if before is None and existing is not None:
        plan_guard = existing.version  # a finished plan is replaced by the new one
    mutations = [Mutation("plan", key, "put", after, plan_guard)]
    flag = state.document.flags.get(key)
    changed: Flag | None = None
    if flag is not None and exposure is not Exposure.KEEP:
        at = iso(after.updated_at)
        if exposure is Exposure.DISABLE and flag.enabled:
            changed = msgspec.structs.replace(
                flag, enabled=False, version=flag.version + 1, updated_at=at
            )
        elif (
            exposure is Exposure.EXPOSE
            and after.percentage is not None
            and (not flag.enabled or flag.percentage != after.percentage)
        ):
            changed = msgspec.structs.replace(
                flag,
                enabled=True,
                percentage=after.percentage,
                version=flag.version + 1,
                updated_at=at,
            )
    if changed is not None and flag is not None:
        mutations.append(
            Mutation(
                "flag",
                key,
                "put",
                changed,
                flag.version,
                kill_switch=exposure is Exposure.DISABLE,
            )
        )
    entry = audit_entry(
        actor,
        action,
        key,
        iso(after.updated_at),
        reason=reason if reason is not None else after.reason,
        before=flag if changed is not None else None,
        after=changed,
    )
    entry = msgspec.structs.replace(
        entry,
        plan=msgspec.to_builtins(after),
        evidence=msgspec.to_builtins(evidence) if evidence is not None else None,
    )
    return mutations, [entry]


def human_wins(
    state: StoreState, mutations: Sequence[Mutation], actor: Actor, now: float
) -> tuple[list[Mutation], list[AuditEntry]]:
    """The plan pauses and aborts a person's ``mutations`` cause, to commit with them: a
    change to a plan's flag, an ancestor of it, one of its prerequisites or a segment it
    uses pauses a scheduled or running plan, naming the change; deleting the plan's flag
    aborts the plan (whatever its state but finished)."""
    if not state.plans:
        return [], []
    flags = state.document.flags
    changed_flags = {m.key: m.op for m in mutations if m.kind == "flag"}
    changed_segments = {m.key for m in mutations if m.kind == "segment"}
    added: list[Mutation] = []
    entries: list[AuditEntry] = []
    for key, plan in state.plans.items():
        if plan.status not in _LIVE:
            continue
        if changed_flags.get(key) == "delete":
            after = abort(plan, f"flag {key!r} deleted by {actor.name}", now, actor=actor.name)
            m, e = transition_commit(state, plan, after, Exposure.KEEP, "plan-abort", actor)
            added += [m[0]]  # the flag itself is being deleted: no flag change
            entries += e
            continue
        if plan.status is PlanStatus.PAUSED:
            continue
        cause = _cause(key, flags.get(key), changed_flags, changed_segments, actor)
        if cause is None:
            continue
        after = pause(plan, cause, now, actor=actor.name)
        m, e = transition_commit(state, plan, after, Exposure.KEEP, "plan-pause", actor)
        added += m
        entries += e
    return added, entries


def _cause(
    key: str,
    flag: Flag | None,
    changed_flags: Mapping[str, str],
    changed_segments: set[str],
    actor: Actor,
) -> str | None:
    who = actor.name
    if key in changed_flags:
        return f"flag {key!r} changed by {who}"
    for other in changed_flags:
        if key.startswith(other + "."):
            return f"ancestor {other!r} of {key!r} changed by {who}"
    if flag is None:
        return None
    for prerequisite in flag.prerequisites:
        if prerequisite.key in changed_flags:
            return f"prerequisite {prerequisite.key!r} of {key!r} changed by {who}"
    for segment in sorted(changed_segments):
        if uses_segment(flag, segment):
            return f"segment {segment!r} used by {key!r} changed by {who}"
    return None


def uses_segment(flag: Flag, segment: str) -> bool:
    """Whether one of ``flag``'s rules tests membership of ``segment``."""
    return any(
        condition.op == "in_segment" and segment in condition.values
        for rule in flag.rules
        for condition in rule.conditions
    )


#: A promql query's last reading at a Prometheus URL (None: not queried yet).
PromqlLookup = Callable[[str, str], PromqlReading | None]


def promql_queries(plan: Plan) -> list[tuple[str, str]]:
    """Each promql guard's query as written and as sent (``$flag`` and ``$variant``
    substituted: :func:`flagport.rollout.promql.substitute`)."""
    spec = plan.spec
    variant = spec.treatment_variant or "on"
    return [
        (guard.query, substitute(guard.query, flag=spec.key, variant=variant))
        for guard in map(parse_guard, spec.guards)
        if guard.metric is Metric.PROMQL and guard.query is not None
    ]


async def plan_readings(
    store: Store,
    plan: Plan,
    now: float,
    health_failures: int | None = None,
    promql: PromqlLookup | None = None,
) -> Readings:
    """What :func:`~flagport.rollout.decision.decide` judges ``plan`` on at ``now``: the
    outcome totals of every minute its guards' windows and its hold cover (at most the
    48 hours kept), the health polls' count and each promql query's last reading."""
    starts: list[float] = [
        window_start(guard.window, now)
        for guard in map(parse_guard, plan.spec.guards)
        if guard.window is not None
    ]
    if plan.hold_started_at is not None:
        starts.append(plan.hold_started_at)
    aggregate = OutcomeAggregate()
    if starts:
        aggregate = await _stored_outcomes(store, plan.spec.key, min(starts), now)
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    url = plan.spec.prometheus_url
    if promql is not None and url is not None:
        for written, sent in promql_queries(plan):
            reading = promql(url, sent)
            values[written] = None if reading is None else reading.value
            if reading is not None and reading.note is not None:
                notes[written] = reading.note
    return gather_readings(
        plan, aggregate, now, health_failures=health_failures, promql=values, promql_notes=notes
    )


async def _stored_outcomes(store: Store, key: str, start: float, now: float) -> OutcomeAggregate:
    """``key``'s stored outcome totals of every minute from ``start`` to ``now`` (at most
    the 48 hours kept)."""
    aggregate = OutcomeAggregate()
    last = minute_of(now)
    first = max(minute_of(start), last - OUTCOME_MINUTES_KEPT * 60)
    for found, minute, cohort, totals in await store.outcomes(key, first, last):
        aggregate.totals(found, minute, cohort).merge(totals)
    return aggregate


async def outcome_window(store: Store, key: str, seconds: int, now: float) -> WindowReading:
    """Each cohort's outcome figures for ``key`` over the last ``seconds`` (the deployment
    monitor's cohort table, whatever guards the plan has)."""
    aggregate = await _stored_outcomes(store, key, window_start(seconds, now), now)
    return aggregate.read_window(key, seconds, now)


def needs_health(plan: Plan) -> bool:
    """Whether a guard of ``plan`` reads its health polls."""
    return any(parse_guard(rule).metric is Metric.HEALTH_FAILURES for rule in plan.spec.guards)


def plan_view(plan: Plan, readings: Readings, now: float) -> PlanView:
    """Where ``plan`` stands at ``now``: the driver's decision (for a running or scheduled
    plan) and every guard's reading, judged as the driver judges it."""
    checks = guard_checks(plan)
    decision = decide(plan, readings, now, checks)
    judged = decision.judgements
    if not judged:  # not running: judge anyway, for the status
        judged = tuple(
            Judgement(
                index,
                *judge(
                    check,
                    readings,
                    min_sample=plan.spec.min_sample,
                    vs_control=plan.spec.vs_control,
                ),
            )
            for index, check in enumerate(checks)
        )
    next_at = decision.until
    if next_at is None and decision.kind in (
        DecisionKind.ADVANCE,
        DecisionKind.COMPLETE,
        DecisionKind.START,
    ):
        next_at = now
    return PlanView(
        key=plan.spec.key,
        status=plan.status.value,
        step=plan.step + 1,
        steps=list(plan.spec.steps),
        percentage=plan.percentage,
        now=now,
        next_at=next_at,
        decision=decision.kind.value,
        reason=plan.reason if plan.status is not PlanStatus.RUNNING else decision.reason,
        guards=[PlanGuard(j.guard, j.verdict.value, j.evidence) for j in judged],
        plan=plan,
    )


Committer = Callable[[Sequence[Mutation], Sequence[AuditEntry]], Any]


class PlanService:
    """A person's plan operations: create, pause, resume, abort, and the reads. Each one
    re-reads the store and retries when the driver moved the plan meanwhile.

    ``load`` gives the store's state; ``commit`` commits and serves the change (the admin
    service's); ``clock`` is the time (injected in tests)."""

    def __init__(
        self,
        store: Store,
        commit: Committer,
        clock: Callable[[], float],
        health: Callable[[str], int | None] | None = None,
        promql: PromqlLookup | None = None,
    ) -> None:
        self._store = store
        self._load = store.load
        self._commit = commit
        self._clock = clock
        #: Consecutive failed polls of a health URL, as this worker's driver counted them
        #: (None: this worker does not poll it).
        self._health = health or (lambda _url: None)
        #: A promql query's last reading, as this worker's driver queried it.
        self._promql = promql

    async def _view(self, plan: Plan, now: float) -> PlanView:
        url = plan.spec.health_url
        failures = self._health(url) if url is not None else None
        readings = await plan_readings(self._store, plan, now, failures, self._promql)
        return plan_view(plan, readings, now)

    async def cohorts(self, key: str, seconds: int) -> WindowReading:
        """``key``'s treatment and control over the last ``seconds``: requests, failures,
        latency (:func:`outcome_window`)."""
        return await outcome_window(self._store, key, seconds, self._clock())

    async def list(self, state: StoreState | None = None) -> PlanList:
        """Every plan (finished ones too), with its readings now; of ``state`` when the
        caller has read the store already (one read, so plans and flags agree)."""
        if state is None:
            state = await self._load()
        now = self._clock()
        views = [await self._view(plan, now) for plan in state.plans.values()]
        return PlanList(plans=views, unreadable=dict(state.unreadable_plans))

    async def status(self, key: str) -> PlanView:
        """``key``'s plan and its readings now."""
        state: StoreState = await self._load()
        found = state.plans.get(key)
        if found is None:
            why = state.unreadable_plans.get(key)
            if why is not None:
                raise Conflict(f"the stored plan of {key!r} cannot be read ({why})")
            if key not in state.document.flags:
                raise NotFound(f"flag {key!r} not found")
            raise NotFound(f"flag {key!r} has no plan")
        return await self._view(found, self._clock())

    async def start(self, options: PlanCreate, actor: Actor) -> tuple[Plan, int]:
        """``flags rollout start``: the options read (:func:`plan_spec`), then :meth:`create`."""
        fields = msgspec.structs.asdict(options)
        reason = fields.pop("reason")
        spec = plan_spec(PlanOptions(**fields), self._clock())
        return await self.create(spec, actor, reason)

    async def create(self, spec: PlanSpec, actor: Actor, reason: str | None) -> tuple[Plan, int]:
        """A scheduled plan (the driver starts it): refused on an unknown flag, one with
        weights, one that already has a plan, on a spec :func:`check_spec` refuses, and on a
        promql query Prometheus refuses (or Prometheus unreachable)."""
        checked = False
        for _ in range(_RETRIES):
            state: StoreState = await self._load()
            key = spec.key
            if key in state.unreadable_plans:
                raise Conflict(f"the stored plan of {key!r} cannot be read: abort it first")
            flag = state.document.flags.get(key)
            if flag is None:
                if key in state.unreadable_flags:
                    raise Conflict(f"stored flag {key!r} cannot be read: repair it first")
                raise NotFound(f"flag {key!r} not found")
            if active_plan(state.plans.get(key)):
                raise Conflict(f"flag {key!r} already has a plan (abort it first)")
            floor = check_flag(key, flag, has_plan=False)
            now = self._clock()
            plan = new_plan(
                msgspec.structs.replace(spec, treatment_variant=flag.on_variant),
                now,
                enabled_percentage=floor,
            )
            url = plan.spec.prometheus_url
            if url is not None and not checked:
                # Once, before anything is written: a query Prometheus rejects is refused
                # now with its message, not discovered by the driver at 02:00.
                await check_queries(url, [sent for _, sent in promql_queries(plan)])
                checked = True
            mutations, entries = transition_commit(
                state, None, plan, Exposure.KEEP, "plan-create", actor, reason=reason
            )
            try:
                return plan, await self._commit(mutations, entries)
            except VersionConflict:
                continue
        raise Conflict("too many concurrent changes; try again")

    async def pause(self, key: str, actor: Actor, reason: str | None) -> tuple[Plan, int]:
        why = reason or f"paused by {actor.name}"
        return await self._transition(
            key,
            lambda plan, _flag, now: (pause(plan, why, now, actor=actor.name), Exposure.KEEP),
            "plan-pause",
            actor,
            reason,
        )

    async def resume(self, key: str, actor: Actor, reason: str | None) -> tuple[Plan, int]:
        def change(plan: Plan, flag: Flag | None, now: float) -> tuple[Plan, Exposure]:
            exposure = flag.percentage if flag is not None and flag.enabled else None
            return resume(plan, now, exposure=exposure), Exposure.EXPOSE

        return await self._transition(key, change, "plan-resume", actor, reason)

    async def abort(
        self, key: str, actor: Actor, reason: str | None, *, rollback: bool
    ) -> tuple[Plan, int]:
        why = reason or f"aborted by {actor.name}"

        def change(plan: Plan, _flag: Flag | None, now: float) -> tuple[Plan, Exposure]:
            after = abort(plan, why, now, actor=actor.name, disable=rollback)
            return after, Exposure.DISABLE if rollback else Exposure.KEEP

        return await self._transition(key, change, "plan-abort", actor, reason)

    async def _transition(
        self,
        key: str,
        change: Callable[[Plan, Flag | None, float], tuple[Plan, Exposure]],
        action: str,
        actor: Actor,
        reason: str | None,
    ) -> tuple[Plan, int]:
        for _ in range(_RETRIES):
            state: StoreState = await self._load()
            plan = state.plans.get(key)
            if plan is None:
                raise NotFound(f"flag {key!r} has no plan")
            after, exposure = change(plan, state.document.flags.get(key), self._clock())
            mutations, entries = transition_commit(
                state, plan, after, exposure, action, actor, reason=reason
            )
            try:
                return after, await self._commit(mutations, entries)
            except VersionConflict:
                continue
        raise Conflict("too many concurrent changes; try again")
