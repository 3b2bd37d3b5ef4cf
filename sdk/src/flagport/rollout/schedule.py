"""Steps, holds, start times and daily windows of a plan (docs/spec.md, "Guarded rollouts",
Schedule). Every function that needs the time takes ``now`` (an aware datetime).

Local times follow the wall clock of the plan's time zone. A local time that does not exist
(the spring DST gap) means the end of the gap; a local time that happens twice (autumn)
means its first occurrence. A daily window is open while the wall clock is in
``[start, end)``; it may cross midnight (``22:00-02:00``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from flagport.rollout.durations import format_duration, parse_duration
from flagport.rollout.errors import DurationError, ScheduleError
from flagport.rollout.limits import MAX_STEPS

__all__ = [
    "DEFAULT_STEPS",
    "DailyWindow",
    "check_steps",
    "local_moment",
    "next_opening",
    "parse_hold",
    "parse_max_hold",
    "parse_start_at",
    "parse_steps",
    "parse_time_zone",
    "parse_window",
    "window_open",
]

DEFAULT_STEPS: Final = (10.0, 25.0, 50.0, 100.0)
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_WINDOW = re.compile(r"\s*([0-9:]{4,5})\s*-\s*([0-9:]{4,5})\s*")
_MAX_ZONE_NAME = 64


def parse_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``), or :class:`ScheduleError`."""
    if not name or len(name) > _MAX_ZONE_NAME:
        raise ScheduleError(f"unknown time zone {name[:_MAX_ZONE_NAME]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin"
        ) from None


def _percentage(value: float | str) -> Decimal:
    try:
        number = Decimal(str(value).strip().removesuffix("%"))
    except InvalidOperation:
        raise ScheduleError(f"a step must be a percentage, got {value!r}") from None
    if not number.is_finite() or not 0 < number <= 100:
        raise ScheduleError(f"a step is above 0 and at most 100, got {value}")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3:
        raise ScheduleError(f"step {value} has more than 3 decimals (0.001 % resolution)")
    return number


def check_steps(
    steps: Iterable[float | str], enabled_percentage: float | None = None
) -> tuple[float, ...]:
    """The steps as percentages: 1 to :data:`~flagport.rollout.limits.MAX_STEPS` of them,
    each above 0 and at most 100 with at most 3 decimals, strictly increasing; on an
    enabled flag (``enabled_percentage`` its percentage) the first is not below it (a
    plan never lowers exposure to start)."""
    numbers = [_percentage(step) for step in steps]
    if not numbers:
        raise ScheduleError("a plan needs at least one step")
    if len(numbers) > MAX_STEPS:
        raise ScheduleError(f"a plan has at most {MAX_STEPS} steps, got {len(numbers)}")
    for before, after in itertools.pairwise(numbers):
        if after <= before:
            raise ScheduleError(f"steps must increase: {before} then {after}")
    if enabled_percentage is not None and numbers[0] < Decimal(str(enabled_percentage)):
        raise ScheduleError(
            f"the first step ({numbers[0]} %) is below the flag's current {enabled_percentage} "
            "%: a plan never lowers exposure (start from it or above)"
        )
    return tuple(float(number) for number in numbers)


def parse_steps(text: str, enabled_percentage: float | None = None) -> tuple[float, ...]:
    """``"10,25,50,100"`` as :func:`check_steps` checks it."""
    if len(text) > 20 * MAX_STEPS:
        raise ScheduleError(f"a plan has at most {MAX_STEPS} steps")
    return check_steps(text.split(","), enabled_percentage)


def parse_hold(text: str) -> int:
    """A step's hold in seconds: a positive duration (``30m``)."""
    try:
        seconds = parse_duration(text)
    except DurationError as error:
        raise ScheduleError(f"--hold: {error}") from None
    if seconds <= 0:
        raise ScheduleError(f"--hold must be positive, got {text!r}")
    return seconds


def parse_max_hold(text: str, hold: int) -> int:
    """The longest a step may hold for want of data, in seconds: at least the hold."""
    try:
        seconds = parse_duration(text)
    except DurationError as error:
        raise ScheduleError(f"--max-hold: {error}") from None
    if seconds < hold:
        raise ScheduleError(
            f"--max-hold ({text}) is shorter than the hold ({format_duration(hold)})"
        )
    return seconds


