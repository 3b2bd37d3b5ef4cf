"""The rollout driver: one per store, holding a renewable lease, it takes every plan's
decision after every drain and commits the transitions (docs/spec.md, "Guarded rollouts";
docs/adr/0023-rollout-plans-driver-lease.md).

- **Lease.** Every worker started with ``--driver`` runs a :class:`Driver`; the one that
  holds the store's lease (:data:`LEASE_NAME`, :data:`LEASE_TTL` seconds, renewed every
  :data:`RENEW_EVERY`) drives, the others try to take it every :data:`RENEW_EVERY`: when
  the holder dies another takes over within ``LEASE_TTL + RENEW_EVERY`` (< 5 s). A driver
  taking over restarts the hold of every running plan (no catch-up); one that takes back
  its own lease before it lapsed (after a store error) took nothing over.
- **Isolation.** Each plan is decided and committed on its own: one that fails (other
  than on the store) is logged and retried next round, and the others go on.
- **Fencing.** The lease only keeps the work in one place; correctness comes from the
  commits: each transition is a ``plan`` mutation guarded by the record's version
  (:func:`~flagport_server.plans.transition_commit`), so a driver that lost its lease
  without knowing it (paused, partitioned) has its commit refused: no step is skipped or
  repeated, no action taken twice.
- **Readings.** Per plan, the outcome totals of the minutes its guards and its hold need
  (:meth:`~flagport_server.stores.base.Store.outcomes`), the consecutive failed polls
  of its health URL (:class:`HealthPolls`) and its promql guards' last answers
  (:class:`~flagport_server.prometheus.PromqlQueries`), both queried in tasks of their own.
- **Watch.** Every worker (with or without ``--driver``) notes when the lease was last
  renewed, so ``/readyz`` and ``/metrics`` warn when a running plan has had no driver for
  :data:`NO_DRIVER_AFTER` seconds.

Time comes from ``clock`` (injected in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import msgspec

from flagport.rollout.decision import (
    Decision,
    DecisionKind,
    apply_decision,
    decide,
    guard_checks,
)
from flagport.rollout.plan import Plan, PlanStatus, restart_hold
from flagport_server.approval_policy import mark_break_glass
from flagport_server.errors import StoreError, VersionConflict
from flagport_server.plans import (
    DRIVER_ACTOR,
    Exposure,
    needs_health,
    plan_readings,
    promql_queries,
    transition_commit,
)
from flagport_server.probes import AnswerTooLarge, Probes, fetch
from flagport_server.prometheus import PromqlQueries
from flagport_server.stores.base import Store, StoreState

if TYPE_CHECKING:  # httpx takes a while to import: only a worker that polls a URL loads it
    import httpx

    from flagport_server.webhooks.delivery import WebhookDeliverer

__all__ = [
    "KILL_HOOK_ENV",
    "LEASE_NAME",
    "LEASE_TTL",
    "NO_DRIVER_AFTER",
    "RENEW_EVERY",
    "Driver",
    "HealthPolls",
    "health_failed",
]

log = logging.getLogger("flagport.server.driver")

LEASE_NAME: Final = "rollout-driver"
LEASE_TTL: Final = 3.0
RENEW_EVERY: Final = 1.0
#: Decisions are re-taken this often (the stats pump drains outcomes every 0.5 s).
TICK: Final = 0.5
#: ``/readyz`` and ``/metrics`` warn when a running plan has had no driver this long.
NO_DRIVER_AFTER: Final = 10.0
HEALTH_TIMEOUT: Final = 5.0
#: A plan whose round keeps failing is logged (with the traceback) this often.
_FAILURE_LOG_EVERY: Final = 60.0
#: A test-only hook: ``before:N`` / ``after:N`` SIGKILLs this process just before / after
#: the driver's N-th commit (the fencing test). Never set in production.
KILL_HOOK_ENV: Final = "FLAGPORT_TEST_DRIVER_KILL"

_DRIVEN: Final = (PlanStatus.SCHEDULED, PlanStatus.RUNNING)
_EXPOSURES: Final = {
    DecisionKind.START: Exposure.EXPOSE,
    DecisionKind.ADVANCE: Exposure.EXPOSE,
    DecisionKind.ROLLBACK: Exposure.DISABLE,
}


def health_failed(status: int | None, body: bytes) -> bool:
    """Whether one health poll failed: no answer (``status`` None: a timeout or a
    connection error), a status that is not 2xx, or a JSON object whose ``"status"`` is
    other than ``ok`` / ``healthy`` (any case). A 2xx answer that is not JSON passes."""
    if status is None or not 200 <= status < 300:
        return True
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    if isinstance(document, dict) and "status" in document:
        value = document["status"]
        return not (isinstance(value, str) and value.lower() in ("ok", "healthy"))
    return False


class HealthPolls(Probes[str, int]):
    """Consecutive failed polls per health URL, each polled at its interval in a task of
    its own (a slow URL never holds the decisions up)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(client, _health_client)

    @property
    def failures(self) -> dict[str, int]:
        return self.results

    def failures_of(self, url: str) -> int | None:
        """Consecutive failed polls of ``url`` (None: not polled yet)."""
        return self.result_of(url)

    def due(self, url: str, interval: float, now: float) -> None:
        """Start a poll of ``url`` if its interval has passed and none is under way."""
        self.start_if_due(url, interval, now, lambda: self.poll(url))

    async def poll(self, url: str) -> bool:
        """Poll ``url`` once and count the result; whether it failed."""
        import httpx

        try:
            status, body = await fetch(self.client, url, HEALTH_TIMEOUT)
            failed = health_failed(status, body)
        except (httpx.HTTPError, OSError, TimeoutError, AnswerTooLarge):
            failed = True
        self.results[url] = self.results.get(url, 0) + 1 if failed else 0
        return failed


