"""Fixed flag values: the flags a test fixes (``LocalClient.from_flags``, the
``flagport_flags`` pytest fixture) and a developer's local overrides (``FLAGPORT_OVERRIDES``),
in the one format docs/spec.md defines ("Fixed flag values and local overrides").

A set of fixed values is a plain mapping of flag key to value. ``false`` is a flag that is
off; any other JSON value (``true``, a string, a number, an object) is a flag that is on and
serves that value, as Laravel Pennant reads a feature's value. Each value becomes a real
:class:`~flagport.engine.Flag` (:func:`fixed_flag`) that the engine evaluates like any other:
no second evaluation path. So a fixed ``a.b`` under a fixed ``a`` that is off is off too,
gated by ``a``, exactly as the server would serve it.

Local overrides apply on top of a client's real answers, key by key: an overridden key is
answered from the overrides (no network call, never counted as an exposure), every other key
as usual. They are read from ``FLAGPORT_OVERRIDES`` (inline JSON, or the path of a JSON file)
when a client is made, and ignored, with an error logged, when ``FLAGPORT_ENV`` is
``production``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.document import line_of, parse_json, repeated_key_line
from flagport.engine import (
    CompiledSnapshot,
    EvaluationResult,
    Flag,
    SnapshotDocument,
    compile_snapshot,
    validate_key,
)

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "MAX_OVERRIDES",
    "MAX_OVERRIDES_BYTES",
    "OVERRIDES_VARIABLE",
    "Overrides",
    "check_values",
    "fixed_document",
    "fixed_flag",
    "overrides_from_environment",
    "parse_overrides",
    "read_overrides",
]

logger = logging.getLogger("flagport")

#: Inline JSON (starting with ``{``) or the path of a JSON file of overrides.
OVERRIDES_VARIABLE = "FLAGPORT_OVERRIDES"
#: ``production`` here and every client ignores the overrides.
ENVIRONMENT_VARIABLE = "FLAGPORT_ENV"
#: An overrides file is a developer's handful of flags: bounded like a request body.
MAX_OVERRIDES_BYTES = 1 << 20
MAX_OVERRIDES = 10_000


def _value_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be a fixed flag's value (None: it can): JSON values only, and
    no ``null`` or array at the top (a flag serves a value; OFREP forbids arrays)."""
    if depth == 0:
        if value is None:
            return "null is not a flag value: use false for a flag that is off"
        if isinstance(value, list | tuple):
            return "an array is not a flag value (OFREP allows objects): wrap it in an object"
    if depth > 32:
        return "the value is nested too deeply"
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a JSON number"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"object keys must be strings, got {key!r}"
            problem = _value_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for item in value:
            problem = _value_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {type(value).__name__} is not a JSON value"


def _entry_path(key: Any) -> str:
    return f"$[{msgspec.json.encode(str(key)).decode()}]"