def local_moment(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The instant the wall clock of ``zone`` shows ``clock`` on ``day``: in a spring gap
    the gap's end, when it shows it twice the first time."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)
    # In a gap: fold=1 reads the wall time with the offset after the transition, which puts
    # it before the transition; fold=0 with the offset before it, after. The transition
    # (the gap's end) is the first second between them with the later offset.
    low = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    after = datetime.fromtimestamp(high, zone).utcoffset()
    while low < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after:
            high = middle
        else:
            low = middle + 1
    return datetime.fromtimestamp(high, UTC)


def _clock(text: str, what: str) -> time:
    found = _CLOCK.fullmatch(text.strip())
    if found is None:
        raise ScheduleError(f"{what} must be HH:MM (00:00 to 23:59), got {text!r}")
    return time(int(found.group(1)), int(found.group(2)))


def parse_start_at(text: str, zone_name: str | None, now: datetime) -> datetime:
    """When a scheduled plan starts, in UTC: an ISO-8601 date-time with its offset
    (``2026-12-10T02:00+01:00``), or ``HH:MM`` in ``zone_name`` meaning its next occurrence
    after ``now``. A moment that is not after ``now`` is an error."""
    raw = text.strip()
    if len(raw) > 40:
        raise ScheduleError("--start-at is an ISO-8601 date-time or HH:MM")
    if _CLOCK.fullmatch(raw):
        if zone_name is None:
            raise ScheduleError("--start-at HH:MM needs --tz (e.g. --tz Europe/Berlin)")
        zone = parse_time_zone(zone_name)
        clock = _clock(raw, "--start-at")
        today = now.astimezone(zone).date()
        for offset in range(3):
            moment = local_moment(today + timedelta(days=offset), clock, zone)
            if moment > now:
                return moment
        raise AssertionError("a wall-clock time recurs within three days")  # pragma: no cover
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ScheduleError(
            f"--start-at {text!r}: use an ISO-8601 date-time with its offset "
            "(2026-12-10T02:00+01:00) or HH:MM with --tz"
        ) from None
    if moment.tzinfo is None:
        raise ScheduleError(f"--start-at {text!r} needs its UTC offset (+01:00 or Z)")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise ScheduleError(f"--start-at {text!r} is out of range") from None
    if moment <= now:
        raise ScheduleError(f"--start-at {text!r} is in the past")
    return moment


class DailyWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Steps advance only while the wall clock of ``tz`` is in ``[start, end)`` (HH:MM);
    ``start > end`` crosses midnight."""

    start: str
    end: str
    tz: str

    def __str__(self) -> str:
        return f"{self.start}-{self.end} {self.tz}"


def parse_window(text: str, zone_name: str | None) -> DailyWindow:
    """``02:00-04:00`` in ``zone_name`` (required). A window of no length is an error."""
    found = _WINDOW.fullmatch(text) if len(text) <= 40 else None
    if found is None:
        raise ScheduleError(f"--window must be HH:MM-HH:MM (02:00-04:00), got {text[:40]!r}")
    start = _clock(found.group(1), "--window's start")
    end = _clock(found.group(2), "--window's end")
    if start == end:
        raise ScheduleError(f"--window {text.strip()!r} is empty: start and end are the same")
    if zone_name is None:
        raise ScheduleError("--window needs --tz (e.g. --tz Europe/Berlin)")
    parse_time_zone(zone_name)
    return DailyWindow(start.strftime("%H:%M"), end.strftime("%H:%M"), zone_name)


def window_open(window: DailyWindow, now: datetime) -> bool:
    """Whether the wall clock of the window's zone at ``now`` is inside the window."""
    clock = now.astimezone(parse_time_zone(window.tz)).time().replace(tzinfo=None)
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def next_opening(window: DailyWindow, now: datetime) -> datetime:
    """``now`` if the window is open, else the next instant it opens (in UTC)."""
    if window_open(window, now):
        return now
    zone = parse_time_zone(window.tz)
    start = time.fromisoformat(window.start)
    today = now.astimezone(zone).date()
    for offset in range(4):
        moment = local_moment(today + timedelta(days=offset), start, zone)
        # A window wholly inside a spring gap does not open that day.
        if moment > now and window_open(window, moment):
            return moment
    raise AssertionError("a daily window opens within four days")  # pragma: no cover
