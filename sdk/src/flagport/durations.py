"""Durations, "since" values and the stats window: the one reading of ``90m``, ``24h``,
``7d``, ``1h30m`` or an ISO-8601 date-time, shared by the server (``GET .../stats?since=``,
audit filters) and the CLI (``--since``), so that both accept and refuse the same text with
the same words (docs/spec.md, the HTTP surface).

Only the standard library: the CLI reads ``--since`` before any request. Every error is a
:class:`ValueError` whose message names the problem and the option (``name``); the caller
says how it reaches the user (an HTTP problem, exit code 2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "DEFAULT_STATS_SINCE",
    "MAX_DURATION",
    "MAX_TOKEN_LIFETIME",
    "MIN_TOKEN_LIFETIME",
    "STATS_DAYS_KEPT",
    "STATS_HOURS_KEPT",
    "duration_seconds",
    "hour_of",
    "parse_duration",
    "since_moment",
    "stats_window_start",
    "token_lifetime",
]

#: One amount and its unit; a duration is one or more of them, nothing between.
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration (a century): the bound keeps every date computed from one in range.
MAX_DURATION: Final = timedelta(days=36500)
#: A token made to expire (``flags token create --expires``) lives at least an hour and at
#: most two years: a personal token is renewed by rotating it, never kept for ever.
MIN_TOKEN_LIFETIME: Final = timedelta(hours=1)
MAX_TOKEN_LIFETIME: Final = timedelta(days=730)
#: Digits read of one amount: more is beyond any limit (and ``int()`` refuses 4,300 digits).
_MAX_AMOUNT_DIGITS: Final = 12
#: Stats (hourly counts, unique-unit sketches) are kept this long: a window starts at most
#: this far back.
STATS_DAYS_KEPT: Final = 7
STATS_HOURS_KEPT: Final = STATS_DAYS_KEPT * 24
#: The stats window when none is asked for.
DEFAULT_STATS_SINCE: Final = "24h"


def duration_seconds(text: str) -> int | None:
    """The seconds ``text`` spells (``1h30m``; case and surrounding blanks ignored), None if
    it is no duration. An amount too long to matter counts as more than any limit."""
    raw = text.strip().lower()
    position, seconds = 0, 0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != position:
            break
        digits = match.group(1).lstrip("0")
        if len(digits) > _MAX_AMOUNT_DIGITS:
            seconds += 10**_MAX_AMOUNT_DIGITS
        else:
            seconds += int(digits or "0") * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not raw or position != len(raw):
        return None
    return seconds


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or combinations such as ``1h30m``; at most
    :data:`MAX_DURATION`. :class:`ValueError` otherwise."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 1h or 30m"
        )
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is too long: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def token_lifetime(text: str, *, name: str = "expires") -> int:
    """The seconds a token's ``expires`` value (``90d``, ``12w``, ``36h``) spells, between
    :data:`MIN_TOKEN_LIFETIME` and :data:`MAX_TOKEN_LIFETIME`; :class:`ValueError` naming
    ``name`` otherwise. The server and the CLI both read ``expires`` with it."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise ValueError(f"invalid {name} {text!r}: use a number and a unit (h, d, w), e.g. 90d")
    if seconds < MIN_TOKEN_LIFETIME.total_seconds():
        raise ValueError(f"{name} {text!r} is too short: at least 1h")
    if seconds > MAX_TOKEN_LIFETIME.total_seconds():
        raise ValueError(f"{name} {text!r} is too long: at most {MAX_TOKEN_LIFETIME.days}d")
    return seconds


def since_moment(text: str, now: datetime | None = None, *, name: str = "since") -> datetime:
    """The moment a "since" value names, in UTC: a duration back from ``now`` (at most
    :data:`MAX_DURATION`) or an ISO-8601 date-time (UTC unless it names its offset). Anything
    else, or a moment after ``now``, is a :class:`ValueError` naming ``name``."""
    now = now or datetime.now(UTC)
    if duration_seconds(text) is not None:
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except ValueError:
        raise ValueError(
            f"{name} must be a duration such as 1h, 24h or 7d, or an ISO-8601 date-time; "
            f"got {text!r}"
        ) from None
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{name} {text!r} is out of range") from None
    if moment > now:
        raise ValueError(f"{name} {text!r} is in the future")
    return moment


def hour_of(at: float) -> int:
    """The start of the hour holding ``at`` (seconds since the epoch)."""
    return int(at // 3600) * 3600


def stats_window_start(text: str, now: float, *, name: str = "since") -> int:
    """The start of a stats window (seconds since the epoch): the "since" value rounded down
    to the hour, at most :data:`STATS_DAYS_KEPT` days before the current hour, not after
    ``now``. :class:`ValueError` naming ``name`` otherwise."""
    moment = since_moment(text, datetime.fromtimestamp(now, UTC), name=name)
    start = hour_of(moment.timestamp())
    if start < hour_of(now) - STATS_HOURS_KEPT * 3600:
        raise ValueError(
            f"{name} {text!r} is more than {STATS_DAYS_KEPT} days back: "
            f"stats are kept {STATS_DAYS_KEPT} days"
        )
    return start
