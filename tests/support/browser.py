"""Debian's Chromium driven by Playwright (pinned in the dev dependencies), never a browser
download: the launch every browser test shares."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.tools import require_tool

__all__ = ["CHROMIUM_ARGS", "chromium"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (a Playwright ``Browser``); skips (fails when strict) without
    ``/usr/bin/chromium``."""
    from playwright.sync_api import sync_playwright

    executable = require_tool("chromium")
    # Chromium's singleton socket lives under $TMPDIR: keep the path short (108-byte limit).
    home = Path(tempfile.mkdtemp(prefix="fp-chr-", dir="/tmp"))
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, env=env, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()
            shutil.rmtree(home, ignore_errors=True)
