"""Flagport: feature flags with consistent percentage rollouts.

The pure evaluation engine lives in :mod:`flagport.engine`; the clients that talk to a
Flagport server are imported lazily, so ``import flagport`` never imports httpx.
"""

from __future__ import annotations

from typing import Any

from flagport._exceptions import ClientError, FlagportError, InvalidDocumentError
from flagport.engine import (
    CompiledSnapshot,
    ErrorCode,
    EvaluationResult,
    Flag,
    Reason,
    SnapshotDocument,
    bucket,
    compile_snapshot,
)

__all__ = [
    "ClientError",
    "CompiledSnapshot",
    "ErrorCode",
    "EvaluationResult",
    "Flag",
    "FlagportError",
    "InvalidDocumentError",
    "Reason",
    "SnapshotDocument",
    "bucket",
    "compile_snapshot",
]

__version__ = "0.1.0"

# Name -> module for clients that need httpx; filled in as the clients land.
_LAZY: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flagport' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
