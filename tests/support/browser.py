"""Debian's Chromium driven by Playwright (pinned in pyproject.toml), for every browser test.

Never ``playwright install`` (it downloads browsers): the tests launch ``/usr/bin/chromium``
with the flags this machine's closed network needs, and a profile in a temp dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tools import require_module, require_tool

__all__ = ["CHROMIUM_ARGS", "launched_chromium"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed and cleaned up after."""
    sync_api = require_module("playwright.sync_api")
    executable = require_tool("chromium")
    # Chromium's singleton socket lives under $TMPDIR: keep the path short (108-byte limit).
    home = Path(tempfile.mkdtemp(prefix="fp-chr-", dir="/tmp"))
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, env=env, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()
            shutil.rmtree(home, ignore_errors=True)
