"""Outcome signals through a real server (``flags serve --no-stats``: they flow without
stats): ``POST /v1/outcomes`` refuses bad batches as a whole (nothing counted) and bad
items one by one (each with why), counts the rest into the store's per-minute rows, keeps
what a graceful stop has not yet written, and a plan whose outcomes turn bad is rolled
back by the driver (docs/spec.md, "Guarded rollouts"). The worker's buffer is tested on a
real Redis server taken down and brought back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from flagport.reporting import OutcomeReporter, Read
from flagport.rollout.outcomes import (
    Cohort,
    OutcomeBatch,
    Totals,
    minute_of,
    series_key,
)
from flagport_server.driver import Driver
from flagport_server.errors import StoreError, StoreUnavailable
from flagport_server.outcomes import OutcomeBuffer
from flagport_server.plans import DRIVER_ACTOR
from flagport_server.stores import open_store
from tests.server._fixtures import create_flags, raw_post
from tests.support.outcomes import stored_outcomes
from tests.support.redis import redis_server, unique_prefix
from tests.support.server import RunningServer, running_server, wait_until

KEY = "checkout"
QUIET = "quiet-flag"
#: Counted after what a test checks was not counted: once it is in the store, so would the
#: rest be (one worker, one buffer, drained in one write).
MARKER = "marker-flag"
CRITICAL = series_key("user_report", {"severity": "critical"})


def item(
    requests: int = 10,
    failures: int = 1,
    *,
    key: str = KEY,
    variant: str = "on",
    cohort: str = "treatment",
    buckets: list[int] | None = None,
    latency_ms_sum: float | None = None,
) -> dict[str, Any]:
    return {
        "key": key,
        "variant": variant,
        "cohort": cohort,
        "requests": requests,
        "failures": failures,
        "latency_ms_sum": 40.0 * requests if latency_ms_sum is None else latency_ms_sum,
        "latency_buckets": buckets if buckets is not None else [0, 0, 0, requests] + [0] * 9,
    }


def event(count: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "key": KEY,
        "variant": "on",
        "cohort": "treatment",
        "name": "user_report",
        "labels": labels or {"severity": "critical"},
        "count": count,
    }


def batch(
    *items: dict[str, Any],
    events: tuple[dict[str, Any], ...] = (),
    period: list[float] | None = None,
) -> dict[str, Any]:
    """A batch of ``items`` and ``events``, over the last second unless ``period``."""
    now = time.time()
    return {"period": period or [now - 1, now], "items": list(items), "events": list(events)}


def settled(server: RunningServer, key: str, requests: int) -> dict[Cohort, Totals]:
    """``key``'s stored totals once ``requests`` treatment requests reached the store."""
    found: dict[Cohort, Totals] = {}

    def there() -> bool:
        found.update(stored_outcomes(server, key))
        return found[Cohort.TREATMENT].requests >= requests

    assert wait_until(there, timeout=10.0), found
    return found


def after_a_drain(server: RunningServer, client: httpx.Client) -> None:
    """Wait until what was posted before has been drained into the store."""
    before = stored_outcomes(server, MARKER)[Cohort.CONTROL].requests
    marker = item(1, 0, key=MARKER, variant="off", cohort="control")
    assert client.post("/v1/outcomes", json=batch(marker)).json()["counted"] == 1
    assert wait_until(lambda: stored_outcomes(server, MARKER)[Cohort.CONTROL].requests > before)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("outcomes")
    with running_server(workdir, extra=["--no-stats"]) as running:
        create_flags(running, {KEY: {"enabled": True, "percentage": 50}, QUIET: {}, MARKER: {}})
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as opened:
        yield opened


