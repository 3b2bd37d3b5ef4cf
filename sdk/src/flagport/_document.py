"""Snapshot documents for :class:`~flagport.LocalClient`: the ``/v1/snapshot`` body and
bootstrap files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import SnapshotDocument, TolerantDecoder, document_from_builtins

__all__ = ["decode_snapshot", "read_bootstrap"]

#: A newer server's snapshot may carry fields this SDK does not know: they are ignored.
_decode = TolerantDecoder(SnapshotDocument).decode


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
