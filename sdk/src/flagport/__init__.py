"""Flagport: feature flags with consistent percentage rollouts.

The pure evaluation engine lives in :mod:`flagport.engine`; the clients that talk to a
Flagport server are imported lazily, so ``import flagport`` never imports httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flagport._exceptions import ClientError, FlagportError, InvalidDocumentError
from flagport._types import ClientStatus, EvaluationContext, FlagDetails
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
    "AsyncClient",
    "Client",
    "ClientError",
    "ClientStatus",
    "CompiledSnapshot",
    "ErrorCode",
    "EvaluationContext",
    "EvaluationDetails",
    "EvaluationResult",
    "Flag",
    "FlagDetails",
    "FlagportError",
    "InvalidDocumentError",
    "LocalClient",
    "Reason",
    "SnapshotDocument",
    "bucket",
    "compile_snapshot",
]

__version__ = "0.1.0"

#: Another name for :class:`FlagDetails` (OpenFeature's word).
EvaluationDetails = FlagDetails

# Name -> module for the clients, which need httpx: imported on first use.
_LAZY: dict[str, str] = {
    "Client": "flagport._client",
    "AsyncClient": "flagport._async_client",
    "LocalClient": "flagport._local",
}

if TYPE_CHECKING:
    from flagport._async_client import AsyncClient
    from flagport._client import Client
    from flagport._local import LocalClient


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'flagport' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
