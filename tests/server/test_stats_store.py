"""The stats part of the store contract (``record_stats``, ``stats``, ``last_seen``), on
every backend, plus the recorder's minute/hour stamping with an injected clock."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from flagport.engine import compile_snapshot, document_from_builtins
from flagport_server.stats import EvaluationCounter, StatsRecorder
from flagport_server.stores import open_store
from flagport_server.stores.base import StatsBatch, Store
from tests.support.stores import Backend

pytestmark = pytest.mark.anyio

H = 3600
BASE = 1_700_000_000 - 1_700_000_000 % H  # an hour boundary


async def test_empty_flag_has_zero_stats(store: Store) -> None:
    view = await store.stats("never", BASE, BASE + H)
    assert view.evaluations == {}
    assert view.unique_units == {}
    assert view.units_seen == 0
    assert view.units_on == 0
    assert view.series == []
    assert view.first_seen is None
    assert view.last_seen is None
    assert await store.last_seen() == {}


async def test_counts_add_up_across_writers(store_backend: Backend, store: Store) -> None:
    other = store_backend.make()
    await other.open()
    try:
        batch = StatsBatch(
            counts=[("a.b", "on", BASE + 60, 3), ("a.b", "off", BASE + 60, 2)],
            units=[("a.b", "on", BASE, ["u1", "u2"]), ("a.b", "off", BASE, ["u3"])],
            seen=[("a.b", BASE + 61.5, BASE + 90.0)],
        )
        await store.record_stats(batch, BASE + 100)
        await other.record_stats(
            StatsBatch(
                counts=[("a.b", "on", BASE + 120, 5)],
                units=[("a.b", "on", BASE, ["u2", "u4"])],
                seen=[("a.b", BASE + 30.0, BASE + 130.0)],
            ),
            BASE + 140,
        )
        view = await store.stats("a.b", BASE, BASE + H, off_variant="off")
        assert view.evaluations == {"on": 8, "off": 2}
        assert view.unique_units == {"on": 3, "off": 1}
        assert view.units_seen == 4
        assert view.units_on == 3
        assert view.series == [(BASE + 60, {"on": 3, "off": 2}), (BASE + 120, {"on": 5})]
        assert (view.first_seen, view.last_seen) == (BASE + 30.0, BASE + 130.0)
        seen = await other.last_seen()
        assert set(seen) == {"a.b"}
        assert (seen["a.b"].first_seen, seen["a.b"].last_seen) == (BASE + 30.0, BASE + 130.0)
        # Another flag and a window that excludes the hour see nothing of it.
        assert (await store.stats("a", BASE, BASE + H)).evaluations == {}
        assert (await store.stats("a.b", BASE + H, BASE + 2 * H)).evaluations == {}
    finally:
        await other.close()


async def test_units_merge_across_hours_and_variants(store: Store) -> None:
    await store.record_stats(
        StatsBatch(
            counts=[("f", "on", BASE, 1), ("f", "on", BASE + H, 1), ("f", "off", BASE + H, 1)],
            units=[
                ("f", "on", BASE, ["x", "y"]),
                ("f", "on", BASE + H, ["y", "z"]),
                ("f", "off", BASE + H, ["x", "w"]),
            ],
        ),
        BASE + H,
    )
    view = await store.stats("f", BASE, BASE + 2 * H, off_variant="off")
    assert view.unique_units == {"on": 3, "off": 2}
    assert view.units_seen == 4
    assert view.units_on == 3
    # The variant with the special character and the error pseudo-variant are kept apart.
    await store.record_stats(StatsBatch(counts=[("f", "v|1:x", BASE, 4)]), BASE + H)
    assert (await store.stats("f", BASE, BASE + H)).evaluations["v|1:x"] == 4


async def test_retention_drops_old_minutes_and_hours(store: Store) -> None:
    old = BASE - 10 * 24 * H  # beyond the 7 days of hours
    recent = BASE - 3 * 24 * H  # within 7 days of hours, beyond 48 h of minutes
    await store.record_stats(
        StatsBatch(
            counts=[("f", "on", old, 7), ("f", "on", recent, 2), ("f", "on", BASE, 1)],
            units=[("f", "on", old, ["a"]), ("f", "on", recent, ["b"])],
        ),
        BASE,
    )
    view = await store.stats("f", old, BASE + H)
    assert view.evaluations == {"on": 3}
    assert view.unique_units == {"on": 1}
    assert [minute for minute, _ in view.series] == [BASE]


async def test_unique_units_within_two_percent(store: Store) -> None:
    rng = random.Random(9)
    units = [f"user-{rng.getrandbits(64):x}" for _ in range(100_000)]
    # Three flushes with overlap, as several workers would write them.
    await store.record_stats(StatsBatch(units=[("big", "on", BASE, units[:60_000])]), BASE)
    await store.record_stats(StatsBatch(units=[("big", "on", BASE, units[40_000:])]), BASE)
    await store.record_stats(StatsBatch(units=[("big", "on", BASE + H, units[::2])]), BASE + H)
    view = await store.stats("big", BASE, BASE + 2 * H)
    assert abs(view.unique_units["on"] - 100_000) <= 2_000, view.unique_units
    assert abs(view.units_seen - 100_000) <= 2_000


DOCUMENT = {
    "flags": {
        "parent": {"enabled": True, "percentage": 50},
        "parent.child": {"enabled": True, "percentage": 100},
    }
}


async def test_recorder_series_across_minute_and_hour_boundaries(store: Store) -> None:
    snapshot = compile_snapshot(document_from_builtins(DOCUMENT))
    now = [BASE + H - 61.0]  # 14:58:59 in some hour
    recorder = StatsRecorder(store, clock=lambda: now[0])
    counter = EvaluationCounter(lambda key: "targetingKey")

    def serve(units: range) -> dict[str, int]:
        served: dict[str, int] = {}
        for unit in units:
            context = {"targetingKey": str(unit)}
            results = snapshot.evaluate_all(context, now[0])
            counter.count_many(results, context, snapshot.bucket_attributes)
            for result in results.values():
                name = f"{result.key}:{result.variant}"
                served[name] = served.get(name, 0) + 1
        return served

    first = serve(range(100))  # minute 58 of the hour
    now[0] += 30
    recorder.add_drained(counter.drain())
    second = serve(range(100, 250))  # minute 59
    now[0] += 31  # the next hour's minute 0
    recorder.add_drained(counter.drain())
    third = serve(range(250, 300))
    now[0] += 5
    recorder.add_drained(counter.drain())
    assert await recorder.flush()
    view = await store.stats("parent.child", BASE, BASE + 2 * H, off_variant="off")
    minutes = [minute for minute, _ in view.series]
    assert minutes == [BASE + H - 120, BASE + H - 60, BASE + H]
    for (minute, counts), served in zip(view.series, (first, second, third), strict=True):
        expected = {k.split(":")[1]: n for k, n in served.items() if k.startswith("parent.child")}
        assert counts == expected, minute
    # The child is gated by its parent (50 %): it is on for the parent's cohort only.
    parent = await store.stats("parent", BASE, BASE + 2 * H, off_variant="off")
    assert abs(view.units_on - parent.units_on) <= 3
    assert abs(view.units_seen - 300) <= 6
    assert 100 < view.units_on < 200
    assert sum(view.evaluations.values()) == 300


async def test_reported_evaluations_are_kept_apart(store_backend: Backend, store: Store) -> None:
    """Of each hour's evaluations, the part in-process clients reported is kept on its own,
    summed across writers and dropped with the hour; figures written without it read as 0."""
    old = BASE - 10 * 24 * H  # beyond the 7 days of hours
    await store.record_stats(StatsBatch(counts=[("f", "on", BASE + 60, 4)]), BASE + 100)
    other = store_backend.make()
    await other.open()
    try:
        await other.record_stats(
            StatsBatch(
                counts=[("f", "on", BASE + 120, 7), ("f", "off", BASE + H, 3), ("f", "on", old, 9)],
                reported=[("f", "on", BASE, 5), ("f", "off", BASE + H, 3), ("f", "on", old, 9)],
            ),
            BASE + H + 100,
        )
        await store.record_stats(StatsBatch(reported=[("f", "on", BASE, 2)]), BASE + H + 100)
    finally:
        await other.close()
    view = await store.stats("f", BASE, BASE + 2 * H)
    assert view.evaluations == {"on": 11, "off": 3}
    assert view.reported == {"on": 7, "off": 3}
    assert (await store.stats("f", BASE + H, BASE + 2 * H)).reported == {"off": 3}
    assert (await store.stats("f", old, BASE)).reported == {}
    assert (await store.stats("g", BASE, BASE + H)).reported == {}


async def test_a_sqlite_file_from_before_reported_counts_reads_and_writes(tmp_path: Path) -> None:
    """A store written by a server that kept no reported part (no ``stats_reported`` table)
    is read as it was, the part reading 0, and takes reported counts from then on."""
    path = tmp_path / "flagport.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.record_stats(StatsBatch(counts=[("f", "on", BASE, 4)]), BASE)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE stats_reported")
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        view = await store.stats("f", BASE, BASE + H)
        assert (view.evaluations, view.reported) == ({"on": 4}, {})
        await store.record_stats(
            StatsBatch(counts=[("f", "on", BASE, 2)], reported=[("f", "on", BASE, 2)]), BASE
        )
        view = await store.stats("f", BASE, BASE + H)
        assert (view.evaluations, view.reported) == ({"on": 6}, {"on": 2})
    finally:
        await store.close()


async def test_recorder_keeps_reported_counts_apart_until_the_store_takes_them(
    store: Store,
) -> None:
    now = [BASE + 30.0]
    recorder = StatsRecorder(store, clock=lambda: now[0])
    recorder.add("f", "on", 3, ["a"], now[0])
    recorder.add("f", "on", 5, ["b"], now[0], reported=True)
    batch = recorder.take()
    assert batch.counts == [("f", "on", BASE, 8)]
    assert batch.reported == [("f", "on", BASE, 5)]
    recorder.restore(batch)  # a failed write: kept for the next flush, still apart
    recorder.add("f", "off", 2, [], now[0] + H, reported=True)
    assert await recorder.flush()
    view = await store.stats("f", BASE, BASE + 2 * H)
    assert view.evaluations == {"on": 8, "off": 2}
    assert view.reported == {"on": 5, "off": 2}


async def test_hourly_counts_of_every_flag_in_one_read(store: Store) -> None:
    """The admin UI's flag list: every flag's evaluations per hour since a time, all
    variants together, in one read."""
    await store.record_stats(
        StatsBatch(
            counts=[
                ("a", "on", BASE + 60, 3),
                ("a", "off", BASE + 120, 2),
                ("a", "on", BASE + H + 60, 4),
                ("b.c", "on", BASE + 2 * H + 60, 1),
                ("old", "on", BASE - 2 * H, 9),
            ],
            seen=[
                ("a", BASE + 60.0, BASE + H + 60.0),
                ("b.c", BASE + 2 * H + 60.0, BASE + 2 * H + 60.0),
                ("old", BASE - 2 * H, BASE - 2 * H + 1.0),
            ],
        ),
        BASE + 2 * H + 100,
    )
    assert await store.hourly_counts(BASE, BASE + 3 * H) == {
        "a": {BASE: 5, BASE + H: 4},
        "b.c": {BASE + 2 * H: 1},
    }
    assert await store.hourly_counts(BASE + H, BASE + 2 * H) == {"a": {BASE + H: 4}}
    assert await store.hourly_counts(BASE + 3 * H, BASE + 4 * H) == {}
