"""The counter and recorder without a store: a bulk evaluation's units reach the hour's unit
sets exactly once per unit, hour and set of served results, and never go missing."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from flagport.engine import CompiledSnapshot, compile_snapshot, document_from_builtins
from flagport.tally import MAX_UNIT_LENGTH, counted_unit
from flagport_server.stats import EvaluationCounter, StatsRecorder
from flagport_server.stats import recorder as stats_recorder
from flagport_server.stores import open_store

H = 3600
BASE = 1_700_000_000 - 1_700_000_000 % H

DOCUMENT: dict[str, Any] = {
    "flags": {
        "rollout": {"enabled": True, "percentage": 50},
        "rollout.child": {"enabled": True, "percentage": 100},
        "by-company": {"enabled": True, "percentage": 50, "bucket_by": "company_id"},
    }
}


class Harness:
    def __init__(self, tmp_path: Path, document: dict[str, Any] = DOCUMENT) -> None:
        self.now = float(BASE + 10)
        self.snapshot = compile_snapshot(document_from_builtins(document))
        self.recorder = StatsRecorder(
            open_store(f"sqlite:///{tmp_path / 'unused.db'}"), clock=lambda: self.now
        )
        self.counter = EvaluationCounter(self.bucket_by)
        self.others: list[CompiledSnapshot] = []  # a flag unknown to ``snapshot`` is looked up here

    def bucket_by(self, key: str) -> str | None:
        for snapshot in (self.snapshot, *self.others):
            flag = snapshot.flag(key)
            if flag is not None:
                return flag.bucket_by
        return None

    def serve(
        self, contexts: list[dict[str, Any]], snapshot: CompiledSnapshot | None = None
    ) -> None:
        if snapshot is not None:
            self.others.append(snapshot)
        for context in contexts:
            served = snapshot or self.snapshot
            results = served.evaluate_all(context, self.now)
            self.counter.count_many(results, context, served.bucket_attributes)

    def drain(self, seconds: float = 1.0) -> dict[tuple[str, str], set[str]]:
        self.now += seconds
        self.recorder.add_drained(self.counter.drain())
        batch = self.recorder.take()
        units: dict[tuple[str, str], set[str]] = {}
        for key, variant, _, listed in batch.units:
            units.setdefault((key, variant), set()).update(listed)
        return units


def users(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"targetingKey": f"user-{i}", "company_id": i % 7} for i in range(start, start + n)]


def test_every_unit_reaches_its_variant_set(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.serve(users(200))
    units = harness.drain()
    expected: dict[tuple[str, str], set[str]] = {}
    for context in users(200):
        for result in harness.snapshot.evaluate_all(context, harness.now).values():
            unit = context["company_id" if result.key == "by-company" else "targetingKey"]
            expected.setdefault((result.key, result.variant or ""), set()).add(str(unit))
    assert units == expected
    assert {variant for key, variant in units if key == "rollout"} == {"on", "off"}


def test_a_returning_unit_is_expanded_once_per_hour(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.serve(users(100))
    first = harness.drain()
    assert sum(len(s) for s in first.values()) > 0
    harness.serve(users(100))  # the same users, the same results, the same hour
    assert harness.drain() == {}
    harness.serve(users(100) + users(5, start=100))  # five newcomers
    again = harness.drain()
    assert set().union(*[again[k] for k in again if k[0] == "rollout"]) == {
        f"user-{i}" for i in range(100, 105)
    }
    # The evaluations are counted all the same: the skip is for units only.
    harness.serve(users(100))
    harness.now += 1
    harness.recorder.add_drained(harness.counter.drain())
    counts = harness.recorder.take().counts
    assert sum(n for key, _, _, n in counts if key == "rollout") == 100


def test_a_new_hour_records_returning_units_again(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.now = BASE + H - 30.0
    harness.serve(users(50))
    assert harness.drain(1.0)
    harness.serve(users(50))
    harness.now = BASE + H + 0.5  # this period started in the previous hour
    assert harness.drain(0.0) == {}
    harness.serve(users(50))  # this one starts in the new hour
    units = harness.drain()
    assert set().union(*[units[k] for k in units if k[0] == "rollout"]) == {
        f"user-{i}" for i in range(50)
    }


def test_a_new_snapshot_records_returning_units_again(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.serve(users(50))
    harness.drain()
    changed = {"flags": {**DOCUMENT["flags"], "rollout": {"enabled": True, "percentage": 100}}}
    harness.snapshot = compile_snapshot(document_from_builtins(changed))
    harness.serve(users(50))
    units = harness.drain()
    assert units[("rollout", "on")] == {f"user-{i}" for i in range(50)}


def test_the_memory_of_units_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_recorder, "RECENT_UNITS_LIMIT", 10)
    harness = Harness(tmp_path)
    harness.serve(users(25))
    harness.drain()
    assert len(harness.recorder._recent._last) <= 10
    # Forgotten units are expanded again: more work, the same unique units.
    harness.serve(users(25))
    units = harness.drain()
    assert set().union(*[units[k] for k in units if k[0] == "rollout"]) <= {
        f"user-{i}" for i in range(25)
    }


def test_odd_units_are_counted_not_remembered(tmp_path: Path) -> None:
    harness = Harness(tmp_path, {"flags": {"list-unit": {"enabled": True, "percentage": 50}}})
    contexts: list[dict[str, Any]] = [{"targetingKey": 7}, {"targetingKey": 7}, {"role": "admin"}]
    harness.serve(contexts)
    units = harness.drain()
    assert set().union(*units.values()) == {"7"}
    harness.serve([{"targetingKey": ["not", "hashable"]}])
    assert harness.drain() == {}


def test_a_bulk_count_keeps_only_the_units_of_its_context(tmp_path: Path) -> None:
    """What waits for the drain is the values the flags bucket by, not the caller's
    context: 21,000 nested lists in one (a 64 KiB body) were held, and scanned by the
    garbage collector, until the drain, per request."""
    harness = Harness(tmp_path)
    context: dict[str, Any] = {
        "targetingKey": "u1",
        "company_id": 7,
        "role": "admin",
        "x": [[] for _ in range(21_000)],
    }
    harness.serve([context, {"targetingKey": ["a list"], "company_id": 8}])
    drained = harness.counter.drain()
    assert drained.contexts == [{"targetingKey": "u1", "company_id": 7}, {"company_id": 8}]
    assert harness.snapshot.bucket_attributes == {"targetingKey", "company_id"}


def test_rows_from_two_snapshots_in_one_period(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    grown = {"flags": {"new-flag": {"enabled": True}, **DOCUMENT["flags"]}}
    reordered = {"flags": dict(reversed(list(DOCUMENT["flags"].items())))}
    for other in (grown, reordered):
        snapshot = compile_snapshot(document_from_builtins(other))
        harness.serve(users(30))
        harness.serve(users(30, start=30), snapshot=snapshot)
        units = harness.drain()
        served: dict[tuple[str, str], set[str]] = {}
        for index, context in enumerate(users(60)):
            chosen = harness.snapshot if index < 30 else snapshot
            for result in chosen.evaluate_all(context, harness.now).values():
                unit = context["company_id" if result.key == "by-company" else "targetingKey"]
                served.setdefault((result.key, result.variant or ""), set()).add(str(unit))
        assert units == served
        harness.recorder = StatsRecorder(harness.recorder.store, clock=lambda: harness.now)


def test_unique_units_gauge_follows_the_store(tmp_path: Path) -> None:
    """``flagport_unique_units{flag,variant}`` is refreshed from the store: the distinct
    units each variant was served over the last 24 hours, flag keys as the only labels."""
    from litestar.testing import TestClient

    from flagport_server.app import create_app
    from flagport_server.settings import Settings

    seed = tmp_path / "flags.yaml"
    seed.write_text(yaml.safe_dump(DOCUMENT))
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        seed_file=str(seed),
        admin_token="admin-token-for-the-gauge-test",
        stats_flush_interval=0.25,
        stats_gauge_interval=0.25,
    )
    snapshot = compile_snapshot(document_from_builtins(DOCUMENT))
    expected: dict[str, set[str]] = {}
    with TestClient(create_app(settings)) as client:
        for index in range(120):
            context = {"targetingKey": f"user-{index}", "company_id": index % 7}
            answer = client.post("/ofrep/v1/evaluate/flags", json={"context": context})
            assert answer.status_code == 200, answer.text
            variant = snapshot.evaluate("rollout", context, 0).variant
            expected.setdefault(str(variant), set()).add(context["targetingKey"])
        pattern = re.compile(
            r'^flagport_unique_units\{flag="rollout",variant="(\w+)"\} (\S+)$', re.M
        )
        deadline = time.monotonic() + 15
        while True:
            found = {v: float(n) for v, n in pattern.findall(client.get("/metrics").text)}
            if found == {v: float(len(units)) for v, units in expected.items()}:
                break
            assert time.monotonic() < deadline, (found, {v: len(u) for v, u in expected.items()})
            time.sleep(0.2)
        assert "user-" not in client.get("/metrics").text


def test_a_long_unit_counts_as_its_digest_on_every_path(tmp_path: Path) -> None:
    """Single and bulk evaluations (one bucketing attribute, and several) and reported
    exposures count a unit longer than MAX_UNIT_LENGTH as the same short digest."""
    long_unit = "u" * 60_000
    digest = counted_unit(long_unit)
    assert digest is not None
    assert len(digest) <= 40
    assert counted_unit("v" * 60_000) != digest
    assert counted_unit("u" * MAX_UNIT_LENGTH) == "u" * MAX_UNIT_LENGTH
    one = {"flags": {"rollout": {"enabled": True, "percentage": 50}}}
    for document in (one, DOCUMENT):
        harness = Harness(tmp_path, document)
        context = {"targetingKey": long_unit, "company_id": long_unit}
        harness.serve([context])
        result = harness.snapshot.evaluate("rollout", context, harness.now)
        harness.counter.count(result, context)
        units = harness.drain()
        assert units
        assert all(found == {digest} for found in units.values()), units


def test_long_units_do_not_grow_a_worker(tmp_path: Path) -> None:
    """300 units of 60 KB each once held 18 MB until the next flush, and the memory of
    recent units kept them all hour; a worker now holds their digests."""
    harness = Harness(tmp_path)

    def serve_long_units() -> None:
        harness.serve([{"targetingKey": f"{i:05d}" + "x" * 60_000} for i in range(300)])

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        serve_long_units()
        harness.now += 1
        harness.recorder.add_drained(harness.counter.drain())
        harness.recorder.expand_units_now()  # units now pending for the store
        gc.collect()
        grown = sum(
            stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename")
        )
    finally:
        tracemalloc.stop()
    assert harness.recorder.pending_units >= 300
    assert grown < 2_000_000, grown


def test_bulk_units_are_expanded_in_steps_the_event_loop_runs_between(tmp_path: Path) -> None:
    """A drain adds the counts at once and leaves the bulk units to ``expand_units``, which
    works in bounded steps and lets the event loop run between two (one step per period
    once held every request in flight for tens of milliseconds); what it finds is what one
    expansion in one go finds."""
    stepped, at_once = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    contexts = users(3 * stats_recorder.ROWS_PER_STEP)
    for harness in (stepped, at_once):
        harness.serve(contexts)
        harness.now += 1
        harness.recorder.add_drained(harness.counter.drain())
    assert stepped.recorder.pending_units == 0  # no bulk unit expanded at the drain
    ticks = 0

    async def expand() -> None:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        before = ticks
        await stepped.recorder.expand_units()
        ticks -= before
        ticker.cancel()

    asyncio.run(expand())
    assert ticks >= 3  # the loop ran between the steps
    assert stepped.recorder.pending_units >= len(contexts)

    def taken(recorder: StatsRecorder) -> tuple[dict[Any, int], dict[Any, set[str]]]:
        batch = recorder.take()
        units: dict[Any, set[str]] = {}
        for key, variant, _, listed in batch.units:
            units.setdefault((key, variant), set()).update(listed)
        return {(k, v): n for k, v, _, n in batch.counts}, units

    counts, units = taken(stepped.recorder)
    assert (counts, units) == taken(at_once.recorder)
    assert sum(n for (key, _), n in counts.items() if key == "rollout") == len(contexts)
    assert set().union(*[units[k] for k in units if k[0] == "rollout"]) == {
        c["targetingKey"] for c in contexts
    }
