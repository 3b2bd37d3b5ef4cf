"""Checks that need no server: they run before any request and fail with exit code 2.

Only the standard library at import time: ``flags disable`` must start fast. The key grammar
is the engine's (``flagport.engine.validate_key``); the regex below is its fast path, and the
engine is imported only to word the error (a test checks both agree).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from flagport_cli._errors import UsageProblem

__all__ = [
    "MAX_DURATION",
    "check_key",
    "parse_duration",
    "parse_percentage",
    "parse_since",
    "read_document",
    "since_moment",
]

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
_MAX_KEY_LENGTH = 200
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration (a century): the bound keeps every date computed from one in range.
MAX_DURATION = timedelta(days=36500)
_MAX_DURATION_DIGITS = 12


def check_key(key: str) -> str:
    """``key`` if it follows the key grammar, else :class:`UsageProblem` saying why."""
    if len(key) <= _MAX_KEY_LENGTH and _KEY_RE.fullmatch(key):
        return key
    from flagport import InvalidDocumentError
    from flagport.engine import validate_key

    try:
        validate_key(key, "key")
    except InvalidDocumentError as error:
        raise UsageProblem(error.problem) from None
    raise UsageProblem(f"invalid key {key!r}")


def parse_percentage(text: str) -> float:
    """A percentage in [0, 100] with at most 3 decimals (``12.5``, ``12.5%``)."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise UsageProblem(f"percentage must be a number between 0 and 100, got {text!r}") from None
    if not value.is_finite() or not (0 <= value <= 100):
        raise UsageProblem(f"percentage must be between 0 and 100, got {text!r}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3:
        raise UsageProblem(f"percentage {text!r} has more than 3 decimals (0.001 % resolution)")
    return float(value)


def _duration_seconds(text: str) -> int | None:
    """The seconds ``text`` spells (``1h30m``), None if it is no duration; a number too long
    to matter comes back as more than any limit (``int()`` itself refuses 4,300 digits)."""
    raw = text.strip().lower()
    position, seconds = 0, 0
    for match in _DURATION_RE.finditer(raw):
        if match.start() != position:
            break
        digits = match.group(1).lstrip("0")
        if len(digits) > _MAX_DURATION_DIGITS:
            seconds += 10**_MAX_DURATION_DIGITS
        else:
            seconds += int(digits or "0") * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not raw or position != len(raw):
        return None
    return seconds


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or combinations such as ``1h30m``; at most
    ``MAX_DURATION``."""
    seconds = _duration_seconds(text)
    if seconds is None:
        raise UsageProblem(
            f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 1h or 30m"
        )
    if seconds > MAX_DURATION.total_seconds():
        raise UsageProblem(f"duration {text!r} is too long: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def since_moment(text: str, now: datetime | None = None) -> datetime:
    """The moment a ``--since`` names, in UTC: a duration back from now (``30m``, ``1h``,
    ``7d``, at most ``MAX_DURATION``) or an ISO-8601 date-time (UTC unless it names its
    offset). Anything else, or a moment in the future, is a :class:`UsageProblem`."""
    now = now or datetime.now(UTC)
    if _duration_seconds(text) is not None:
        return now - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except ValueError:
        raise UsageProblem(
            f"invalid --since {text!r}: use a duration (30m, 1h, 7d) or an ISO-8601 date-time"
        ) from None
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise UsageProblem(f"--since {text!r} is out of range") from None
    if moment > now:
        raise UsageProblem(f"--since {text!r} is in the future")
    return moment


def parse_since(text: str, now: datetime | None = None) -> str:
    """:func:`since_moment` as ISO-8601 UTC with milliseconds (``2026-01-02T03:04:05.000Z``)."""
    moment = since_moment(text, now)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_document(path: str, *, strict: bool = False) -> tuple[bytes, str]:
    """Read and check a flags document (JSON or YAML): (bytes, format). Syntax, size and field
    shapes are checked here; cross-references (unknown prerequisites, cycles) only with
    ``strict``: a merge import may refer to flags only the server has."""
    from flagport import InvalidDocumentError
    from flagport.document import line_of, load_document, read_document_file

    try:
        data = read_document_file(path)
    except OSError as error:
        raise UsageProblem(f"cannot read {path}: {error.strerror or error}") from None
    except InvalidDocumentError as error:
        raise UsageProblem(f"{path}: {error.problem}") from None
    text = data.decode("utf-8", errors="replace")
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        format = "json"
    elif suffix in (".yaml", ".yml"):
        format = "yaml"
    else:
        format = "json" if text.lstrip().startswith("{") else "yaml"
    try:
        load_document(data, format, strict=strict)  # type: ignore[arg-type]
    except InvalidDocumentError as error:
        where = ""
        if error.path != "$":
            line = line_of(text, error.path)
            where = f" (line {line}, field {error.path})" if line else f" (field {error.path})"
        raise UsageProblem(f"{path}: {error.problem}{where}") from None
    return data, format
