"""The rollout driver with an injected clock, on a real SQLite store (and the lease on
Redis): a whole plan, each guard breaching, each action, not enough data up to the max
hold, the window across a DST change, the lease's takeover and the fencing
(docs/adr/0023-rollout-plans-driver-lease.md)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import flagport.engine._limits
from flagport.engine import Flag
from flagport.rollout.outcomes import Cohort, Totals, bucket_of, minute_of, series_key
from flagport.rollout.plan import PlanSpec, PlanStatus
from flagport.rollout.schedule import parse_window
from flagport_server.auth import Actor
from flagport_server.driver import (
    KILL_HOOK_ENV,
    LEASE_NAME,
    RENEW_EVERY,
    TICK,
    Driver,
    HealthPolls,
    health_failed,
)
from flagport_server.errors import NotFound, StoreUnavailable
from flagport_server.plans import PlanService
from flagport_server.stores import SQLiteStore
from flagport_server.stores.base import AuditEntry, AuditQuery, Mutation, Store
from tests.support.http_server import serving

pytestmark = pytest.mark.anyio

#: 2027-01-15 09:00 UTC, a Friday.
T0 = datetime(2027, 1, 15, 9, 0, tzinfo=UTC).timestamp()
KEY = "checkout"
ALICE = Actor("alice", "tok_alice")
CRITICAL = series_key("user_report", {"severity": "critical"})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = SQLiteStore(tmp_path / "flagport.db")
    await opened.open()
    await opened.commit(
        [Mutation("flag", KEY, "put", Flag(version=1, enabled=False), None)],
        [AuditEntry(actor="alice", action="create", key=KEY, at="2027-01-15T08:00:00Z")],
    )
    try:
        yield opened
    finally:
        await opened.close()


def service(store: Store, clock: Clock) -> PlanService:
    async def commit(mutations: Any, entries: Any) -> int:
        return (await store.commit(mutations, entries)).snapshot_version

    return PlanService(store, commit, clock)


async def new_plan(store: Store, clock: Clock, **fields: Any) -> None:
    spec = PlanSpec(key=KEY, **{"steps": (10.0, 50.0, 100.0), "hold": 60, **fields})
    await service(store, clock).create(spec, ALICE, "release 7")


def totals(requests: int, failures: int = 0, latency_ms: float = 40.0, **events: int) -> Totals:
    buckets = [0] * 13
    buckets[bucket_of(latency_ms)] = requests
    return Totals(
        requests=requests,
        failures=failures,
        latency_us_sum=round(requests * latency_ms * 1000),
        latency_buckets=buckets,
        events=dict(events),
    )


async def report(
    store: Store, now: float, treatment: Totals, control: Totals | None = None
) -> None:
    minute = minute_of(now)
    rows = [(KEY, minute, Cohort.TREATMENT, treatment)]
    if control is not None:
        rows.append((KEY, minute, Cohort.CONTROL, control))
    await store.record_outcomes(rows, now)


async def flag(store: Store) -> Flag:
    return (await store.load()).document.flags[KEY]


async def plan_status(store: Store) -> tuple[PlanStatus, int, float | None]:
    plan = (await store.load()).plans[KEY]
    return plan.status, plan.step, plan.percentage


async def actions(store: Store) -> list[str]:
    entries = await store.audit(AuditQuery(key=KEY, limit=100))
    return [e.action for e in reversed(entries)]


async def test_a_whole_plan_starts_advances_and_completes(store: Store) -> None:
    clock = Clock(T0)
    await new_plan(store, clock, guards=("error_rate > 5% over 5m",), min_sample=50)
    driver = Driver(store, clock=clock)
    await driver.step()  # takes the lease and starts the plan: the flag is enabled at 10 %
    assert (await plan_status(store)) == (PlanStatus.RUNNING, 0, 10.0)
    assert (await flag(store)).enabled
    assert (await flag(store)).percentage == 10.0
    seen: list[tuple[PlanStatus, int, float | None]] = []
    for _ in range(5 * 60):  # five minutes, one decision a second
        clock.now += 1
        await report(store, clock.now, totals(1, 0))
        await driver.step()
        status = await plan_status(store)
        if not seen or seen[-1] != status:
            seen.append(status)
    assert seen[1:] == [
        (PlanStatus.RUNNING, 1, 50.0),
        (PlanStatus.RUNNING, 2, 100.0),
        (PlanStatus.COMPLETED, 2, 100.0),
    ]
    assert seen[0] == (PlanStatus.RUNNING, 0, 10.0)
    assert (await flag(store)).percentage == 100.0
    assert await actions(store) == [
        "create",
        "plan-create",
        "plan-start",
        "plan-advance",
        "plan-advance",
        "plan-complete",
    ]
    entries = await store.audit(AuditQuery(key=KEY, limit=10))
    advance = next(e for e in entries if e.action == "plan-advance")
    assert advance.actor == "driver"
    assert advance.plan is not None
    assert advance.before is not None
    assert advance.after is not None
    assert advance.after["percentage"] > advance.before["percentage"]


@pytest.mark.parametrize(
    ("on_breach", "flag_after", "plan_after"),
    [
        ("rollback", (False, 50.0), (PlanStatus.PAUSED, -1, None)),
        ("step-back", (True, 10.0), (PlanStatus.PAUSED, 0, 10.0)),
        ("pause", (True, 50.0), (PlanStatus.PAUSED, 1, 50.0)),
    ],
)
async def test_each_action_on_a_breach_pauses_with_evidence(
    store: Store, on_breach: str, flag_after: tuple[bool, float], plan_after: tuple[Any, ...]
) -> None:
    clock = Clock(T0)
    await new_plan(
        store, clock, guards=("error_rate > 5% over 5m",), min_sample=50, on_breach=on_breach
    )
    driver = Driver(store, clock=clock)
    for _ in range(70):  # start, then advance to 50 % after the hold
        await report(store, clock.now, totals(2, 0))
        await driver.step()
        clock.now += 1
    assert (await plan_status(store))[1] == 1
    await report(store, clock.now, totals(100, 30), totals(100, 0))
    await driver.step()
    current = await flag(store)
    assert (current.enabled, current.percentage) == flag_after
    assert (await plan_status(store)) == plan_after
    (entry,) = [e for e in await store.audit(AuditQuery(key=KEY)) if e.evidence]
    assert entry.actor == "driver"
    assert entry.reason == "guard breached: error_rate > 5% over 5m"
    evidence = entry.evidence
    assert evidence is not None
    assert evidence["rule"] == "error_rate > 5% over 5m"
    assert evidence["treatment"]["requests"] > 100
    assert evidence["treatment"]["value"] > 0.05
    assert evidence["control"] == {"value": 0.0, "requests": 100}
    assert len(evidence["window"]) == 2
    assert driver.breaches == {KEY: 1}
    # Nothing more happens to a paused plan.
    clock.now += 60
    await driver.step()
    assert (await plan_status(store)) == plan_after


@pytest.mark.parametrize(
    ("guard", "bad"),
    [
        ("error_rate > 5% over 5m", {"treatment": totals(300, 60)}),
        ("avg_latency > 2s over 5m", {"treatment": totals(300, latency_ms=3000)}),
        ("p95_latency > 1.5s over 5m", {"treatment": totals(300, latency_ms=2400)}),
        ("throughput < 50/min over 5m", {"treatment": totals(1)}),
        (
            'count(user_report{severity="critical"}) > 10 over 10m',
            {"treatment": totals(300, **{CRITICAL: 11})},
        ),
    ],
)
async def test_each_guard_breaches_and_rolls_back(
    store: Store, guard: str, bad: dict[str, Totals]
) -> None:
    clock = Clock(T0)
    await new_plan(store, clock, guards=(guard,), min_sample=100, hold=3600)
    driver = Driver(store, clock=clock)
    await driver.step()
    clock.now += 30
    good = totals(300, 0) if "throughput" not in guard else totals(300 * 5)
    await report(store, clock.now, good)
    await driver.step()
    assert (await plan_status(store))[0] is PlanStatus.RUNNING
    clock.now += 10 * 60  # the good minute left the window
    await report(store, clock.now, bad["treatment"])
    await driver.step()
    assert (await plan_status(store)) == (PlanStatus.PAUSED, -1, None)
    assert not (await flag(store)).enabled


class Health(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes]] = []

    def do_GET(self) -> None:
        status, body = self.answers.pop(0) if self.answers else (200, b'{"status": "ok"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_url() -> Iterator[str]:
    with serving(Health) as url:
        yield f"{url}/health"


async def test_three_failed_health_polls_in_a_row_roll_back(store: Store, health_url: str) -> None:
    Health.answers = []
    clock = Clock(T0)
    await new_plan(store, clock, guards=("health_failures >= 3",), health_url=health_url, hold=3600)
    health = HealthPolls()
    driver = Driver(store, clock=clock, health=health)
    await driver.step()  # starts the plan and its first poll (it passes)
    for _ in range(100):
        if health.failures_of(health_url) is not None:
            break
        await asyncio.sleep(0.02)
    assert health.failures_of(health_url) == 0
    Health.answers = [(503, b"down"), (200, b'{"status": "degraded"}'), (500, b"")]
    for expected in (1, 2, 3):
        assert await health.poll(health_url)
        assert health.failures_of(health_url) == expected
    clock.now += 1
    await driver.step()
    assert (await plan_status(store)) == (PlanStatus.PAUSED, -1, None)
    await health.close()


@pytest.mark.parametrize(
    ("status", "body", "failed"),
    [
        (200, b'{"status": "ok"}', False),
        (204, b"", False),
        (200, b'{"status": "HEALTHY"}', False),
        (200, b"fine", False),
        (200, b'{"status": "degraded"}', True),
        (200, b'{"status": 1}', True),
        (302, b"", True),
        (503, b'{"status": "ok"}', True),
        (None, b"", True),
    ],
)
def test_what_a_failed_health_poll_is(status: int | None, body: bytes, failed: bool) -> None:
    assert health_failed(status, body) is failed


async def test_not_enough_data_extends_the_hold_up_to_max_hold_then_pauses(store: Store) -> None:
    clock = Clock(T0)
    await new_plan(store, clock, guards=("error_rate > 5% over 5m",), min_sample=200, max_hold=600)
    driver = Driver(store, clock=clock)
    await driver.step()
    clock.now += 61
    await report(store, clock.now, totals(20))
    await driver.step()
    assert driver.decisions[KEY].kind.value == "extend-hold"
    assert (await plan_status(store)) == (PlanStatus.RUNNING, 0, 10.0)
    clock.now = T0 + 601
    await driver.step()
    status, step, percentage = await plan_status(store)
    assert (status, step, percentage) == (PlanStatus.PAUSED, 0, 10.0)
    plan = (await store.load()).plans[KEY]
    assert plan.reason is not None
    assert "not enough data" in plan.reason
    assert (await flag(store)).percentage == 10.0  # a pause changes no exposure


async def test_steps_advance_only_inside_the_window_across_a_dst_change(store: Store) -> None:
    # 2027-03-28: Europe/Berlin springs from 02:00 to 03:00; a 02:00-04:00 window opens at
    # 03:00 local (01:00 UTC) and lasts an hour.
    window = parse_window("02:00-04:00", "Europe/Berlin")
    clock = Clock(datetime(2027, 3, 27, 23, 0, tzinfo=UTC).timestamp())
    await new_plan(store, clock, guards=(), window=window, hold=300)
    driver = Driver(store, clock=clock)
    await driver.step()
    assert (await plan_status(store))[0] is PlanStatus.SCHEDULED
    opened = datetime(2027, 3, 28, 1, 0, tzinfo=UTC).timestamp()
    assert driver.decisions[KEY].until == opened
    clock.now = opened - 1
    await driver.step()
    assert (await plan_status(store))[0] is PlanStatus.SCHEDULED
    clock.now = opened
    await driver.step()
    assert (await plan_status(store)) == (PlanStatus.RUNNING, 0, 10.0)
    clock.now = opened + 301
    await driver.step()
    assert (await plan_status(store))[1] == 1
    # 02:00 UTC = 04:00 local: closed; the hold passes but the step waits for tomorrow.
    clock.now = datetime(2027, 3, 28, 2, 0, tzinfo=UTC).timestamp()
    await driver.step()
    assert (await plan_status(store))[1] == 1
    decision = driver.decisions[KEY]
    assert decision.reason == "waiting for the window"
    assert decision.until == datetime(2027, 3, 29, 0, 0, tzinfo=UTC).timestamp()


async def test_another_driver_takes_over_within_5_s_and_restarts_the_hold(
    store: Store, tmp_path: Path
) -> None:
    clock = Clock(T0)
    await new_plan(store, clock, guards=(), hold=60)
    other_store = SQLiteStore(tmp_path / "flagport.db")
    await other_store.open()
    try:
        first = Driver(store, clock=clock, holder="first")
        second = Driver(other_store, clock=clock, holder="second")
        await first.step()
        assert await second.step() == []
        assert (await plan_status(store))[0] is PlanStatus.RUNNING
        clock.now += 40  # the first dies 20 s before its step's hold ends
        await first.step()
        second.lease_seen = None
        for _ in range(5):  # the second tries once a second
            clock.now += 1
            await second.step()
            if second.holding:
                break
        assert second.holding
        assert clock.now - (T0 + 40) <= 5
        lease = await store.lease(LEASE_NAME, clock.now)
        assert lease is not None
        assert lease.holder == "second"
        plan = (await store.load()).plans[KEY]
        assert plan.hold_started_at == clock.now  # no catch-up on a hold nobody watched
        assert (await actions(store))[-1] == "plan-hold-restart"
        clock.now += 30
        await second.step()
        assert (await plan_status(store))[1] == 0
    finally:
        await other_store.close()


async def test_a_stale_driver_cannot_repeat_a_step(store: Store, tmp_path: Path) -> None:
    """Fencing: two drivers deciding on the same record (one lost its lease without
    knowing): exactly one commit, one audit entry."""
    clock = Clock(T0)
    await new_plan(store, clock, guards=())
    other_store = SQLiteStore(tmp_path / "flagport.db")
    await other_store.open()
    try:
        first = Driver(store, clock=clock, holder="first")
        stale = Driver(other_store, clock=clock, holder="stale")
        first.holding = stale.holding = True  # both believe they hold it
        first._renewed_at = stale._renewed_at = clock.now
        results = await asyncio.gather(first.drive(clock.now), stale.drive(clock.now))
        assert sorted(len(r) for r in results) == [0, 1]
        assert (await actions(store)).count("plan-start") == 1
    finally:
        await other_store.close()


async def test_a_person_pauses_resumes_and_aborts(store: Store) -> None:
    clock = Clock(T0)
    plans = service(store, clock)
    await new_plan(store, clock, guards=())
    driver = Driver(store, clock=clock)
    await driver.step()
    await plans.pause(KEY, ALICE, None)
    clock.now += 3600
    await driver.step()
    assert (await plan_status(store)) == (PlanStatus.PAUSED, 0, 10.0)
    # The flag was raised by hand meanwhile: resume never lowers exposure.
    current = await flag(store)
    raised = msgspec.structs.replace(current, version=current.version + 1, percentage=60.0)
    await store.commit([Mutation("flag", KEY, "put", raised, current.version)], [])
    resumed, _ = await plans.resume(KEY, ALICE, None)
    assert (resumed.status, resumed.step, resumed.percentage) == (PlanStatus.RUNNING, 1, 60.0)
    assert resumed.hold_started_at == clock.now
    assert (await flag(store)).percentage == 60.0
    aborted, _ = await plans.abort(KEY, ALICE, "bad idea", rollback=True)
    assert aborted.status is PlanStatus.ABORTED
    assert not (await flag(store)).enabled
    with pytest.raises(NotFound):
        await plans.pause("nope", ALICE, None)
    # A finished plan is replaced by a new one.
    await new_plan(store, clock, guards=())
    assert (await plan_status(store))[0] is PlanStatus.SCHEDULED


async def victim(path: Path) -> None:
    """A driver on its own store object, on a clock of its own, until the hook kills it."""
    store = SQLiteStore(path)
    await store.open()
    clock = Clock(T0)
    driver = Driver(store, clock=clock, holder="victim")
    for _ in range(100):
        await driver.step()
        clock.now += 10


def fork_victim(path: Path, kill: str) -> int:
    """A real process (forked: no interpreter start, no imports) running :func:`victim`
    with the kill hook set; its pid."""
    pid = os.fork()
    if pid == 0:  # the child: its own thread and event loop, never back into pytest
        try:
            os.environ[KILL_HOOK_ENV] = kill
            thread = threading.Thread(target=lambda: asyncio.run(victim(path)))
            thread.start()
            thread.join()
        finally:
            os._exit(0)
    return pid


#: The plan's commits: start, advance, advance, complete.
COMMITS = 4


async def test_a_driver_killed_just_before_or_after_each_commit_leaves_one_entry_per_transition(
    tmp_path: Path,
) -> None:
    """The test-only hook SIGKILLs a real driver process just before / just after its N-th
    commit; another driver takes over. The audit log then holds every transition exactly
    once (the restarted hold after the takeover aside), in order."""
    cases = [(when, n) for n in range(1, COMMITS + 1) for when in ("before", "after")]
    stores: list[Store] = []
    pids: list[int] = []
    for when, n in cases:
        path = tmp_path / f"{when}-{n}.db"
        store = SQLiteStore(path)
        await store.open()
        stores.append(store)
        await store.commit([Mutation("flag", KEY, "put", Flag(version=1, enabled=False), None)], [])
        await new_plan(store, Clock(T0), guards=(), hold=30)
        pids.append(fork_victim(path, f"{when}:{n}"))
    try:
        for (when, n), pid, store in zip(cases, pids, stores, strict=True):
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status), (when, n, status)
            assert os.WTERMSIG(status) == signal.SIGKILL, (when, n, status)
            done = (await actions(store))[1:]  # after plan-create
            assert len(done) == (n if when == "after" else n - 1), (when, n, done)
            clock = Clock(T0 + 3600)  # the victim's lease has long expired
            survivor = Driver(store, clock=clock, holder="survivor")
            for _ in range(10):
                await survivor.step()
                clock.now += 31
            taken = [a for a in (await actions(store))[1:] if a != "plan-hold-restart"]
            assert taken == ["plan-start", "plan-advance", "plan-advance", "plan-complete"], (
                when,
                n,
                taken,
            )
            assert (await flag(store)).percentage == 100.0
    finally:
        for pid in pids:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        for store in stores:
            await store.close()


async def test_a_plan_that_cannot_be_committed_keeps_no_other_from_its_rollback(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flag stored before a limit it now exceeds (docs/adr/0008: stored records are
    served as they are) cannot take its plan's first step: that plan fails its rounds, and
    the plan after it in key order still starts, breaches and rolls back."""
    legacy = "a-legacy"
    with monkeypatch.context() as older:
        older.setattr(flagport.engine._limits, "MAX_TAGS", 100)  # the release before the limit
        tags = tuple(f"team-{n}" for n in range(60))
        await store.commit(
            [Mutation("flag", legacy, "put", Flag(version=1, enabled=False, tags=tags), None)],
            [AuditEntry(actor="alice", action="create", key=legacy, at="2027-01-15T08:00:00Z")],
        )
    clock = Clock(T0)
    spec = PlanSpec(key=legacy, steps=(10.0, 100.0), hold=60)
    await service(store, clock).create(spec, ALICE, "an old flag")
    await new_plan(store, clock, guards=("error_rate > 5% over 5m",), min_sample=100, hold=3600)
    driver = Driver(store, clock=clock)
    await driver.step()
    assert "limit" in driver.failed_plans[legacy] or "tags" in driver.failed_plans[legacy]
    assert (await plan_status(store)) == (PlanStatus.RUNNING, 0, 10.0)
    clock.now += 30
    await report(store, clock.now, totals(300, 60))
    await driver.step()
    assert (await plan_status(store)) == (PlanStatus.PAUSED, -1, None)
    assert not (await flag(store)).enabled
    assert legacy in driver.failed_plans  # tried again each round, still failing


