"""A real browser (Debian's Chromium, driven by Playwright) on a Blade page served by
php8.2-fpm through the bridge: ``window.features?.['ui-improvements']?.['dropdown-fixes']`` is
true for a user in the cohort, false for one outside it and for everyone after
``flags disable ui-improvements``, and a flag value containing ``</script>`` stays a string.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flagport
from tests.php.conftest import BRIDGE, require_module
from tests.php.fpm import fpm_pool
from tests.php.http_proxy import fastcgi_gateway
from tests.support.browser import chromium
from tests.support.server import PORTAL_FLAGS, flags_executable, running_server
from tests.support.tools import require_path

HOSTILE = "</script><script>window.pwned = 1</script><!--"
READ = "() => window.features?.['ui-improvements']?.['dropdown-fixes']"


def user_id(in_cohort: bool, percentage: int = 10) -> str:
    for n in range(1, 10_000):
        if (flagport.bucket("ui-improvements", str(n)) < percentage * 1000) is in_cohort:
            return str(n)
    raise AssertionError("no such user")


@pytest.fixture
def browser() -> Iterator[Any]:
    require_module("playwright.sync_api")
    with chromium() as launched:
        yield launched


def test_window_features_in_a_real_browser(browser: Any, tmp_path: Path) -> None:
    require_path(Path("/usr/share/php/Illuminate/autoload.php"), "php-laravel-framework")
    work = Path(tempfile.mkdtemp(prefix="fp-browser-", dir="/tmp"))
    try:
        check_page(browser, tmp_path, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_page(browser: Any, tmp_path: Path, work: Path) -> None:
    with (
        running_server(tmp_path / "server", seed=PORTAL_FLAGS, uds=True) as server,
        fpm_pool(work / "fpm") as pool,
    ):
        with server.admin(timeout=10) as admin:
            enabled = admin.post("/admin/v1/flags/ui-improvements/enable", json={"percentage": 10})
            assert enabled.status_code == 200, enabled.text
            created = admin.post(
                "/admin/v1/flags",
                json={
                    "key": "banner",
                    "enabled": True,
                    "percentage": 100,
                    "variants": {"on": HOSTILE, "off": ""},
                },
            )
            assert created.status_code == 201, created.text
        params = {"FLAGPORT_URL": f"unix://{server.uds}", "FLAGPORT_APP_DIR": str(work / "app")}
        script = str(BRIDGE / "tests" / "fpm" / "laravel.php")
        with fastcgi_gateway(pool.socket, script, params) as base:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            inside, outside = user_id(True), user_id(False)
            page.goto(f"{base}/?user={inside}")
            assert page.evaluate(READ) is True
            assert page.evaluate("() => window.features['ui-improvements']._value") is True
            assert page.text_content("#dropdown").strip() == "new-dropdown"
            # The hostile value is data: no second script ran, the page after it rendered.
            assert page.evaluate("() => window.features.banner") == HOSTILE
            assert page.evaluate("() => window.pwned") is None
            assert page.text_content("#after-script") == "rendered after the script"
            assert page.evaluate("() => document.scripts.length") == 1

            page.goto(f"{base}/?user={outside}")
            assert page.evaluate(READ) is False
            assert page.text_content("#dropdown").strip() == "old-dropdown"

            disable = subprocess.run(
                [flags_executable(), "--url", f"unix://{server.uds}", "disable", "ui-improvements"],
                env={**os.environ, "FLAGPORT_ADMIN_TOKEN": server.admin_token},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert disable.returncode == 0, disable.stdout + disable.stderr
            page.goto(f"{base}/?user={inside}")
            assert page.evaluate(READ) is False
            assert page.text_content("#dropdown").strip() == "old-dropdown"
            assert errors == []
    assert "Fatal" not in pool.php_errors(), pool.php_errors()
