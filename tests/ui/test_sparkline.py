"""The flag list's sparkline (``flagport_server.ui.views:sparkline``): one point per hour of
the last 24, evaluations per minute, scaled to its own peak."""

from __future__ import annotations

from flagport_server.ui.views import SPARK_HOURS, sparkline

H = 3600
SINCE = 1_700_000_000 - 1_700_000_000 % H


def test_one_point_per_hour_scaled_to_the_peak() -> None:
    spark = sparkline({SINCE: 600, SINCE + 23 * H: 1200, SINCE - H: 99_999}, SINCE)
    points = [tuple(map(float, p.split(","))) for p in spark.points.split()]
    assert len(points) == SPARK_HOURS
    assert spark.peak_per_minute == 20.0  # 1,200 in the last hour
    assert spark.total == 600 + 1200 + 99_999  # what it was given, for the label
    ys = [y for _, y in points]
    assert min(ys) == ys[-1] == 1.0  # the peak at the top
    assert ys[0] == 8.0  # half the peak, half-way
    assert set(ys[1:-1]) == {15.0}  # nothing: at the bottom
    assert points[0][0] == 0.0
    assert points[-1][0] == 96.0


def test_a_flag_never_evaluated_is_a_flat_line() -> None:
    spark = sparkline({}, SINCE)
    assert {p.split(",")[1] for p in spark.points.split()} == {"15.0"}
    assert spark.peak_per_minute == 0
