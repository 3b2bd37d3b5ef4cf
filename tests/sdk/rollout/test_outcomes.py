"""Outcome signals (docs/spec.md, "Guarded rollouts", Outcome signals): the wire shape,
validation, the per-minute aggregate (exact merges) and window readings."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagport.rollout.errors import OutcomeError
from flagport.rollout.limits import LATENCY_BOUNDS_MS, MAX_OUTCOME_ITEMS
from flagport.rollout.outcomes import (
    BUCKETS,
    Cohort,
    CohortReading,
    OutcomeAggregate,
    OutcomeBatch,
    OutcomeEvent,
    OutcomeItem,
    Totals,
    accept_batch,
    bucket_of,
    quantile_ms,
    window_start,
)

NOW = 1_796_000_000.0  # 2026-11-29, a minute boundary plus 20 s
assert NOW % 60 == 20


def item(
    requests: int = 10,
    failures: int = 1,
    *,
    cohort: Cohort = Cohort.TREATMENT,
    key: str = "ui-improvements",
    buckets: list[int] | None = None,
    latency: float = 100.0,
) -> OutcomeItem:
    histogram = buckets if buckets is not None else [requests] + [0] * (BUCKETS - 1)
    return OutcomeItem(key, "on", cohort, requests, failures, latency, histogram)


def test_the_wire_shape_decodes_strictly() -> None:
    body = {
        "period": [NOW - 1, NOW],
        "items": [
            {
                "key": "ui-improvements",
                "variant": "on",
                "cohort": "treatment",
                "requests": 3,
                "failures": 1,
                "latency_ms_sum": 12.5,
                "latency_buckets": [1, 2] + [0] * 11,
            }
        ],
        "events": [
            {
                "key": "ui-improvements",
                "variant": "off",
                "cohort": "control",
                "name": "user_report",
                "labels": {"severity": "critical"},
                "count": 2,
            }
        ],
    }
    batch = msgspec.json.decode(msgspec.json.encode(body), type=OutcomeBatch)
    assert batch.items[0].cohort is Cohort.TREATMENT
    assert batch.events[0].labels == {"severity": "critical"}
    for bad in (
        {**body, "extra": 1},
        {**body, "items": [{**body["items"][0], "cohort": "neither"}]},  # type: ignore[dict-item]
        {**body, "items": [{**body["items"][0], "requests": -1}]},  # type: ignore[dict-item]
        {**body, "items": [{**body["items"][0], "requests": "3"}]},  # type: ignore[dict-item]
        {**body, "items": [{**body["items"][0], "key": "Bad Key"}]},  # type: ignore[dict-item]
        {**body, "events": [{**body["events"][0], "name": "9x"}]},  # type: ignore[dict-item]
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(bad), type=OutcomeBatch)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (item(10, 11), "exceed requests"),
        (item(10, 1, buckets=[10] * 12), "13 counts"),
        (item(10, 1, buckets=[9] + [0] * 12), "count 9 requests"),
        (item(10, 1, latency=10 * 86_400_001.0), "a day per request"),
        (item(-1, 0, buckets=[-1] + [0] * 12), "at least 0"),
    ],
)
def test_bad_items_are_refused_with_why(bad: OutcomeItem, words: str) -> None:
    batch = OutcomeBatch((NOW - 1, NOW), [item(), bad])
    items, _, rejected = accept_batch(batch, NOW)
    assert items == [batch.items[0]]
    assert [(r.kind, r.index) for r in rejected] == [("item", 1)]
    assert words in rejected[0].error


@pytest.mark.parametrize(
    ("period", "words"),
    [
        ((NOW - 200, NOW - 121), "stale"),
        ((NOW - 1, NOW + 10), "future"),
        ((NOW, NOW - 1), "start <= end"),
        ((NOW - 130, NOW), "at most 120 s long"),
        ((float("nan"), NOW), "start <= end"),
    ],
)
def test_a_bad_period_refuses_every_item(period: tuple[float, float], words: str) -> None:
    event = OutcomeEvent("ui-improvements", "on", Cohort.TREATMENT, "user_report", {}, 1)
    aggregate = OutcomeAggregate()
    rejected = aggregate.add_batch(OutcomeBatch(period, [item(), item()], [event]), NOW)
    assert len(rejected) == 3
    assert all(words in r.error for r in rejected)
    assert aggregate.minutes == {}


def test_a_period_that_ended_120_s_ago_is_still_counted() -> None:
    aggregate = OutcomeAggregate()
    assert aggregate.add_batch(OutcomeBatch((NOW - 121, NOW - 120), [item()]), NOW) == []


def test_batch_bounds_refuse_the_whole_batch() -> None:
    with pytest.raises(OutcomeError, match="at most 1000"):
        accept_batch(OutcomeBatch((NOW - 1, NOW), [item()] * (MAX_OUTCOME_ITEMS + 1)), NOW)


def test_unknown_flags_and_variants_are_refused_per_item() -> None:
    variants = {"ui-improvements": ("on", "off")}
    batch = OutcomeBatch(
        (NOW - 1, NOW),
        [
            item(),
            item(key="nope"),
            OutcomeItem("ui-improvements", "blue", Cohort.CONTROL, 0, 0, 0, [0] * 13),
        ],
    )
    _, _, rejected = accept_batch(batch, NOW, variants.get)
    assert [r.error for r in rejected] == [
        "unknown flag 'nope'",
        "flag 'ui-improvements' has no variant 'blue'",
    ]


def test_event_labels_are_bounded() -> None:
    many = {f"l{i}": "v" for i in range(9)}
    batch = OutcomeBatch(
        (NOW - 1, NOW),
        events=[
            OutcomeEvent("f", "on", Cohort.TREATMENT, "e", many, 1),
            OutcomeEvent("f", "on", Cohort.TREATMENT, "e", {"bad-name": "v"}, 1),
            OutcomeEvent("f", "on", Cohort.TREATMENT, "e", {"a": "v" * 257}, 1),
        ],
    )
    _, events, rejected = accept_batch(batch, NOW)
    assert events == []
    assert [r.index for r in rejected] == [0, 1, 2]


def test_bucket_bounds_and_quantiles() -> None:
    assert LATENCY_BOUNDS_MS[:3] == (5.0, 10.0, 25.0)
    assert [bucket_of(d) for d in (0, 5, 5.01, 2000, 2000.5, 10000, 10001)] == [
        0,
        0,
        1,
        8,
        9,
        11,
        12,
    ]
    # 100 requests: 90 in (50, 100], 10 in (1000, 2000]: p95 is the 95th request, half way
    # into the slow bucket; p99 nine tenths of the way.
    histogram = [0, 0, 0, 0, 90, 0, 0, 0, 10, 0, 0, 0, 0]
    assert quantile_ms(histogram, 0.95) == pytest.approx(1500.0)
    assert quantile_ms(histogram, 0.99) == pytest.approx(1900.0)
    assert quantile_ms(histogram, 0.5) == pytest.approx(50 + 50 * 50 / 90)
    assert quantile_ms([0] * 12 + [5], 0.95) == 10000.0
    assert quantile_ms([0] * 13, 0.95) is None
    reading = CohortReading(100, 0, 0, tuple(histogram), {})
    assert reading.slower_than(1000) == 10
    assert reading.slower_than(1500) == 0  # not certainly slower: inside the bucket


def test_a_window_is_the_partial_minute_and_the_whole_minutes_before() -> None:
    assert window_start(300, NOW) == NOW - 20 - 300
    aggregate = OutcomeAggregate()
    for age in (0, 19, 20, 319, 320):  # the period's end, seconds before NOW
        aggregate.add_batch(OutcomeBatch((NOW - age - 1, NOW - age), [item(1, 0)]), NOW - age)
    # Ages 0 and 19 are in the current minute. A period is [start, end): the one ending at
    # age 20, on the current minute's first second, is in the minute before, and the one
    # ending at age 320 in the minute before the window; 319 is the window's first second.
    assert aggregate.read_window("ui-improvements", 300, NOW).treatment.requests == 4
    assert aggregate.read_window("ui-improvements", 60, NOW).treatment.requests == 3
    assert aggregate.read_window("ui-improvements", 360, NOW).treatment.requests == 5
    aggregate.prune(NOW, 300)
    assert aggregate.read_window("ui-improvements", 600, NOW).treatment.requests == 4


def test_events_are_counted_by_name_and_label_subset() -> None:
    aggregate = OutcomeAggregate()
    events = [
        OutcomeEvent("f", "on", Cohort.TREATMENT, "user_report", {"severity": "critical"}, 4),
        OutcomeEvent(
            "f", "on", Cohort.TREATMENT, "user_report", {"severity": "critical", "page": "a"}, 3
        ),
        OutcomeEvent("f", "on", Cohort.TREATMENT, "user_report", {"severity": "minor"}, 5),
        OutcomeEvent("f", "off", Cohort.CONTROL, "user_report", {"severity": "critical"}, 7),
    ]
    aggregate.add_batch(OutcomeBatch((NOW - 1, NOW), events=events), NOW)
    reading = aggregate.read_window("f", 600, NOW)
    assert reading.treatment.count("user_report", [("severity", "critical")]) == 7
    assert reading.treatment.count("user_report") == 12
    assert reading.control.count("user_report", [("severity", "critical")]) == 7
    assert reading.treatment.count("other") == 0


_ITEMS = st.builds(
    lambda cohort, counts, failures, latency: OutcomeItem(
        "f", "on", cohort, sum(counts), min(failures, sum(counts)), latency, counts
    ),
    st.sampled_from(list(Cohort)),
    st.lists(st.integers(0, 1000), min_size=BUCKETS, max_size=BUCKETS),
    st.integers(0, 1000),
    st.floats(0, 1e6, allow_nan=False),
)
_EVENTS = st.builds(
    lambda cohort, name, severity, count: OutcomeEvent(
        "f", "on", cohort, name, {"severity": severity}, count
    ),
    st.sampled_from(list(Cohort)),
    st.sampled_from(["user_report", "crash"]),
    st.sampled_from(["critical", "minor"]),
    st.integers(0, 100),
)


@given(
    st.lists(_ITEMS, max_size=12),
    st.lists(_EVENTS, max_size=12),
    st.randoms(use_true_random=False),
    st.integers(1, 5),
)
def test_merging_batches_is_exact_in_any_order_and_grouping(
    items: list[OutcomeItem], events: list[OutcomeEvent], rng: object, parts: int
) -> None:
    """One batch, or the same items and events split into several batches in another order
    (as workers would send them), give the same totals."""
    whole = OutcomeAggregate()
    whole.add_batch(OutcomeBatch((NOW - 1, NOW), items, events), NOW)
    shuffled_items, shuffled_events = list(items), list(events)
    rng.shuffle(shuffled_items)  # type: ignore[attr-defined]
    rng.shuffle(shuffled_events)  # type: ignore[attr-defined]
    split = OutcomeAggregate()
    for part in range(parts):
        batch = OutcomeBatch(
            (NOW - 2, NOW - 1), shuffled_items[part::parts], shuffled_events[part::parts]
        )
        assert split.add_batch(batch, NOW) == []
    assert split.read_window("f", 60, NOW) == whole.read_window("f", 60, NOW)
    # Totals merged from the per-batch sums equal the sum over items.
    merged = Totals()
    for by_cohort in split.minutes.get("f", {}).values():
        for totals in by_cohort.values():
            merged.merge(totals)
    assert merged.requests == sum(i.requests for i in items)
    assert merged.failures == sum(i.failures for i in items)
    assert sum(merged.events.values()) == sum(e.count for e in events)
