"""Turn a missing external tool into a skip, or a failure under ``FLAGPORT_STRICT=1``.

CI sets ``FLAGPORT_STRICT=1`` so a test that needs redis-server, php or a browser can never
pass by silently skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

__all__ = ["REPO_ROOT", "SHARED_DIR", "require_module", "require_path", "require_tool", "strict"]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``../shared`` beside the clone (CI lays it there too).
SHARED_DIR = REPO_ROOT.parent / "shared"


def strict() -> bool:
    return os.environ.get("FLAGPORT_STRICT", "") not in ("", "0")


def _missing(what: str) -> None:
    message = f"{what} is not available"
    if strict():
        pytest.fail(f"{message} (FLAGPORT_STRICT=1: .ci/run must install it)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The absolute path of executable ``name``, or skip (fail when strict)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        _missing(f"the tool {name!r}")
    return found  # type: ignore[return-value]


def require_path(path: Path, what: str) -> Path:
    """``path`` if it exists, or skip (fail when strict)."""
    if not path.exists():
        _missing(f"{what} ({path})")
    return path


def require_module(name: str) -> Any:
    """Import ``name``, or skip (fail under FLAGPORT_STRICT=1) like ``require_tool``."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as error:
        _missing(f"the Python module {name!r} ({error})")
