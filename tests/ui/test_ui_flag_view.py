"""The flag page's own rules, without a server: the percentage estimate, the percentage as
typed, and the charts' geometry (docs/spec.md section 14)."""

from __future__ import annotations

import pytest

from flagport.engine import Flag
from flagport_server.errors import InvalidInput
from flagport_server.ui.charts import HEIGHT, dense_buckets, time_chart
from flagport_server.ui.flag_view import parse_percentage, percentage_estimate


@pytest.mark.parametrize(
    ("enabled", "before", "after", "units"),
    [
        (True, 100.0, 25.0, -750),  # 1,000 units x -75 %
        (True, 10.0, 50.0, 400),
        (False, 80.0, 10.0, 100),  # disabled serves nobody on: enabling at 10 % adds 10 %
        (True, 12.5, 12.5, 0),
    ],
)
def test_the_estimate_is_the_units_seen_times_the_change_served_on(
    enabled: bool, before: float, after: float, units: int
) -> None:
    flag = Flag(enabled=enabled, percentage=before)
    estimate = percentage_estimate(1000, flag, after)
    assert estimate.units == units
    assert (estimate.units_seen, estimate.after, estimate.window) == (1000, after, "7d")


@pytest.mark.parametrize(("typed", "value"), [("25", 25.0), (" 12.5 ", 12.5), ("50 %", 50.0)])
def test_a_percentage_is_read_as_typed(typed: str, value: float) -> None:
    assert parse_percentage(typed) == value


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("fifty", "must be a number from 0 to 100"),
        ("100.0001", "between 0 and 100"),
        ("-1", "between 0 and 100"),
        ("inf", "between 0 and 100"),
        ("nan", "between 0 and 100"),
        ("1.2345", "more than 3 decimals"),
    ],
)
def test_a_wrong_percentage_names_its_field_and_why(typed: str, why: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_percentage(typed)
    assert why in refused.value.detail
    assert refused.value.path == "percentage"


def test_buckets_are_dense_and_sum_what_falls_in_them() -> None:
    series = [
        (0.0, {"on": 1}),
        (59.0, {"on": 2, "off": 1}),
        (130.0, {"off": 5}),
        (600.0, {"on": 9}),
    ]
    assert dense_buckets(series, 0, 240, 60) == [
        (0, {"on": 3, "off": 1}),
        (60, {}),
        (120, {"off": 5}),
        (180, {}),
    ]


def test_a_chart_draws_a_line_per_variant_and_marks_changes_in_its_span() -> None:
    buckets = [(0, {"on": 3}), (60, {"on": 7, "other": 1}), (120, {})]
    chart = time_chart("t", "c", buckets, 60, ["on", "off"], [(90.0, "a change"), (999.0, "x")])
    assert [(line.variant, line.total) for line in chart.lines] == [
        ("on", 10),
        ("off", 0),
        ("other", 1),
    ]
    on = [tuple(map(float, p.split(","))) for p in chart.lines[0].points.split()]
    assert len(on) == 3
    assert on[0][0] < on[1][0] < on[2][0]
    assert on[1][1] == chart.top + (chart.bottom - chart.top) * (1 - 7 / 10)  # scale: 10
    assert on[2][1] == chart.bottom  # an empty bucket is a zero
    assert [mark.label for mark in chart.marks] == ["a change"]
    assert chart.left < chart.marks[0].x < chart.right
    assert [tick.label for tick in chart.y_ticks] == ["0", "5", "10"]
    assert not chart.empty
    assert time_chart("t", "c", [(0, {})], 60, ["on"], []).empty
    assert chart.height == HEIGHT
