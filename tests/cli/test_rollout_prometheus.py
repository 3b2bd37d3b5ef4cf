"""``promql(...)`` guards against Debian's real ``prometheus`` (no stand-in), scraping a
tiny target served from this module every second, with a live server whose driver runs on
real time (docs/spec.md, "Guarded rollouts", Prometheus). One Prometheus and one server
for the module."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.cli.conftest import Flags, plan_view
from tests.support.server import (
    PORTAL_FLAGS,
    RunningServer,
    free_port,
    running_server,
    wait_until,
)
from tests.support.tools import require_tool

GAUGE = "demo_error_ratio"


class Target(http.server.BaseHTTPRequestHandler):
    """A scrape target: ``demo_error_ratio{flag=...,variant=...}``, set by the test."""

    values: ClassVar[dict[tuple[str, str], float]] = {}

    def do_GET(self) -> None:
        lines = [f"# TYPE {GAUGE} gauge"]
        lines += [
            f'{GAUGE}{{flag="{flag}",variant="{variant}"}} {value}'
            for (flag, variant), value in sorted(self.values.items())
        ]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def instant(prometheus: str, query: str) -> list[Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as answer:
        result: list[Any] = json.load(answer)["data"]["result"]
    return result


@pytest.fixture(scope="module")
def prometheus_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus and its target, started (not waited for: the server starts meanwhile)."""
    binary = require_tool("prometheus")
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: target\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target.server_address[1]}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    Target.values[("up-check", "x")] = 1.0
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        target.shutdown()
        target.server_close()


def _answers(url: str, query: str) -> bool:
    try:
        return bool(instant(url, query))
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, prometheus_started: str
) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("server"), seed=PORTAL_FLAGS, workers=1) as live:
        yield live


@pytest.fixture(scope="module")
def prometheus(server: RunningServer, prometheus_started: str) -> str:
    """Prometheus once it has scraped its target."""
    assert wait_until(lambda: _answers(prometheus_started, GAUGE), timeout=15, interval=0.1)
    return prometheus_started


def no_plan(flags: Flags, key: str) -> bool:
    with flags.server.admin() as admin:
        return admin.get(f"/admin/v1/rollouts/{key}").status_code == 404


GUARD = f'promql(max({GAUGE}{{flag="$flag",variant="$variant"}})) > 0.05'


def test_a_promql_guard_passes_then_breaches_and_the_plan_rolls_back(
    flags: Flags, prometheus: str
) -> None:
    key = "ui-improvements"
    with flags.server.admin() as admin:
        variant = admin.get(f"/admin/v1/flags/{key}").json()["on_variant"]
    Target.values[(key, variant)] = 0.01
    assert wait_until(lambda: _answers(prometheus, f'{GAUGE}{{flag="{key}"}}'), 10, 0.2)
    flags.ok(
        "rollout", "start", key, "--steps", "10,25,50,75,100", "--hold", "3s",
        "--guard", GUARD, "--prometheus", prometheus + "/",
    )  # fmt: skip
    # The guard passes (Prometheus answers 0.01): the plan advances past its first step.
    assert wait_until(lambda: plan_view(flags, key)["step"] >= 2, timeout=10, interval=0.2)
    passing = plan_view(flags, key)
    assert passing["plan"]["spec"]["prometheus_url"] == prometheus
    assert passing["guards"][0]["verdict"] == "pass", passing["guards"]
    assert passing["guards"][0]["evidence"]["value"] == pytest.approx(0.01)
    shown = flags.ok("rollout", "status", key).out
    assert "0.01" in shown
    assert "pass" in shown
    # The target turns bad: the driver rolls back by itself (the kill switch).
    Target.values[(key, variant)] = 0.5
    assert wait_until(lambda: plan_view(flags, key)["status"] == "paused", timeout=10, interval=0.2)
    after = plan_view(flags, key)
    assert after["percentage"] is None
    assert after["plan"]["actor"] == "driver"
    with flags.server.admin() as admin:
        assert not admin.get(f"/admin/v1/flags/{key}").json()["enabled"]
        entries = admin.get("/admin/v1/audit", params={"key": key}).json()["entries"]
    rollback = entries[0]
    assert rollback["action"] == "plan-rollback"
    assert rollback["evidence"]["rule"] == GUARD
    assert rollback["evidence"]["value"] == pytest.approx(0.5)


def test_no_data_is_not_enough_data_with_the_reason(flags: Flags, prometheus: str) -> None:
    key = "enhanced-mobile-nav"
    guard = 'promql(sum(no_such_metric_total{flag="$flag"})) > 1'
    flags.ok("rollout", "start", key, "--hold", "1s", "--guard", guard, "--prometheus", prometheus)

    def extended() -> bool:
        found = plan_view(flags, key)
        return (
            found["decision"] == "extend-hold"
            and found["guards"][0]["evidence"].get("note") == "no data"
        )

    # Past its hold, the plan stays at its first step: no data is not a pass.
    assert wait_until(extended, timeout=10, interval=0.2)
    found = plan_view(flags, key)
    assert found["guards"][0]["verdict"] == "not enough data"
    assert found["step"] == 1
    assert "not enough data (no data)" in flags.ok("rollout", "status", key).out


def test_a_query_prometheus_rejects_is_refused_at_start_with_its_message(
    flags: Flags, prometheus: str
) -> None:
    key = "auth-improvements"
    bad = flags(
        "rollout", "start", key, "--guard", f"promql(rate({GAUGE})) > 1",
        "--prometheus", prometheus,
    )  # fmt: skip
    assert bad.code == 1, str(bad)
    assert "Prometheus refused the query (bad_data)" in bad.err, bad.err
    assert "range vector" in bad.err, bad.err  # Prometheus's own words
    unreachable = flags(
        "rollout", "start", key, "--guard", GUARD, "--prometheus", f"http://127.0.0.1:{free_port()}"
    )
    assert unreachable.code == 1, str(unreachable)
    assert "is unreachable" in unreachable.err, unreachable.err
    missing = flags("rollout", "start", key, "--guard", GUARD)
    assert missing.code == 2, str(missing)
    assert "needs a Prometheus URL (--prometheus)" in missing.err
    assert no_plan(flags, key)
