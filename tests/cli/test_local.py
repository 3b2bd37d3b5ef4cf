"""Local checks (no server): key grammar agrees with the engine, percentages, durations, and
``flags disable`` imports neither msgspec, yaml, the SDK nor the server."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagport import InvalidDocumentError
from flagport.durations import parse_duration, since_moment, stats_window_start
from flagport.engine import validate_key
from flagport_cli._errors import UsageProblem
from flagport_cli._validate import check_key, check_stats_since, parse_percentage, since_text
from tests.support.server import free_port

KEYISH = st.text(alphabet="abcz09_-.A \n", max_size=12) | st.from_regex(
    r"[a-z0-9][a-z0-9_-]{0,5}(\.[a-z0-9][a-z0-9_-]{0,5}){0,3}", fullmatch=True
)


@settings(max_examples=500, deadline=None)
@given(KEYISH)
def test_key_check_agrees_with_the_engine(key: str) -> None:
    try:
        validate_key(key, "key")
        engine_ok = not key.endswith("\n")  # the engine's `$` also matches before a newline
    except InvalidDocumentError:
        engine_ok = False
    try:
        check_key(key)
        cli_ok = True
    except UsageProblem:
        cli_ok = False
    assert cli_ok == engine_ok


def test_long_keys() -> None:
    check_key("a" * 200)
    with pytest.raises(UsageProblem, match="limit is 200"):
        check_key("a" * 201)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("100", 100.0), ("12.345", 12.345), ("50%", 50.0), (" 7 ", 7.0), ("1e1", 10.0)],
)
def test_percentages(text: str, value: float) -> None:
    assert parse_percentage(text) == value


@pytest.mark.parametrize("text", ["101", "-5", "abc", "12.3456", "nan", "inf", "", "100.0001"])
def test_bad_percentages(text: str) -> None:
    with pytest.raises(UsageProblem):
        parse_percentage(text)


def test_durations() -> None:
    assert parse_duration("1h") == timedelta(hours=1)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    for bad in ("", "h", "1", "1x", "-1h", "1h 2m", "36501d", "9" * 400 + "s"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert since_text("1h", now) == "2026-01-02T02:04:05.000Z"
    assert since_text("2026-01-01T00:00:00+01:00") == "2025-12-31T23:00:00.000Z"


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("99999999999d", "too long: at most 36500d"),
        ("36501d", "too long: at most 36500d"),
        ("9" * 400 + "h", "too long"),
        ("9" * 5000 + "s", "too long"),  # beyond int()'s 4,300-digit limit
        ("1000w" * 100, "too long"),
        ("1e309h", "--since must be a duration"),
        ("inf", "--since must be a duration"),
        ("nan", "--since must be a duration"),
        ("-1h", "--since must be a duration"),
        ("+1h", "--since must be a duration"),
        ("", "--since must be a duration"),
        ("   ", "--since must be a duration"),
        ("1h\n2h", "--since must be a duration"),
        ("\x00", "--since must be a duration"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        ("9999-12-31T23:59:59-14:00", "out of range"),
        ("2026-01-02T03:04:06Z", "in the future"),
        ("2999-01-01", "in the future"),
    ],
)
def test_absurd_since_values_are_usage_problems(text: str, problem: str) -> None:
    for parse in (since_text, check_stats_since):
        with pytest.raises(UsageProblem, match=problem):
            parse(text, NOW)


def test_since_values() -> None:
    assert since_moment("36500d", NOW) == NOW - timedelta(days=36500)
    assert since_moment("0000000000000000000001h", NOW) == NOW - timedelta(hours=1)
    assert since_moment(" 1h30m ", NOW) == NOW - timedelta(minutes=90)
    assert since_moment("0s", NOW) == NOW
    assert since_moment("2026-01-02T03:04:05Z", NOW) == NOW
    assert since_moment("2026-01-02T04:00:00+01:00", NOW) == datetime(2026, 1, 2, 3, tzinfo=UTC)
    assert since_moment("1900-01-01", NOW) == datetime(1900, 1, 1, tzinfo=UTC)
    assert check_stats_since("7d", NOW) == "7d"
    with pytest.raises(UsageProblem, match="--since '8d' is more than 7 days back"):
        check_stats_since("8d", NOW)


def test_the_stats_window_starts_on_the_hour_within_the_days_kept() -> None:
    """What the server reads from ``?since=`` (the CLI checks ``--since`` with the same
    function): rounded down to the hour, at most 7 days before the current hour."""
    now = NOW.timestamp()
    hour = datetime(2026, 1, 2, 3, tzinfo=UTC).timestamp()
    assert stats_window_start("90m", now) == hour - 2 * 3600  # 01:34:05 -> 01:00
    assert stats_window_start("0s", now) == hour
    assert stats_window_start("7d", now) == hour - 7 * 86400
    assert stats_window_start("2025-12-26T03:59:59Z", now) == hour - 7 * 86400
    for text, problem in [
        ("2025-12-26T02:59:59Z", "since '2025-12-26T02:59:59Z' is more than 7 days back"),
        ("169h", "more than 7 days back"),
        ("9" * 400 + "h", "too long"),
        ("yesterday", "since must be a duration such as 1h, 24h or 7d"),
        ("2026-01-02T03:04:06Z", "in the future"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
    ]:
        with pytest.raises(ValueError, match=problem):
            stats_window_start(text, now)


def test_disable_imports_only_what_it_needs() -> None:
    """The emergency command loads click and httpx, not msgspec/yaml/the SDK/the server."""
    script = (
        "import sys\n"
        "sys.argv = ['flags', '--url', sys.argv[1], '--token', 't', 'disable', 'some-flag']\n"
        "from flagport_cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    url = f"http://127.0.0.1:{free_port()}"  # unreachable: exit 3 after the request was tried
    completed = subprocess.run(
        [sys.executable, "-c", script, url], capture_output=True, text=True, check=True
    )
    modules = set(completed.stdout.split())
    assert "httpx" in modules
    assert "cannot reach" in completed.stderr
    heavy = {"msgspec", "yaml", "flagport", "flagport_server", "litestar", "rich", "mmh3"}
    assert not heavy & modules, heavy & modules
