"""Snapshot documents for :class:`~flagport.LocalClient`: the ``/v1/snapshot`` body, bootstrap
files, and which flags read the clock (``before``/``after``/``$now``), so that only those pay
for ``time.time()`` on an evaluation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import (
    Condition,
    Flag,
    Operator,
    SnapshotDocument,
    TolerantDecoder,
    document_from_builtins,
)

__all__ = ["clock_keys", "decode_snapshot", "read_bootstrap"]

#: A newer server's snapshot may carry fields this SDK does not know: they are ignored.
_decode = TolerantDecoder(SnapshotDocument).decode
_CLOCK_OPS = (Operator.BEFORE, Operator.AFTER)
NOW = "$now"


def decode_snapshot(content: bytes) -> SnapshotDocument:
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
    from flagport.document import load_document, read_document_file

    path = Path(source)
    try:
        data = read_document_file(path)
        mtime = path.stat().st_mtime
    except OSError as error:
        raise InvalidDocumentError(f"cannot read bootstrap file {str(path)!r}: {error}") from None
    return load_document(data, strict=False, ignore_unknown_fields=True), mtime


def _reads_clock(condition: Condition, timed_segments: set[str]) -> bool:
    if condition.op in _CLOCK_OPS or condition.attribute == NOW:
        return True
    if condition.op is Operator.IN_SEGMENT:
        return any(value in timed_segments for value in condition.values)
    return False


def clock_keys(document: SnapshotDocument) -> frozenset[str]:
    """Keys of the flags whose result can depend on the time: their own rules, a segment
    they use, an ancestor or a prerequisite reads ``$now``."""
    timed_segments = {
        name
        for name, segment in document.segments.items()
        if any(_reads_clock(c, set()) for c in segment.conditions)
    }
    flags: dict[str, Flag] = document.flags
    timed = {
        key
        for key, flag in flags.items()
        if any(_reads_clock(c, timed_segments) for rule in flag.rules for c in rule.conditions)
    }
    upstream: dict[str, list[str]] = {}
    for key, flag in flags.items():
        parts = key.split(".")
        deps = [".".join(parts[:n]) for n in range(1, len(parts))]
        deps = [d for d in deps if d in flags]
        deps += [p.key for p in flag.prerequisites]
        upstream[key] = deps
    changed = True
    while changed:
        changed = False
        for key, deps in upstream.items():
            if key not in timed and any(d in timed for d in deps):
                timed.add(key)
                changed = True
    return frozenset(timed)