def test_counted_outcomes_reach_the_store_exactly_without_stats(
    server: RunningServer, client: httpx.Client
) -> None:
    before = stored_outcomes(server, KEY)[Cohort.TREATMENT]
    control = item(20, 0, variant="off", cohort="control", latency_ms_sum=123.456)
    answer = client.post(
        "/v1/outcomes",
        json=batch(item(10, 1), item(5, 5), control, events=(event(2), event(3))),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"counted": 5, "requests": 35, "events": 5, "rejected": []}
    found = settled(server, KEY, before.requests + 15)
    treatment = found[Cohort.TREATMENT]
    assert treatment.requests - before.requests == 15
    assert treatment.failures - before.failures == 6
    assert treatment.latency_us_sum - before.latency_us_sum == 600_000
    assert treatment.events[CRITICAL] - before.events.get(CRITICAL, 0) == 5
    assert found[Cohort.CONTROL].latency_us_sum >= 123_456
    metrics = client.get("/metrics").text.splitlines()
    assert any(
        line.startswith("flagport_outcome_requests_total{")
        and f'flag="{KEY}"' in line
        and 'cohort="control"' in line
        for line in metrics
    ), [line for line in metrics if "outcome" in line]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (item(10, 11), "failures (11) exceed requests (10)"),
        (item(10, 1, buckets=[10] * 12), "latency_buckets must have 13 counts, got 12"),
        (item(10, 1, buckets=[9] + [0] * 12), "latency_buckets count 9 requests"),
        (item(key="no-such-flag"), "unknown flag 'no-such-flag'"),
        (item(variant="purple"), "has no variant 'purple'"),
        (item(2_000_000, 0), "requests must be at most 1,000,000"),
        (item(1, 0, latency_ms_sum=86_400_001.0), "a day per request"),
    ],
)
def test_a_bad_item_is_refused_with_why_and_the_rest_counted(
    client: httpx.Client, bad: dict[str, Any], words: str
) -> None:
    good = item(3, 0, key=QUIET, variant="off", cohort="control")
    answer = client.post("/v1/outcomes", json=batch(good, bad))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["counted"], body["requests"]) == (1, 3)
    [rejected] = body["rejected"]
    assert (rejected["kind"], rejected["index"], rejected["key"]) == ("item", 1, bad["key"])
    assert words in rejected["error"], rejected


@pytest.mark.parametrize(
    ("period", "words"),
    [
        (lambda now: [now - 300, now - 200], "stale: the period ended 200 s ago"),
        (lambda now: [now, now + 60], "in the future"),
        (lambda now: [now - 1, now - 2], "start <= end"),
        (lambda now: [now - 200, now], "at most 120 s long"),
    ],
)
def test_a_bad_period_refuses_every_item_and_event(
    server: RunningServer, client: httpx.Client, period: Any, words: str
) -> None:
    after_a_drain(server, client)  # what other tests counted
    before = stored_outcomes(server, QUIET)
    body = batch(
        item(key=QUIET, variant="off", cohort="control"),
        events=({**event(), "key": QUIET, "variant": "off", "cohort": "control"},),
        period=period(time.time()),
    )
    answer = client.post("/v1/outcomes", json=body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["counted"], found["requests"], found["events"]) == (0, 0, 0)
    assert [(r["kind"], r["index"]) for r in found["rejected"]] == [("item", 0), ("event", 0)]
    assert all(words in r["error"] for r in found["rejected"]), found
    after_a_drain(server, client)
    assert stored_outcomes(server, QUIET) == before


@pytest.mark.parametrize(
    ("body", "status", "words", "field"),
    [
        (batch(*[item()] * 1001), 400, "1001 items: at most 1000 per batch", None),
        (batch(events=(event(),) * 1001), 400, "1001 events: at most 1000 per batch", None),
        (batch(item(-1, 0)), 400, "Expected `int` >= 0", "$.items[0].requests"),
        (batch({**item(), "cohort": "both"}), 400, "Invalid enum value 'both'", None),
        (batch({**item(), "extra": 1}), 400, "unknown field `extra`", None),
        ({"items": [item()]}, 400, "missing required field `period`", None),
        (batch(event()), 400, "unknown field `name`", "$.items[0]"),
    ],
)
def test_a_bad_batch_is_refused_as_a_whole_and_nothing_counted(
    server: RunningServer,
    client: httpx.Client,
    body: dict[str, Any],
    status: int,
    words: str,
    field: str | None,
) -> None:
    after_a_drain(server, client)
    before = stored_outcomes(server, KEY)
    answer = client.post("/v1/outcomes", json=body)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert words in problem["detail"], problem
    if field is not None:
        assert problem["field"] == field, problem
    after_a_drain(server, client)
    assert stored_outcomes(server, KEY) == before


def test_a_body_over_one_mebibyte_is_refused(client: httpx.Client) -> None:
    padding = " " * (1024 * 1024)
    answer = raw_post(client, "/v1/outcomes", b'{"period": [1, 2]' + padding.encode() + b"}")
    assert answer.status_code == 413, answer.text


