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
    "check_key",
    "parse_duration",
    "parse_percentage",
    "parse_since",
    "read_document",
]

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
_MAX_KEY_LENGTH = 200
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or combinations such as ``1h30m``."""
    raw = text.strip().lower()
    position, seconds = 0, 0
    for match in _DURATION_RE.finditer(raw):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not raw or position != len(raw):
        raise UsageProblem(
            f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 1h or 30m"
        )
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime | None = None) -> str:
    """A duration (``1h``: that long ago) or an ISO-8601 date-time, as ISO-8601 UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = (now or datetime.now(UTC)) - parse_duration(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
