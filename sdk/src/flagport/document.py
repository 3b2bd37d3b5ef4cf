"""Read and write snapshot documents as JSON or YAML (config as code).

``load_document`` raises only :class:`~flagport.InvalidDocumentError`; its ``path`` names the
offending field and, for syntax errors, the message names the line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import SnapshotDocument, compile_snapshot, document_from_builtins

__all__ = [
    "Format",
    "dump_document",
    "load_document",
    "lone_surrogate",
    "parse_json",
    "strip_volatile",
]

Format = Literal["json", "yaml"]
_VOLATILE_FLAG_FIELDS = ("version", "created_at", "updated_at")


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    # -0.0 equals 0 yet is written, exported and served as "-0.0": one value, two texts.
    if value == 0.0 and text.startswith("-"):
        raise ValueError(f"negative zero ({text}) is not allowed: write 0")
    return value


_SURROGATE_ESCAPE = re.compile(r"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def lone_surrogate(text: str) -> str | None:
    """The first ``\\uD800``-``\\uDFFF`` escape in JSON ``text`` that is not half of a
    high-low pair (a lone surrogate is not a character: no UTF-8 text can hold it), else
    ``None``."""
    pending: re.Match[str] | None = None
    for match in _SURROGATE_ESCAPE.finditer(text):
        backslashes = match.group(1)
        if len(backslashes) % 2 == 0:
            continue  # an escaped backslash followed by the letter u: no escape at all
        high = int(match.group(2), 16) < 0xDC00
        if pending is not None:
            if not high and len(backslashes) == 1 and match.start() == pending.end():
                pending = None
                continue
            return "\\u" + pending.group(2)
        if not high:
            return "\\u" + match.group(2)
        pending = match
    return None if pending is None else "\\u" + pending.group(2)


def parse_json(data: bytes | str) -> Any:
    """Parse configuration JSON (a document, an admin API body) by Flagport's one rule:
    UTF-8 only, and no duplicate keys, ``NaN``/``Infinity``, numbers out of range, negative
    zero or lone surrogates: each is refused with :class:`~flagport.InvalidDocumentError`
    naming it, where a lenient parser would silently pick a value."""
    text = _utf8(data)
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as error:
        raise InvalidDocumentError(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except (_DuplicateKeyError, ValueError, RecursionError) as error:
        raise InvalidDocumentError(f"invalid JSON: {error}") from None
    if "\\u" in text and (escape := lone_surrogate(text)) is not None:
        raise InvalidDocumentError(
            f"invalid JSON: {escape} is a lone UTF-16 surrogate (half of a pair), not a character"
        )
    return obj


def _utf8(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidDocumentError(f"not UTF-8 text: {error}") from None


def _parse_yaml(text: str) -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 booleans (``on``/``off``/``yes``/``no`` stay strings: they
        are variant names here) that refuses duplicate mapping keys instead of keeping the last."""

    # Unquoted dates stay strings too: the models hold ISO-8601 text (``before``/``after``
    # values, timestamps), never datetime objects.
    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )

    def construct_mapping(
        loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False
    ) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                raise InvalidDocumentError(
                    f"mapping keys must be scalars, at line {key_node.start_mark.line + 1}"
                )
            if key in seen:
                raise InvalidDocumentError(
                    f"duplicate key {key!r} at line {key_node.start_mark.line + 1}"
                )
            seen[key] = True
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)
    except InvalidDocumentError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidDocumentError(f"invalid YAML{where}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise InvalidDocumentError(f"invalid YAML: {error}") from None
    except RecursionError:
        raise InvalidDocumentError("invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as error:  # e.g. an int of 5,000 digits
        raise InvalidDocumentError(f"invalid YAML: {error}") from None


def load_document(
    data: bytes | str, format: Format | None = None, *, strict: bool = True
) -> SnapshotDocument:
    """Parse and validate a snapshot document.

    ``format`` defaults to JSON when the text starts with ``{``, YAML otherwise. With
    ``strict`` (the default) cross-references are checked too: unknown variants, segments
    and prerequisites, cycles, percentages with more than 3 decimals.
    """
    text = _utf8(data)
    if format is None:
        format = "json" if text.lstrip().startswith("{") else "yaml"
    obj = parse_json(text) if format == "json" else _parse_yaml(text)
    if obj is None:
        obj = {}
    document = document_from_builtins(obj)
    if strict:
        compile_snapshot(document, strict=True)
    return document


def strip_volatile(document: SnapshotDocument) -> SnapshotDocument:
    """The document without versions and timestamps: what config as code compares."""
    flags = {
        key: msgspec.structs.replace(flag, version=0, created_at=None, updated_at=None)
        for key, flag in document.flags.items()
    }
    segments = {
        key: msgspec.structs.replace(segment, version=0, updated_at=None)
        for key, segment in document.segments.items()
    }
    return SnapshotDocument(bucketing=document.bucketing, flags=flags, segments=segments, version=0)


def dump_document(
    document: SnapshotDocument, format: Format = "yaml", *, volatile: bool = False
) -> bytes:
    """Serialise ``document`` with keys sorted; versions and timestamps only if ``volatile``."""
    if not volatile:
        document = strip_volatile(document)
    builtins = msgspec.to_builtins(document, order="sorted")
    if not volatile:
        builtins.pop("version", None)
    builtins["flags"] = dict(sorted(builtins["flags"].items()))
    builtins["segments"] = dict(sorted(builtins["segments"].items()))
    if format == "json":
        return msgspec.json.format(msgspec.json.encode(builtins), indent=2) + b"\n"
    import yaml

    return yaml.safe_dump(builtins, sort_keys=False, allow_unicode=True).encode()