def test_outcomes_are_never_answered_cross_origin(client: httpx.Client) -> None:
    origin = {"Origin": "https://portal.example"}
    answer = client.post("/v1/outcomes", json=batch(), headers=origin)
    assert answer.status_code == 200, answer.text
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options(
        "/v1/outcomes", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


# -- the worker's buffer on a real Redis server that goes away ----------------------------------


def _batch(requests: int, now: float, **labels: str) -> OutcomeBatch:
    body = batch(item(requests, 0), events=(event(1, **labels),) if labels else ())
    body["period"] = [now - 1, now]
    return msgspec.convert(body, OutcomeBatch)


def _variants(key: str) -> list[str] | None:
    return ["on", "off"] if key == KEY else None


def test_a_failed_write_keeps_the_rows_for_the_next_drain(tmp_path: Path) -> None:
    async def scenario() -> None:
        with redis_server(tmp_path) as redis:
            store = open_store(f"{redis.url}?prefix={unique_prefix()}&socket_timeout=0.5")
            await store.open()
            recorded: list[int] = []
            buffer = OutcomeBuffer(store, on_recorded=lambda: recorded.append(1))
            now = time.time()
            buffer.add(_batch(10, now), now, _variants)
            redis.kill()
            with pytest.raises(StoreError):
                await buffer.drain(now)
            assert (buffer.rows, recorded) == (1, [])
            buffer.add(_batch(5, now), now, _variants)  # counted while the store is down
            redis.start()
            await buffer.drain(now)
            assert (buffer.rows, recorded) == (0, [1])
            minute = minute_of(now)
            rows = await store.outcomes(KEY, minute - 60, minute)
            assert [(c, t.requests) for _, _, c, t in rows] == [(Cohort.TREATMENT, 15)]
            await store.close()

    asyncio.run(scenario())


def test_a_full_buffer_refuses_batches_and_counts_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'flagport.db'}")
        buffer = OutcomeBuffer(store, max_rows=1, max_series=3)
        now = time.time()
        buffer.add(_batch(1, now), now, _variants)
        with pytest.raises(StoreUnavailable, match="wait for the store"):
            buffer.add(_batch(1, now), now, _variants)
        assert buffer.aggregate.totals(KEY, minute_of(now), Cohort.TREATMENT).requests == 1
        series = OutcomeBuffer(store, max_series=2)
        for severity in ("critical", "minor"):
            series.add(_batch(1, now, severity=severity), now, _variants)
        assert series.series == 2
        with pytest.raises(StoreUnavailable):
            series.add(_batch(1, now, severity="major"), now, _variants)

    asyncio.run(scenario())


# -- a live plan, its outcomes sent over HTTP ------------------------------------------------


def _plan(admin: httpx.Client, key: str) -> dict[str, Any]:
    answer = admin.get(f"/admin/v1/rollouts/{key}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_a_live_plan_reads_outcomes_over_http_and_rolls_back_when_they_turn_bad(
    tmp_path: Path,
) -> None:
    """issue 17 item 5: ``--hold 3s``, outcomes sent over HTTP pass the guard, the plan
    advances, they turn bad, the driver rolls the flag back by itself. Then a graceful
    stop loses none of the batches it acknowledged."""
    with running_server(tmp_path, extra=["--no-stats"]) as running:
        create_flags(running, {KEY: {"enabled": False}})
        with running.admin(timeout=10.0) as admin, running.client(timeout=10.0) as client:
            started = admin.post(
                "/admin/v1/rollouts/",
                json={
                    "key": KEY,
                    "steps": "10,50,100",
                    "hold": "3s",
                    "guards": ["error_rate > 5% over 1m"],
                    "min_sample": 50,
                    "reason": "release 7",
                },
            )
            assert started.status_code == 201, started.text
            assert wait_until(lambda: _plan(admin, KEY)["step"] == 1, timeout=10.0)

            # Healthy: 1% errors in the treatment, read back in the guard's reading.
            answer = client.post("/v1/outcomes", json=batch(item(100, 1)))
            assert answer.json()["counted"] == 1, answer.text

            def read_back() -> bool:
                [guard] = _plan(admin, KEY)["guards"]
                return bool(guard["evidence"]["treatment"]["requests"] >= 100)

            assert wait_until(read_back, timeout=10.0)
            [guard] = _plan(admin, KEY)["guards"]
            assert guard["verdict"] == "pass", guard
            assert guard["evidence"]["treatment"]["value"] == pytest.approx(0.01)
            assert wait_until(lambda: _plan(admin, KEY)["step"] == 2, timeout=15.0)

            # The new version fails for the treatment: 40% errors. Rolled back by itself.
            answer = client.post("/v1/outcomes", json=batch(item(150, 100)))
            assert answer.json()["counted"] == 1, answer.text
            acknowledged = time.monotonic()
            assert wait_until(lambda: _plan(admin, KEY)["status"] == "paused", timeout=10.0)
            acted_after = time.monotonic() - acknowledged
            flag = admin.get(f"/admin/v1/flags/{KEY}").json()
            assert flag["enabled"] is False, flag
            entries = admin.get("/admin/v1/audit", params={"key": KEY}).json()["entries"]
            rollback = next(e for e in entries if e["action"] == "plan-rollback")
            assert rollback["actor"] == DRIVER_ACTOR.name, rollback
            assert "error_rate > 5% over 1m" in str(rollback), rollback
            # A graceful stop writes what was acknowledged: SIGINT just after these batches,
            # most of them still in the worker's buffer.
            before = stored_outcomes(running, KEY)[Cohort.CONTROL]
            for _ in range(20):
                answer = client.post("/v1/outcomes", json=batch(item(7, 1, cohort="control")))
                assert answer.json()["counted"] == 1, answer.text
        running.stop()
        assert running.process.returncode == 0, running.log()
        control = stored_outcomes(running, KEY)[Cohort.CONTROL]
        assert (control.requests - before.requests, control.failures - before.failures) == (
            140,
            20,
        )
        # The budget is 2 s (p99 over 20 runs); here, one run on a loaded machine.
        assert acted_after < 5.0, acted_after


