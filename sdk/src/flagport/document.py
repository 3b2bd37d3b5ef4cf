"""Snapshot documents, the one home: read and write them as JSON or YAML (config as code),
read a file within the size limit, decode the server's ``/v1/snapshot`` body and read
:class:`~flagport.LocalClient`'s bootstrap files. The pure conversion of decoded builtins into
models is the engine's (``flagport.engine.document_from_builtins``).

``load_document`` raises only :class:`~flagport.InvalidDocumentError`; its ``path`` names the
offending field and, for syntax errors, the message names the line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import (
    MAX_DOCUMENT_BYTES,
    SnapshotDocument,
    TolerantDecoder,
    check_document_limits,
    compile_snapshot,
    document_from_builtins,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Format",
    "SnapshotFeed",
    "decode_snapshot",
    "dump_document",
    "line_of",
    "load_document",
    "lone_surrogate",
    "parse_json",
    "read_bootstrap",
    "read_document_file",
    "repeated_key_line",
    "strip_volatile",
]

Format = Literal["json", "yaml"]


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


@functools.cache
def _yaml_loader() -> type[Any]:
    """The one YAML loader of Flagport, built on first use (``flags disable`` never loads yaml)."""
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    base: type[Any]
    if yaml.__with_libyaml__:
        # With libyaml's parser a document loads about three times faster (a 15,000-flag
        # import: seconds, not tens of seconds); the composer stays Python's, so that every
        # node passes through ``compose_node`` below.
        from yaml.cyaml import CParser  # type: ignore[attr-defined]  # not in the stubs' __all__

        base = CParser
    else:
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PythonParser(Reader, Scanner, Parser):
            def __init__(self, stream: str | bytes) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)

        base = PythonParser

    class StrictLoader(Composer, base, SafeConstructor, Resolver):  # type: ignore[misc]
        """A safe loader with YAML 1.2 booleans (``on``/``off``/``yes``/``no`` stay strings:
        they are variant names here) that refuses duplicate mapping keys instead of keeping the
        last, and refuses anchors and aliases: a few hundred bytes of nested aliases expand to
        gigabytes once the document is converted or encoded (a "billion laughs")."""

        def __init__(self, stream: str | bytes) -> None:
            base.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                sigil = "*" if isinstance(event, yaml.AliasEvent) else "&"
                mark = event.start_mark
                raise InvalidDocumentError(
                    f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                    f"aliases and anchors are not supported ({sigil}{event.anchor}); "
                    "write the value out in full"
                )
            return super().compose_node(parent, index)

        def construct_checked_mapping(self, node: yaml.MappingNode) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node)
                if not isinstance(key, str | int | float | bool | None):
                    raise InvalidDocumentError(
                        f"mapping keys must be scalars, at line {key_node.start_mark.line + 1}"
                    )
                if key in seen:
                    raise InvalidDocumentError(
                        f"duplicate key {key!r} at line {key_node.start_mark.line + 1}"
                    )
                seen.add(key)
            return self.construct_mapping(node)

    # Unquoted dates stay strings too: the models hold ISO-8601 text (``before``/``after``
    # values, timestamps), never datetime objects.
    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in dropped]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    StrictLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_checked_mapping
    )
    return StrictLoader


def _parse_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
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


def _check_size(data: bytes | str) -> None:
    size = len(data)
    if isinstance(data, str) and size * 4 > MAX_DOCUMENT_BYTES:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidDocumentError(_too_large())


def _too_large() -> str:
    return f"the document is larger than {MAX_DOCUMENT_BYTES >> 20} MiB, the limit"


def read_document_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a document file, read only up to the size limit: a larger file raises
    :class:`~flagport.InvalidDocumentError` without being read whole. ``OSError`` when the
    file cannot be read."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidDocumentError(_too_large())
    return data


def load_document(
    data: bytes | str,
    format: Format | None = None,
    *,
    strict: bool = True,
    ignore_unknown_fields: bool = False,
) -> SnapshotDocument:
    """Parse and validate a snapshot document.

    ``format`` defaults to JSON when the text starts with ``{``, YAML otherwise. With
    ``strict`` (the default) cross-references are checked too (unknown variants, segments
    and prerequisites, cycles, percentages with more than 3 decimals), and the limits that
    a store's commit enforces, so a document that would be refused is refused here first.
    A field this release does not know is refused (a typo must not be dropped silently),
    unless ``ignore_unknown_fields``: for a snapshot a newer server wrote, never an import.
    """
    _check_size(data)
    text = _utf8(data)
    if format is None:
        format = "json" if text.lstrip().startswith("{") else "yaml"
    obj = parse_json(text) if format == "json" else _parse_yaml(text)
    if obj is None:
        obj = {}
    document = document_from_builtins(obj, ignore_unknown_fields=ignore_unknown_fields)
    if strict:
        check_document_limits(document)
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


_PATH_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]')


def line_of(text: str, path: str) -> int | None:
    """Best effort: the 1-based line of ``path`` (``$.flags["a"].percentage``, an
    :class:`~flagport.InvalidDocumentError` path) in ``text``. JSON is YAML too, so one
    composer serves both formats."""
    import yaml

    try:
        node: Any = yaml.compose(text, Loader=_yaml_loader())
    except Exception:
        return None
    line = None
    for match in _PATH_TOKEN.finditer(path.removeprefix("$")):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name is not None and isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == name]
            if not found:
                break
            key_node, node = found[0]
            line = key_node.start_mark.line + 1
        elif match.group(3) is not None and isinstance(node, yaml.SequenceNode):
            index = int(match.group(3))
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            break
    return line


def repeated_key_line(text: bytes | str) -> int | None:
    """Best effort: the 1-based line of the first key given twice in one object of ``text``,
    which :func:`parse_json` refuses without saying where (JSON is YAML: one composer)."""
    import yaml

    try:
        root: Any = yaml.compose(text, Loader=_yaml_loader())
    except Exception:
        return None
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                if key_node.value in seen:
                    return int(key_node.start_mark.line) + 1
                seen.add(key_node.value)
                pending.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return None


class SnapshotFeed(SnapshotDocument):
    """What ``GET /v1/snapshot`` serves: the configuration, and the flags under a running
    rollout plan (docs/spec.md section 13, "Cohort metadata"), so that an in-process client
    reports its requests for the plan's cohorts as the server's answers let a remote one.

    ``rollouts`` is sent only while a plan runs: an SDK that predates it reads every other
    snapshot as it always did."""

    #: The plan flags of the running plans, sorted.
    rollouts: list[str] = msgspec.field(default_factory=list)


#: A newer server's snapshot may carry fields this SDK does not know: they are ignored.
_decode = TolerantDecoder(SnapshotFeed).decode


def decode_snapshot(content: bytes) -> SnapshotFeed:
    """The document served by ``GET /v1/snapshot``, fields this SDK does not know ignored
    (they are additive: a newer server's snapshot reads as the one this SDK knows)."""
    try:
        return _decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise InvalidDocumentError(f"unreadable snapshot from the server: {error}") from None


def read_bootstrap(
    source: str | os.PathLike[str] | SnapshotDocument | Mapping[str, Any],
) -> tuple[SnapshotDocument, float | None]:
    """(document, file modification time or None) from a JSON/YAML file, a document or a
    mapping. Read as the server's snapshot is: cross-references are not enforced (a broken
    flag serves PARSE_ERROR, as it would from the server) and fields this SDK does not know
    are ignored (a newer server's export)."""
    if isinstance(source, SnapshotDocument):
        return source, None
    if isinstance(source, Mapping):
        return document_from_builtins(dict(source), ignore_unknown_fields=True), None
    path = Path(source)
    try:
        data = read_document_file(path)
        mtime = path.stat().st_mtime
    except OSError as error:
        raise InvalidDocumentError(f"cannot read bootstrap file {str(path)!r}: {error}") from None
    return load_document(data, strict=False, ignore_unknown_fields=True), mtime