async def test_a_store_error_between_rounds_restarts_no_hold(store: Store) -> None:
    """A round that fails on the store makes the driver stop counting on its lease; taking
    it again before it lapsed is no takeover, so no plan's hold starts over (were it, store
    errors more frequent than the hold would keep a plan from ever advancing)."""
    flaky = FlakyStore(store)
    await new_plan(store, Clock(time.time()), guards=(), hold=3600)
    driver = Driver(flaky, holder="only")  # type: ignore[arg-type]
    running = asyncio.create_task(driver.run())
    try:
        assert await _eventually(lambda: _has_action(store, "plan-start"))
        flaky.failures = 1
        assert await _eventually(lambda: _is_zero(lambda: flaky.failures))
        await asyncio.sleep(2 * RENEW_EVERY + TICK)  # the lease taken again, rounds go on
        assert driver.holding
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert "plan-hold-restart" not in await actions(store)


async def test_a_slow_round_keeps_its_lease(store: Store) -> None:
    """Three plans whose outcome reads take 2 s each: a 6 s round, longer than the 3 s
    lease. The driver renews it between plans, so it still holds it when the round ends
    and nobody else could have taken it midway."""
    clock = Clock(T0)
    for key in ("a-flag", "b-flag", "c-flag"):
        await store.commit(
            [Mutation("flag", key, "put", Flag(version=1, enabled=False), None)],
            [AuditEntry(actor="alice", action="create", key=key, at="2027-01-15T08:00:00Z")],
        )
        spec = PlanSpec(
            key=key, steps=(10.0, 100.0), hold=3600, guards=("error_rate > 5% over 5m",)
        )
        await service(store, clock).create(spec, ALICE, "slow reads")
    slow = SlowReads(store, clock, seconds=2.0)
    driver = Driver(slow, clock=clock, holder="slow")  # type: ignore[arg-type]
    await driver.step()  # takes the lease, starts the plans
    began = clock.now
    await driver.step()  # judges them: reads outcomes, 2 s each
    assert clock.now - began >= 6.0
    lease = await store.lease(LEASE_NAME, clock.now)
    assert lease is not None
    assert lease.holder == "slow"