def test_a_drain_wakes_the_driver_at_once(tmp_path: Path) -> None:
    """After each write of outcomes the driver re-judges at once, not at its next tick."""

    class Rounds(Driver):
        rounds = 0

        async def step(self) -> list[Any]:
            self.rounds += 1
            return await super().step()

    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'flagport.db'}")
        await store.open()
        driver = Rounds(store, served_plans=dict)  # no plan: a round does no store I/O
        buffer = OutcomeBuffer(store, on_recorded=driver.wake)
        running = asyncio.get_running_loop().create_task(driver.run())
        try:
            await asyncio.sleep(0.05)
            before = driver.rounds
            for _ in range(5):  # five drains within 0.3 s: five rounds (a tick is 0.5 s)
                now = time.time()
                buffer.add(_batch(1, now), now, _variants)
                await buffer.drain(now)
                await asyncio.sleep(0.06)
            assert driver.rounds - before >= 5, (before, driver.rounds)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await store.close()

    asyncio.run(scenario())


def test_the_sdk_reporter_posts_to_the_server(server: RunningServer) -> None:
    """The Python SDK's reporter (flagport.reporting) and this route speak one wire shape."""
    before = stored_outcomes(server, QUIET)[Cohort.TREATMENT].requests
    with server.client(timeout=10.0) as http:
        reporter = OutcomeReporter(http, interval=3600)
        read = Read(QUIET, "on", "treatment")
        for index in range(30):
            reporter.record_request([read], failed=index % 10 == 0, seconds=0.02)
        assert reporter.flush() == 30
        reporter.close()
    found = settled(server, QUIET, before + 30)[Cohort.TREATMENT]
    assert found.requests - before == 30


def test_a_bad_event_is_refused_with_why(client: httpx.Client) -> None:
    good = {**event(), "key": QUIET, "variant": "off", "cohort": "control"}
    bad = [
        ({**good, "labels": {"severity": "a\r\nforged: b"}}, "a value has a control character"),
        ({**good, "labels": {f"l{i}": "v" for i in range(9)}}, "9 labels: at most 8"),
        ({**good, "labels": {"9bad": "v"}}, "invalid label name '9bad'"),
        ({**good, "count": 2_000_000}, "count must be at most 1,000,000"),
        ({**good, "variant": "purple"}, "has no variant 'purple'"),
    ]
    answer = client.post("/v1/outcomes", json=batch(events=(good, *(b for b, _ in bad))))
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["counted"], found["events"]) == (1, 1)
    assert [(r["kind"], r["index"]) for r in found["rejected"]] == [
        ("event", index) for index in range(1, len(bad) + 1)
    ]
    for rejected, (_, words) in zip(found["rejected"], bad, strict=True):
        assert words in rejected["error"], rejected
