"""The store contract's guarded-rollout part, on every backend: versioned plan records
committed with the flag change and the audit entry, the driver's lease, and the outcome
totals per flag, minute and cohort (docs/adr/0023-rollout-plans-driver-lease.md)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from flagport.engine import Flag
from flagport.rollout.outcomes import MAX_EVENT_SERIES, MAX_TOTAL, Cohort, Totals, series_key
from flagport.rollout.plan import PlanSpec, new_plan, pause, start
from flagport_server.errors import InvalidInput, VersionConflict
from flagport_server.stores.base import AuditEntry, AuditQuery, Mutation, Store
from tests.support.stores import Backend

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
CRITICAL = series_key("user_report", {"severity": "critical"})


def plan_put(plan: object, key: str = "checkout", expected: int | None = -1) -> Mutation:
    return Mutation("plan", key, "put", plan, expected)  # type: ignore[arg-type]


def as_json(value: object) -> dict[str, object]:
    return msgspec.json.decode(msgspec.json.encode(value))  # type: ignore[no-any-return]


def a_plan(key: str = "checkout") -> object:
    return new_plan(PlanSpec(key=key, steps=(10.0, 50.0, 100.0), hold=60), NOW)


async def test_a_plan_transition_commits_with_its_flag_change_and_audit_entry(
    store: Store,
) -> None:
    flag = Flag(version=1, enabled=False)
    scheduled = a_plan()
    await store.commit(
        [Mutation("flag", "checkout", "put", flag, None), plan_put(scheduled, expected=None)],
        [
            AuditEntry(
                actor="alice", action="plan-create", key="checkout", at="2027-01-15T08:00:00Z"
            )
        ],
    )
    state = await store.load()
    assert state.plans == {"checkout": scheduled}
    assert await store.load_plans() == state.plans
    running = start(scheduled, NOW + 1)  # type: ignore[arg-type]
    enabled = msgspec.structs.replace(flag, version=2, enabled=True, percentage=10.0)
    evidence = {"rule": "error_rate > 5% over 5m", "treatment": [0.07, 400]}
    result = await store.commit(
        [Mutation("flag", "checkout", "put", enabled, 1), plan_put(running, expected=1)],
        [
            AuditEntry(
                actor="driver",
                action="plan-start",
                key="checkout",
                at="2027-01-15T08:00:01Z",
                plan=as_json(running),
                evidence=evidence,
            )
        ],
    )
    state = await store.load()
    assert state.document.version == result.snapshot_version == 2
    assert state.plans["checkout"] == running
    assert await store.load_plans() == {"checkout": running}
    assert state.document.flags["checkout"] == enabled
    (logged,) = await store.audit(AuditQuery(key="checkout", limit=1))
    assert logged.plan == as_json(running)
    assert logged.evidence == evidence
    assert logged.snapshot_version == 2


async def test_a_stale_plan_version_applies_nothing_of_the_commit(store: Store) -> None:
    scheduled = a_plan()
    flag = Flag(version=1)
    await store.commit(
        [Mutation("flag", "checkout", "put", flag, None), plan_put(scheduled, expected=None)], []
    )
    running = start(scheduled, NOW + 1)  # type: ignore[arg-type]
    await store.commit([plan_put(running, expected=1)], [])
    # A second driver holding the first record takes the same step: refused, nothing applied.
    changed = msgspec.structs.replace(flag, version=2, percentage=10.0)
    with pytest.raises(VersionConflict) as caught:
        await store.commit(
            [Mutation("flag", "checkout", "put", changed, 1), plan_put(running, expected=1)],
            [
                AuditEntry(
                    actor="driver", action="plan-start", key="checkout", at="2027-01-15T08:00:00Z"
                )
            ],
        )
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    state = await store.load()
    assert state.document.flags["checkout"] == flag
    assert state.document.version == 2
    assert await store.audit(AuditQuery(key="checkout")) == []
    paused = pause(running, "by hand", NOW + 2, actor="alice")
    await store.commit([plan_put(paused, expected=2)], [])
    await store.commit([Mutation("plan", "checkout", "delete", None, 3)], [])
    assert (await store.load()).plans == {}
    assert await store.load_plans() == {}


async def test_a_plan_stored_under_another_flag_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="cannot be stored as 'other'"):
        await store.commit([plan_put(a_plan(), key="other")], [])
    assert (await store.load()).document.version == 0


async def test_an_unreadable_plan_is_named_and_the_rest_load(
    store: Store, store_backend: Backend
) -> None:
    await store.commit([plan_put(a_plan("good"), key="good")], [])
    store_backend.write_raw("plan", "bad", '{"format": 99, "nope": 1}')
    newer = msgspec.json.encode(msgspec.structs.replace(a_plan("late"), format=2)).decode()  # type: ignore[type-var]
    store_backend.write_raw("plan", "late", newer)
    state = await store.load()
    assert list(state.plans) == ["good"]
    assert set(state.unreadable_plans) == {"bad", "late"}
    assert "upgrade" in state.unreadable_plans["late"]
    # The driver's read skips what it cannot drive, as the whole load does.
    assert list(await store.load_plans()) == ["good"]


async def test_one_lease_holder_at_a_time_renewal_release_and_expiry(
    store: Store, store_backend: Backend
) -> None:
    other = store_backend.make()
    await other.open()
    try:
        assert await store.lease("driver", NOW) is None
        assert await store.lease_seen("driver") is None
        assert await store.acquire_lease("driver", "a", 5.0, NOW)
        assert not await other.acquire_lease("driver", "b", 5.0, NOW + 1)
        assert await store.acquire_lease("driver", "a", 5.0, NOW + 2)  # renewal
        held = await other.lease("driver", NOW + 2)
        assert held is not None
        assert held.holder == "a"
        assert await other.lease_seen("driver") == NOW + 2
        await other.release_lease("driver", "b")  # not b's: nothing happens
        assert not await other.acquire_lease("driver", "b", 5.0, NOW + 3)
        await store.release_lease("driver", "a")
        assert await other.acquire_lease("driver", "b", 0.3, NOW + 3)
        assert not await store.acquire_lease("driver", "a", 5.0, NOW + 3)
        # Expiry: SQLite judges by the callers' clock, Redis by its own (PX): both pass here.
        await asyncio.sleep(0.4)
        assert await store.acquire_lease("driver", "a", 5.0, NOW + 10)
        assert await store.lease_seen("driver") == NOW + 10
    finally:
        await other.close()


def totals(requests: int, failures: int, events: dict[str, int] | None = None) -> Totals:
    buckets = [0] * 13
    buckets[3] = requests
    return Totals(
        requests=requests,
        failures=failures,
        latency_us_sum=requests * 40_000,
        latency_buckets=buckets,
        events=events or {},
    )


async def test_outcomes_sum_exactly_across_workers_and_read_by_window(
    store: Store, store_backend: Backend
) -> None:
    minute = int(NOW // 60 * 60)
    other = store_backend.make()
    await other.open()
    try:
        rows = [
            (
                "checkout",
                minute,
                Cohort.TREATMENT,
                totals(10, 1, {CRITICAL: 2}),
            ),
            ("checkout", minute, Cohort.CONTROL, totals(12, 0)),
            ("checkout", minute - 60, Cohort.TREATMENT, totals(5, 5)),
            ("other", minute, Cohort.TREATMENT, totals(99, 9)),
        ]
        await asyncio.gather(store.record_outcomes(rows, NOW), other.record_outcomes(rows, NOW))
        read = await other.outcomes("checkout", minute - 60, minute)
        assert [(m, c) for _, m, c, _ in read] == [
            (minute - 60, Cohort.TREATMENT),
            (minute, Cohort.CONTROL),
            (minute, Cohort.TREATMENT),
        ]
        treated = read[2][3]
        assert (treated.requests, treated.failures, treated.latency_us_sum) == (20, 2, 800_000)
        assert treated.latency_buckets[3] == 20
        assert treated.events == {CRITICAL: 4}
        assert [r[1] for r in await store.outcomes("checkout", minute, minute)] == [minute] * 2
        if store_backend.name == "sqlite":  # Redis expires the keys by its own clock
            later = NOW + 48 * 3600 + 120
            fresh = ("checkout", int(later // 60 * 60), Cohort.CONTROL, totals(1, 0))
            await store.record_outcomes([fresh], later)
            assert await store.outcomes("checkout", minute - 60, minute) == []
    finally:
        await other.close()


async def test_event_series_beyond_the_cap_are_left_out(store: Store) -> None:
    minute = int(NOW // 60 * 60)
    many = {f"e{i}": 1 for i in range(MAX_EVENT_SERIES)}
    assert (
        await store.record_outcomes([("k", minute, Cohort.TREATMENT, totals(1, 0, many))], NOW) == 0
    )
    extra = {"e0": 2, "new": 1}
    assert (
        await store.record_outcomes([("k", minute, Cohort.TREATMENT, totals(1, 0, extra))], NOW)
        == 1
    )
    (row,) = await store.outcomes("k", minute, minute)
    assert row[3].events["e0"] == 3
    assert "new" not in row[3].events
    assert len(row[3].events) == MAX_EVENT_SERIES
    assert row[3].requests == 2


async def test_totals_saturate_and_a_write_never_fails_half_way(store: Store) -> None:
    """Totals past 64 bits (many accepted items summed, each within its own bounds) saturate
    at MAX_TOTAL instead of failing the write: a failed write is retried whole, and on Redis
    the rows before the failing one would have been counted twice."""
    minute = int(NOW // 60 * 60)
    huge = Totals(
        requests=2**62,
        failures=2**62,
        latency_us_sum=2**62,
        latency_buckets=[2**62] + [0] * 12,
        events={CRITICAL: 2**62},
    )
    for _ in range(5):
        rows = [
            ("before", minute, Cohort.TREATMENT, totals(10, 1)),
            ("huge", minute, Cohort.TREATMENT, huge),
        ]
        await store.record_outcomes(rows, NOW)
    ((*_, before),) = await store.outcomes("before", minute, minute)
    assert (before.requests, before.failures) == (50, 5)
    ((*_, saturated),) = await store.outcomes("huge", minute, minute)
    assert saturated.requests == saturated.failures == saturated.latency_us_sum == MAX_TOTAL
    assert saturated.latency_buckets[0] == MAX_TOTAL
    assert saturated.events == {CRITICAL: MAX_TOTAL}
