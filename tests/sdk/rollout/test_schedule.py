"""Schedules (docs/spec.md, "Guarded rollouts", Schedule): steps, holds, --start-at and
daily windows, with Europe/Berlin's 2026 DST transitions (29 March 02:00 CET -> 03:00 CEST,
25 October 03:00 CEST -> 02:00 CET)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from flagport.rollout.durations import format_duration, parse_duration
from flagport.rollout.errors import DurationError, ScheduleError
from flagport.rollout.schedule import (
    DailyWindow,
    check_steps,
    local_moment,
    next_opening,
    parse_hold,
    parse_max_hold,
    parse_start_at,
    parse_steps,
    parse_time_zone,
    parse_window,
    window_open,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_steps() -> None:
    assert parse_steps("10,25,50,100") == (10.0, 25.0, 50.0, 100.0)
    assert parse_steps("0.125, 12.5%, 100") == (0.125, 12.5, 100.0)
    assert check_steps([25, 50], enabled_percentage=25) == (25.0, 50.0)
    assert check_steps([5, 50]) == (5.0, 50.0)  # a disabled flag: no current exposure


@pytest.mark.parametrize(
    ("text", "current", "words"),
    [
        ("10,10,50", None, "must increase"),
        ("50,25", None, "must increase"),
        ("10,101", None, "at most 100"),
        ("0,10", None, "above 0"),
        ("-5,10", None, "above 0"),
        ("10.0001", None, "3 decimals"),
        ("ten", None, "percentage"),
        ("", None, "percentage"),
        ("nan", None, "above 0"),
        ("10,25", 20.0, "below the flag's current"),
        (",".join(str(i) for i in range(1, 22)), None, "at most 20 steps"),
    ],
)
def test_bad_steps(text: str, current: float | None, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        parse_steps(text, current)


def test_durations_and_holds() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 2W ") == 14 * 86400
    assert format_duration(5400) == "1h30m"
    assert format_duration(90061) == "1d1h1m1s"
    for seconds in (1, 59, 60, 3600, 86399, 86400 * 9):
        assert parse_duration(format_duration(seconds)) == seconds
    for bad in ("", "5", "m5", "5x", "1h 30m", "5m-", "9" * 50, "367d"):
        with pytest.raises(DurationError):
            parse_duration(bad)
    assert parse_hold("30m") == 1800
    with pytest.raises(ScheduleError, match="positive"):
        parse_hold("0m")
    with pytest.raises(ScheduleError, match="--hold"):
        parse_hold("-5m")
    assert parse_max_hold("4h", 1800) == 14400
    with pytest.raises(ScheduleError, match="shorter than the hold"):
        parse_max_hold("10m", 1800)


def test_time_zones() -> None:
    assert parse_time_zone("Europe/Berlin") == BERLIN
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "Europe/Berlin" * 10, "/abs"):
        with pytest.raises(ScheduleError, match="unknown time zone"):
            parse_time_zone(bad)


def test_local_moments_across_the_2026_transitions() -> None:
    # Spring: 02:00-03:00 does not exist on 29 March; it means the gap's end, 03:00 CEST.
    for clock in (time(2, 0), time(2, 30), time(2, 59)):
        assert local_moment(date(2026, 3, 29), clock, BERLIN) == utc("2026-03-29T01:00Z")
    assert local_moment(date(2026, 3, 29), time(1, 59), BERLIN) == utc("2026-03-29T00:59Z")
    assert local_moment(date(2026, 3, 29), time(3, 0), BERLIN) == utc("2026-03-29T01:00Z")
    # Autumn: 02:00-03:00 happens twice on 25 October; the first (CEST) is meant.
    assert local_moment(date(2026, 10, 25), time(2, 30), BERLIN) == utc("2026-10-25T00:30Z")
    assert local_moment(date(2026, 10, 25), time(3, 0), BERLIN) == utc("2026-10-25T02:00Z")


def test_start_at() -> None:
    now = utc("2026-03-28T12:00Z")
    # HH:MM is the next occurrence; in the spring gap, the gap's end.
    assert parse_start_at("02:30", "Europe/Berlin", now) == utc("2026-03-29T01:00Z")
    assert parse_start_at("13:30", "Europe/Berlin", now) == utc("2026-03-28T12:30Z")
    assert parse_start_at("12:59", "Europe/Berlin", now) == utc("2026-03-29T10:59Z")  # CEST
    autumn = utc("2026-10-24T22:00Z")  # 00:00 CEST on the 25th
    assert parse_start_at("02:30", "Europe/Berlin", autumn) == utc("2026-10-25T00:30Z")
    # Between the two 02:30s, the next occurrence is the next day's.
    between = utc("2026-10-25T00:45Z")
    assert parse_start_at("02:30", "Europe/Berlin", between) == utc("2026-10-26T01:30Z")
    assert parse_start_at("2026-12-10T02:00+01:00", None, now) == utc("2026-12-10T01:00Z")
    assert parse_start_at("2026-12-10T01:00Z", None, now) == utc("2026-12-10T01:00Z")


@pytest.mark.parametrize(
    ("text", "zone", "words"),
    [
        ("2026-03-28T11:00+00:00", None, "in the past"),
        ("2026-03-28T12:00Z", None, "in the past"),
        ("2026-12-10T02:00", None, "needs its UTC offset"),
        ("02:00", None, "needs --tz"),
        ("02:00", "Nowhere/Land", "unknown time zone"),
        ("24:00", "Europe/Berlin", "ISO-8601"),
        ("tomorrow", None, "ISO-8601"),
        ("0001-01-01T00:00+01:00", None, "out of range"),
    ],
)
def test_bad_start_at(text: str, zone: str | None, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        parse_start_at(text, zone, utc("2026-03-28T12:00Z"))


def test_windows() -> None:
    window = parse_window("02:00-04:00", "Europe/Berlin")
    assert window == DailyWindow("02:00", "04:00", "Europe/Berlin")
    assert window_open(window, utc("2026-12-10T01:00Z"))  # 02:00 CET
    assert window_open(window, utc("2026-12-10T02:59Z"))
    assert not window_open(window, utc("2026-12-10T03:00Z"))  # 04:00: closed
    assert next_opening(window, utc("2026-12-10T01:30Z")) == utc("2026-12-10T01:30Z")
    assert next_opening(window, utc("2026-12-10T03:00Z")) == utc("2026-12-11T01:00Z")
    # Spring 2026: the window opens at the gap's end and is one hour long.
    assert next_opening(window, utc("2026-03-28T23:30Z")) == utc("2026-03-29T01:00Z")
    assert window_open(window, utc("2026-03-29T01:59Z"))
    assert not window_open(window, utc("2026-03-29T02:00Z"))
    # Autumn 2026: open from the first 02:00 (CEST) to 04:00 CET, three hours.
    assert not window_open(window, utc("2026-10-24T23:59Z"))
    assert window_open(window, utc("2026-10-25T00:00Z"))
    assert window_open(window, utc("2026-10-25T02:59Z"))
    assert not window_open(window, utc("2026-10-25T03:00Z"))


def test_windows_crossing_midnight_and_inside_the_gap() -> None:
    night = parse_window("22:00-02:00", "Europe/Berlin")
    assert window_open(night, utc("2026-12-10T21:00Z"))  # 22:00 CET
    assert window_open(night, utc("2026-12-11T00:59Z"))  # 01:59 CET
    assert not window_open(night, utc("2026-12-11T01:00Z"))
    assert next_opening(night, utc("2026-12-11T01:00Z")) == utc("2026-12-11T21:00Z")
    gap = parse_window("02:15-02:45", "Europe/Berlin")
    # On 29 March the wall clock never shows 02:15-02:45: the window opens on the 30th.
    assert next_opening(gap, utc("2026-03-28T23:00Z")) == utc("2026-03-30T00:15Z")
    start = utc("2026-03-28T23:00Z")
    minutes = [start + timedelta(minutes=m) for m in range(24 * 60)]
    assert not any(window_open(gap, moment) for moment in minutes)


@pytest.mark.parametrize(
    ("text", "zone", "words"),
    [
        ("02:00-02:00", "Europe/Berlin", "empty"),
        ("02:00", "Europe/Berlin", "HH:MM-HH:MM"),
        ("2-4", "Europe/Berlin", "HH:MM-HH:MM"),
        ("02:00-25:00", "Europe/Berlin", "HH:MM"),
        ("02:00-04:00", None, "needs --tz"),
        ("02:00-04:00", "Europe/Nowhere", "unknown time zone"),
    ],
)
def test_bad_windows(text: str, zone: str | None, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        parse_window(text, zone)