def check_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked as fixed flag values (keys by the flag key grammar, values JSON
    and neither ``null`` nor an array), as a new dict. Raises
    :class:`~flagport.InvalidDocumentError` whose ``path`` names the entry."""
    if not isinstance(values, Mapping):
        raise InvalidDocumentError(
            f"fixed flag values must be an object of flag key to value, got {type(values).__name__}"
        )
    if len(values) > MAX_OVERRIDES:
        raise InvalidDocumentError(f"{len(values)} flags; the limit is {MAX_OVERRIDES}")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        path = _entry_path(key)
        validate_key(key, path)
        problem = _value_problem(value)
        if problem is not None:
            raise InvalidDocumentError(problem, path)
        checked[key] = value
    return checked


def fixed_flag(value: Any) -> Flag:
    """The flag that serves ``value`` to everyone: ``false`` a flag that is off (reason
    ``DISABLED``), anything else a flag that is on at 100 % (reason ``STATIC``) whose off
    variant is ``false``."""
    if value is False:
        return Flag(enabled=False)
    if value is True:
        return Flag(enabled=True)
    return Flag(enabled=True, variants={"on": value, "off": False})


def fixed_document(
    values: Mapping[str, Any], base: SnapshotDocument | None = None
) -> SnapshotDocument:
    """``base`` (or an empty document) with the flags of ``values`` fixed: each replaces
    the flag of its key, or is added. ``values`` must have passed :func:`check_values`."""
    flags = dict(base.flags) if base is not None else {}
    for key, value in values.items():
        flags[key] = fixed_flag(value)
    if base is None:
        return SnapshotDocument(flags=flags)
    return msgspec.structs.replace(base, flags=flags)


def parse_overrides(data: bytes | str, source: str) -> dict[str, Any]:
    """The fixed values of an overrides text (JSON), checked. Errors raise
    :class:`~flagport.InvalidDocumentError` naming ``source`` and the position: the line and
    column of a syntax error, the line and path of a bad entry."""
    if len(data) > MAX_OVERRIDES_BYTES:
        raise InvalidDocumentError(
            f"{source}: larger than {MAX_OVERRIDES_BYTES >> 10} KiB, the limit"
        )
    try:
        parsed = parse_json(data)
    except InvalidDocumentError as error:
        line = repeated_key_line(data) if "duplicate key" in error.problem else None
        where = f", line {line}" if line is not None else ""
        raise InvalidDocumentError(f"{source}{where}: {error.problem}") from None
    if not isinstance(parsed, dict):
        raise InvalidDocumentError(
            f"{source}: line 1: overrides must be a JSON object of flag key to value"
        )
    try:
        return check_values(parsed)
    except InvalidDocumentError as error:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        line = line_of(text, error.path)
        where = f", line {line}" if line is not None else ""
        raise InvalidDocumentError(f"{source}{where}: {error.problem}", error.path) from None


def read_overrides(setting: str) -> tuple[dict[str, Any], str]:
    """(values, source) of a ``FLAGPORT_OVERRIDES`` setting: inline JSON when it starts with
    ``{``, else the path of a JSON file (read up to the size limit)."""
    if setting.lstrip().startswith("{"):
        source = f"{OVERRIDES_VARIABLE} (inline JSON)"
        return parse_overrides(setting, source), source
    source = f"{OVERRIDES_VARIABLE} file {setting!r}"
    try:
        with open(setting, "rb") as handle:
            data = handle.read(MAX_OVERRIDES_BYTES + 1)
    except OSError as error:
        raise InvalidDocumentError(f"{source}: cannot be read: {error.strerror}") from None
    return parse_overrides(data, source), source


class Overrides:
    """Fixed values answered by the engine, for the keys they name (see the module)."""

    __slots__ = ("snapshot", "source", "values")

    def __init__(self, values: Mapping[str, Any], source: str) -> None:
        self.values = check_values(values)
        self.source = source
        self.snapshot: CompiledSnapshot = compile_snapshot(fixed_document(self.values))

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def result(self, key: str, context: Mapping[str, Any]) -> EvaluationResult:
        """The overridden answer for ``key`` (one of :attr:`values`)."""
        return self.snapshot.evaluate(key, context, 0.0)

    def results(self, context: Mapping[str, Any]) -> dict[str, EvaluationResult]:
        return self.snapshot.evaluate_all(context, 0.0)


_warned: set[str] = set()


def _once(level: int, message: str) -> None:
    # Once per process and message: a client made per request must not log per request.
    if message not in _warned and len(_warned) < 100:
        _warned.add(message)
        logger.log(level, "flagport: %s", message)


def overrides_from_environment(environ: Mapping[str, str] | None = None) -> Overrides | None:
    """The overrides ``FLAGPORT_OVERRIDES`` names, or None: when it is unset or empty, and
    when ``FLAGPORT_ENV`` is ``production`` (then an error is logged, once: overrides never
    change a production build's answers). Active overrides are logged as a warning, once.
    A setting that cannot be read or parsed raises :class:`~flagport.InvalidDocumentError`
    naming it and the position (a developer's mistake, shown at the client's start)."""
    environ = os.environ if environ is None else environ
    setting = environ.get(OVERRIDES_VARIABLE, "")
    if not setting.strip():
        return None
    if environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() == "production":
        _once(
            logging.ERROR,
            f"{OVERRIDES_VARIABLE} is set but {ENVIRONMENT_VARIABLE}=production: "
            "the overrides are ignored",
        )
        return None
    values, source = read_overrides(setting)
    overrides = Overrides(values, source)
    keys = sorted(values)
    shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
    _once(
        logging.WARNING,
        f"local overrides from {source} are active for {len(keys)} flag(s): {shown} "
        "(never in production)",
    )
    return overrides