class SlowReads:
    """A real store whose outcome reads take ``seconds`` on the test's clock."""

    def __init__(self, store: Store, clock: Clock, seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def outcomes(self, *args: Any) -> Any:
        self.clock.now += self.seconds
        return await self.store.outcomes(*args)


class FlakyStore:
    """A real store whose next ``failures`` plan reads fail as an unreachable store's do."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def load_plans(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the store did not answer")
        return await self.store.load_plans()


async def _has_action(store: Store, action: str) -> bool:
    return action in await actions(store)


async def _is_zero(value: Any) -> bool:
    return bool(value() == 0)


async def _eventually(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_vs_control_rides_out_a_site_wide_incident_and_catches_a_real_one(
    store: Store,
) -> None:
    clock = Clock(T0)
    await new_plan(
        store,
        clock,
        guards=("error_rate > 5% over 5m",),
        min_sample=100,
        vs_control=True,
        hold=3600,
    )
    driver = Driver(store, clock=clock)
    await driver.step()
    for _ in range(5):  # both cohorts at 8 %: the whole site is bad, not the flag
        clock.now += 30
        await report(store, clock.now, totals(300, 24), totals(300, 24))
        await driver.step()
    assert (await plan_status(store))[0] is PlanStatus.RUNNING
    (judgement,) = driver.decisions[KEY].judgements
    assert judgement.verdict.value == "pass"
    assert judgement.evidence.treatment is not None
    assert judgement.evidence.treatment.value is not None
    assert judgement.evidence.treatment.value > 0.05  # beyond the threshold, yet no breach
    for _ in range(5):  # now the treatment alone fails
        clock.now += 30
        await report(store, clock.now, totals(300, 60), totals(300, 6))
        await driver.step()
    assert (await plan_status(store)) == (PlanStatus.PAUSED, -1, None)
    (entry,) = [e for e in await store.audit(AuditQuery(key=KEY)) if e.evidence]
    assert entry.evidence is not None
    assert entry.evidence["statistic"] >= 20