def _health_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=HEALTH_TIMEOUT, follow_redirects=False)


class Driver:
    """One worker's rollout driver (``enabled``: ``--driver``) and its watch of the lease.

    ``after_commit(version)`` serves a committed transition from this worker at once (the
    runtime's reload); ``clock`` is the time."""

    def __init__(
        self,
        store: Store,
        *,
        enabled: bool = True,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        after_commit: Callable[[int], Awaitable[None]] | None = None,
        health: HealthPolls | None = None,
        promql: PromqlQueries | None = None,
        served_plans: Callable[[], Mapping[str, Plan]] | None = None,
        webhooks: WebhookDeliverer | None = None,
    ) -> None:
        self.store = store
        #: The webhook deliveries the lease holder makes (docs/adr/0028): with webhooks
        #: configured, the lease is kept even without a live plan.
        self.webhooks = webhooks
        #: The plans the worker serves (its snapshot's): with none live, a round does no
        #: store I/O at all (and gives the lease up).
        self.served_plans = served_plans
        self.enabled = enabled
        self.holder = holder or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.clock = clock
        self.after_commit = after_commit
        self.health = health or HealthPolls()
        self.promql = promql or PromqlQueries()
        self.holding = False
        #: When the lease was last renewed by anyone (this worker's last look at it).
        self.lease_seen: float | None = None
        #: The last decision per plan flag (what ``/metrics`` exports).
        self.decisions: dict[str, Decision] = {}
        #: Automatic actions on a breach, per plan flag.
        self.breaches: dict[str, int] = {}
        #: Why the last round of a plan failed, per plan flag (cleared by a good round).
        self.failed_plans: dict[str, str] = {}
        self._failure_logged: dict[str, float] = {}
        self._renewed_at = -math.inf
        #: When this driver's last renewed lease lapses.
        self._held_until = -math.inf
        self._commits = 0
        self._kill = _kill_hook()
        #: Set by :meth:`wake`: the next round starts at once.
        self._woken = asyncio.Event()

    # -- the lease ------------------------------------------------------------------------

    async def keep_lease(self, now: float) -> bool:
        """Take or renew the lease when due; whether this worker drives now. A driver that
        just took over restarts the hold of every running plan."""
        if not self.enabled:
            self.lease_seen = await self.store.lease_seen(LEASE_NAME)
            return False
        if now - self._renewed_at < RENEW_EVERY:  # renewed, or tried, within the second
            return self.holding
        self._renewed_at = now
        held = await self.store.acquire_lease(LEASE_NAME, self.holder, LEASE_TTL, now)
        # Holding again a lease of this driver's that never lapsed (a round failed on a
        # store error in between, so it stopped counting on it) is no takeover: nobody else
        # could have driven, and restarting every hold on each passing store error would
        # keep plans from ever advancing.
        took_over = held and not self.holding and now >= self._held_until
        self.holding = held
        if held:
            self.lease_seen = now
            self._held_until = now + LEASE_TTL
        else:
            self.lease_seen = await self.store.lease_seen(LEASE_NAME)
        if took_over:
            log.info("rollout driver %s took the lease", self.holder)
            await self._restart_holds(now)
        return held

    async def release(self) -> None:
        if self.holding:
            self.holding = False
            self._held_until = -math.inf
            with contextlib.suppress(StoreError):
                await self.store.release_lease(LEASE_NAME, self.holder)

    def missing_for(self, now: float) -> float | None:
        """Seconds a running plan has been without a driver (None: it has one as far as
        this worker saw, or no plan runs); ``math.inf`` if none ever drove the store."""
        if not any(p.status is PlanStatus.RUNNING for p in self.live_plans()):
            return None
        seen = self.lease_seen
        if seen is None:
            return math.inf
        gone = now - seen - LEASE_TTL
        return gone if gone > 0 else None

    # -- decisions ------------------------------------------------------------------------

    def live_plans(self) -> list[Plan]:
        """The served plans a driver has work with (scheduled or running)."""
        if self.served_plans is None:
            return []
        return [p for p in self.served_plans().values() if p.status in _DRIVEN]

    async def step(self) -> list[Decision]:
        """One round: keep the lease and, holding it, decide for every plan. Without live
        plans in the served snapshot (when the worker knows it), nothing is read or kept."""
        now = self.clock()
        idle = self.served_plans is not None and not self.live_plans()
        delivering = self.enabled and self.webhooks is not None and await self.webhooks.wanted(now)
        if idle and not delivering:
            await self.release()
            self.decisions.clear()
            return []
        if not await self.keep_lease(now):
            return []
        if delivering and self.webhooks is not None:
            self.webhooks.dispatch(now, lambda: self.holding)
        if idle:
            self.decisions.clear()
            return []
        return await self.drive(now)

    async def drive(self, now: float) -> list[Decision]:
        """Take every live plan's decision at ``now`` and commit what changes a record; the
        decisions that did."""
        # Plans only, every round; the whole configuration (the flag a transition changes)
        # only when a decision changes a record, which is rare: a load of 15,000 flags is
        # ~100 ms of decoding, every half second on the driving worker otherwise.
        plans = await self.store.load_plans()
        state: StoreState | None = None
        taken: list[Decision] = []
        urls: set[str] = set()
        queried: set[tuple[str, str]] = set()
        for key, plan in plans.items():
            if plan.status not in _DRIVEN:
                self.decisions.pop(key, None)
                continue
            # Renewed between plans when due: a round slower than the lease (many plans,
            # slow reads) would otherwise let another driver take it midway, each then
            # deciding half the plans and restarting the other's holds.
            if not await self.keep_lease(self.clock()):
                break
            try:
                state = await self._drive_plan(key, plan, now, state, urls, queried, taken)
                self.failed_plans.pop(key, None)
            except StoreError:
                raise  # the store's trouble is every plan's: the round fails
            except Exception as error:
                # One plan that cannot be decided or committed (a flag stored before a limit
                # it now exceeds, a bug) must not keep the plans after it from their
                # rollbacks: it is logged, and the next round tries it again.
                self._plan_failed(key, error, now)
        self.health.forget(urls)
        self.promql.forget(queried)
        return taken

    async def _drive_plan(
        self,
        key: str,
        plan: Plan,
        now: float,
        state: StoreState | None,
        urls: set[str],
        queried: set[tuple[str, str]],
        taken: list[Decision],
    ) -> StoreState | None:
        """One plan's decision at ``now`` and its commit, if it changes a record (``taken``
        gets it); the configuration as read for the commit, for the next plan's."""
        failures = None
        url = plan.spec.health_url
        if url is not None and needs_health(plan):
            urls.add(url)
            self.health.due(url, plan.spec.health_interval, now)
            failures = self.health.failures_of(url)
        prometheus = plan.spec.prometheus_url
        if prometheus is not None and plan.status is PlanStatus.RUNNING:
            for _, sent in promql_queries(plan):
                queried.add((prometheus, sent))
                self.promql.due(prometheus, sent, now)
        readings = await plan_readings(self.store, plan, now, failures, self.promql.reading_of)
        decision = decide(plan, readings, now, guard_checks(plan))
        self.decisions[key] = decision
        after = apply_decision(plan, decision, now)
        if after is None:
            return state
        exposure = _EXPOSURES.get(decision.kind, Exposure.KEEP)
        if decision.kind is DecisionKind.STEP_BACK:
            exposure = Exposure.EXPOSE if after.percentage is not None else Exposure.DISABLE
        if state is None:
            state = await self.store.load()
        if await self._commit(state, plan, after, exposure, decision):
            taken.append(decision)
            if decision.evidence is not None and decision.kind in (
                DecisionKind.ROLLBACK,
                DecisionKind.STEP_BACK,
                DecisionKind.BREACH_PAUSE,
            ):
                self.breaches[key] = self.breaches.get(key, 0) + 1
        return state

    def _plan_failed(self, key: str, error: Exception, now: float) -> None:
        """Log a plan's failed round: with its traceback once a minute per plan, not every
        half second."""
        self.failed_plans[key] = f"{type(error).__name__}: {error}"
        if now - self._failure_logged.get(key, -math.inf) >= _FAILURE_LOG_EVERY:
            self._failure_logged[key] = now
            log.error("rollout %s: the driver could not take its decision", key, exc_info=error)

    async def _commit(
        self,
        state: StoreState,
        plan: Plan,
        after: Plan,
        exposure: Exposure,
        decision: Decision | None,
    ) -> bool:
        action = "plan-" + (decision.kind.value if decision is not None else "hold-restart")
        mutations, entries = transition_commit(
            state,
            plan,
            after,
            exposure,
            action,
            DRIVER_ACTOR,
            reason=decision.reason if decision is not None else "a driver took over",
            evidence=decision.evidence if decision is not None else None,
        )
        if exposure is Exposure.DISABLE:
            # An automatic rollback never waits for approval; under a policy it is audited
            # as break-glass like a person's disable.
            entries = mark_break_glass(state, entries, await self.store.approval_policies())
        self._commits += 1
        self._maybe_kill("before")
        try:
            result = await self.store.commit(mutations, entries)
        except VersionConflict:
            # Someone else moved the plan (a person, or a driver that still thinks it holds
            # the lease): the next round decides on the new record.
            return False
        self._maybe_kill("after")
        log.info("rollout %s: %s (%s)", plan.spec.key, action, entries[0].reason)
        if self.after_commit is not None:
            await self.after_commit(result.snapshot_version)
        return True

    async def _restart_holds(self, now: float) -> None:
        state = await self.store.load()
        for plan in state.plans.values():
            if plan.status is PlanStatus.RUNNING:
                await self._commit(state, plan, restart_hold(plan, now), Exposure.KEEP, None)

    def _maybe_kill(self, when: str) -> None:
        if self._kill == (when, self._commits):
            os.kill(os.getpid(), signal.SIGKILL)

    # -- the loop -------------------------------------------------------------------------

    def wake(self) -> None:
        """Start the next round now: called after each drain of outcome signals into the
        store, so the guards are re-judged on them at once (docs/spec.md: decisions are
        re-taken after every drain). A worker that does not drive ignores it; the driving
        worker sees other workers' drains at its next round (every :data:`TICK`)."""
        if self.enabled:
            self._woken.set()

    async def run(self) -> None:
        """Drive (or watch) until cancelled; a failed round is logged and the next one goes
        on. The lease is released on the way out."""
        try:
            while True:
                try:
                    await self.step()
                except (StoreError, OSError) as error:
                    log.warning("rollout driver round failed: %s", error)
                    self.holding = False
                except Exception:
                    log.exception("rollout driver round failed")
                # asyncio.timeout: Python 3.11's wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK if self.enabled else RENEW_EVERY * 2):
                        await self._woken.wait()
                self._woken.clear()
        finally:
            await self.release()
            await self.health.close()
            await self.promql.close()
            if self.webhooks is not None:
                await self.webhooks.close()

    def guard_values(self) -> Mapping[str, list[float | None]]:
        """Per plan flag, each guard's last treatment value (site-wide ones: their value)."""
        values: dict[str, list[float | None]] = {}
        for key, decision in self.decisions.items():
            row: list[float | None] = []
            for judgement in decision.judgements:
                evidence = judgement.evidence
                if evidence.treatment is not None:
                    row.append(evidence.treatment.value)
                else:
                    row.append(evidence.value)
            values[key] = row
        return values


def _kill_hook() -> tuple[str, int] | None:
    value = os.environ.get(KILL_HOOK_ENV)
    if not value:
        return None
    when, _, count = value.partition(":")
    return (when, int(count)) if when in ("before", "after") and count.isdigit() else None
