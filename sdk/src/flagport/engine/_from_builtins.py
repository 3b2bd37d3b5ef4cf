"""Plain builtins (decoded JSON or YAML) into validated model objects: the pure half of
reading a document. Every document is read through :mod:`flagport.document` (text, files,
the server's snapshot, bootstrap files), which calls this; nothing else reads documents.

msgspec validates types and bounds; this module re-roots its error paths so that they name
the flag (``$.flags["a.b"].percentage``) and turns every failure into
:class:`~flagport.InvalidDocumentError`, whatever the input.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from flagport._exceptions import PATH_MARKER, InvalidDocumentError
from flagport.engine._tolerant import TolerantDecoder
from flagport.engine.models import BUCKETING_VERSION, Flag, Segment, SnapshotDocument

__all__ = [
    "document_from_builtins",
    "flag_from_builtins",
    "segment_from_builtins",
    "split_validation_message",
]

T = TypeVar("T")

_tolerant_flags = TolerantDecoder(Flag)
_tolerant_segments = TolerantDecoder(Segment)


def split_validation_message(message: str) -> tuple[str, str | None]:
    """(problem, JSON path or None) from a msgspec validation message, the two parts split at
    ``PATH_MARKER`` (``flagport._exceptions``, which shows the wording): ``("Expected `int`,
    got `str`", "$.flags[0]")``. The one reader of msgspec's wording: documents here, request
    bodies in the server."""
    problem, found, where = message.partition(PATH_MARKER)
    if not found:
        return message, None
    return problem, where.rstrip("`")


def _convert(obj: Any, kind: type[T], path: str, tolerant: TolerantDecoder[T] | None = None) -> T:
    try:
        if tolerant is not None:
            return tolerant.convert(obj)
        return msgspec.convert(obj, kind, strict=True)
    except msgspec.ValidationError as error:
        message, where = split_validation_message(str(error))
        at = path + where[1:] if where is not None and where.startswith("$") else path
        raise InvalidDocumentError(message, at) from None
    except (
        TypeError,
        ValueError,
        OverflowError,
        RecursionError,
    ) as error:  # defensive: odd builtins
        raise InvalidDocumentError(str(error) or type(error).__name__, path) from None


def flag_from_builtins(key: str, obj: Any, *, ignore_unknown_fields: bool = False) -> Flag:
    tolerant = _tolerant_flags if ignore_unknown_fields else None
    return _convert(obj, Flag, f'$.flags["{key}"]', tolerant)


def segment_from_builtins(key: str, obj: Any, *, ignore_unknown_fields: bool = False) -> Segment:
    tolerant = _tolerant_segments if ignore_unknown_fields else None
    return _convert(obj, Segment, f'$.segments["{key}"]', tolerant)


def document_from_builtins(obj: Any, *, ignore_unknown_fields: bool = False) -> SnapshotDocument:
    """Validate the document's shape (not its cross-references: :func:`compile_snapshot`
    with ``strict=True`` checks those). Unknown fields are refused, unless
    ``ignore_unknown_fields`` (a snapshot a newer server wrote, not a document to import)."""
    if not isinstance(obj, dict):
        raise InvalidDocumentError(
            f"a snapshot document must be an object, got {type(obj).__name__}", "$"
        )
    unknown = set(obj) - {"bucketing", "flags", "segments", "version"}
    if unknown and not ignore_unknown_fields:
        raise InvalidDocumentError(f"unknown field {sorted(map(str, unknown))[0]!r}", "$")
    bucketing = _convert(obj.get("bucketing", BUCKETING_VERSION), int, "$.bucketing")
    if bucketing != BUCKETING_VERSION:
        # Never evaluate with a bucketing this engine does not implement (docs/spec.md section 1).
        raise InvalidDocumentError(
            f"unsupported bucketing version {bucketing}; this engine implements "
            f"{BUCKETING_VERSION}",
            "$.bucketing",
        )
    version = _convert(obj.get("version", 0), int, "$.version")
    # An empty YAML section (`flags:`) is null; any other non-object is refused below.
    raw_flags = obj.get("flags")
    raw_segments = obj.get("segments")
    if raw_flags is None:
        raw_flags = {}
    if raw_segments is None:
        raw_segments = {}
    if not isinstance(raw_flags, dict):
        raise InvalidDocumentError("flags must be an object keyed by flag key", "$.flags")
    if not isinstance(raw_segments, dict):
        raise InvalidDocumentError("segments must be an object keyed by segment key", "$.segments")
    flags = {}
    for key, body in raw_flags.items():
        if not isinstance(key, str):
            raise InvalidDocumentError("flag keys must be strings", f"$.flags[{key!r}]")
        flags[key] = flag_from_builtins(
            key, {} if body is None else body, ignore_unknown_fields=ignore_unknown_fields
        )
    segments = {}
    for key, body in raw_segments.items():
        if not isinstance(key, str):
            raise InvalidDocumentError("segment keys must be strings", f"$.segments[{key!r}]")
        segments[key] = segment_from_builtins(
            key, {} if body is None else body, ignore_unknown_fields=ignore_unknown_fields
        )
    return SnapshotDocument(bucketing=bucketing, flags=flags, segments=segments, version=version)
