"""The PHP bridge's PHPUnit suites, run against real servers this harness starts.

PHPUnit gets the endpoints through ``FLAGPORT_TEST_*`` variables: a server over TCP and one on
a Unix socket (both with rollout flags at 10/25/50 %), a peer that accepts and never answers,
peers that answer garbage, and addresses where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.php.conftest import BRIDGE, Servers
from tests.php.fakes import bad_peer, dead_tcp_url
from tests.support.server import PORTAL_FLAGS, running_server
from tests.support.tools import require_path, require_tool


def run_phpunit(php: str, env: dict[str, str], tmp: Path, suite: str) -> ET.Element:
    phpunit = require_tool("phpunit")
    report = tmp / f"{suite}.xml"
    command = [
        php,
        "-d",
        "apc.enable_cli=1",
        "-d",
        "zend.assertions=1",
        phpunit,
        "-c",
        str(BRIDGE / "phpunit.xml"),
        "--testsuite",
        suite,
        "--log-junit",
        str(report),
    ]
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"phpunit {suite} failed:\n{result.stdout}\n{result.stderr}"
    root = ET.parse(report).getroot()
    return root


def skipped_cases(root: ET.Element) -> list[str]:
    return [
        case.get("name", "?") for case in root.iter("testcase") if case.find("skipped") is not None
    ]


def test_unit_suite(php: str, tmp_path: Path) -> None:
    root = run_phpunit(php, {}, tmp_path, "unit")
    assert int(root[0].get("tests", "0")) >= 25
    assert skipped_cases(root) == []


def test_live_suite(php: str, servers: Servers, short_tmp: Path) -> None:
    with (
        bad_peer("hang") as hung,
        bad_peer("garbage", short_tmp / "garbage.sock") as garbage,
        bad_peer("garbage-http") as garbage_http,
    ):
        env = {
            "FLAGPORT_TEST_URL": servers.tcp.url,
            "FLAGPORT_TEST_UDS_URL": servers.uds_url,
            "FLAGPORT_TEST_HUNG_URL": hung.url,
            "FLAGPORT_TEST_GARBAGE_URL": garbage.url,
            "FLAGPORT_TEST_GARBAGE_HTTP_URL": garbage_http.url,
            "FLAGPORT_TEST_DEAD_URL": dead_tcp_url(),
            "FLAGPORT_TEST_DEAD_UDS_URL": f"unix://{short_tmp / 'nobody-listens.sock'}",
        }
        root = run_phpunit(php, env, short_tmp, "live")
    assert skipped_cases(root) == [], "live tests must not skip when the harness runs them"


def test_laravel_suite(php: str, tmp_path: Path) -> None:
    """Laravel from Debian's php-laravel-framework against its own server (the artisan
    commands change flags) on a Unix socket, as the runbook's sidecar would run."""
    require_path(Path("/usr/share/php/Illuminate/autoload.php"), "php-laravel-framework")
    # Two workers: the artisan commands wait until both serve a change.
    with running_server(tmp_path / "laravel", seed=PORTAL_FLAGS, uds=True, workers=2) as server:
        env = {
            "FLAGPORT_TEST_LARAVEL_URL": f"unix://{server.uds}",
            "FLAGPORT_TEST_ADMIN_TOKEN": server.admin_token,
            "FLAGPORT_TEST_DEAD_URL": dead_tcp_url(),
        }
        root = run_phpunit(php, env, tmp_path, "laravel")
    assert skipped_cases(root) == []
    assert int(root[0].get("tests", "0")) >= 6
