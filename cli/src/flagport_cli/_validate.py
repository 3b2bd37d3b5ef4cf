"""Checks that need no server: they run before any request and fail with exit code 2.

Only the standard library at import time: ``flags disable`` must start fast. The reading of
``--since`` is the SDK's (:mod:`flagport.durations`, the server's too), imported when used.
The key grammar is the engine's (``flagport.engine.validate_key``); the regex below is its
fast path, and the engine is imported only to word the error (a test checks both agree).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from flagport_cli._errors import UsageProblem

__all__ = [
    "check_key",
    "check_stats_since",
    "check_token_lifetime",
    "parse_percentage",
    "read_document",
    "since_text",
]

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
_MAX_KEY_LENGTH = 200


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


def since_text(text: str, now: datetime | None = None) -> str:
    """The moment a ``--since`` names (:func:`flagport.durations.since_moment`: a duration
    back from now or an ISO-8601 date-time, not in the future) as ISO-8601 UTC with
    milliseconds (``2026-01-02T03:04:05.000Z``); else :class:`UsageProblem` saying why."""
    from flagport.durations import since_moment

    try:
        moment = since_moment(text, now, name="--since")
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_token_lifetime(text: str | None) -> None:
    """A token's ``--expires`` (:func:`flagport.durations.token_lifetime`, the server's rule:
    ``90d``, 1h to 730d), checked before any request; else :class:`UsageProblem`."""
    if text is None:
        return
    from flagport.durations import token_lifetime

    try:
        token_lifetime(text, name="--expires")
    except ValueError as error:
        raise UsageProblem(str(error)) from None


def check_stats_since(text: str, now: datetime | None = None) -> str:
    """``text`` if it starts a stats window the server accepts
    (:func:`flagport.durations.stats_window_start`: within the days stats are kept), else
    :class:`UsageProblem` saying why."""
    from flagport.durations import stats_window_start

    at = (now or datetime.now(UTC)).timestamp()
    try:
        stats_window_start(text, at, name="--since")
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    return text


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
