"""PHP bridge budgets (issues 7 and 16): time the bridge adds to a PHP-FPM request.

Requests go to Debian's php8.2-fpm over FastCGI (keep-alive, one worker) for the same page
with and without the bridge (``php-bridge/tests/fpm/bridge.php``, ``mode=bare``). The bridge
asks 50 flags (one OFREP bulk call, then 50 ``isEnabled``) for a new user each request, so
every call is a full answer plus an APCu write (no 304 shortcut). Variants, interleaved in
several rounds: Unix socket over the bridge's persistent connection (the default), the same
socket through curl (the baseline of the same run: one new connection per FPM request), TCP
(curl), and the circuit open (server down). Added time is reported two ways: the time
measured inside PHP around the bridge (p50/p99) and the difference of the end-to-end medians
against the bare page.

``make test`` (``--benchmark-disable``): a smoke run of a few requests, correctness only.
``make bench``: the full run; figures appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._load import append_to_results
from tests.php.fcgi import FastCGIClient
from tests.php.fpm import FpmPool, fpm_pool
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server
from tests.support.tools import REPO_ROOT, require_tool

PAGE = str(REPO_ROOT / "php-bridge" / "tests" / "fpm" / "bridge.php")
HEADING = "## PHP bridge (issue 7)"
#: Budgets (p50, p99) in ms: issue 16 for the Unix socket, issue 7 for the open circuit.
BUDGETS: dict[str, tuple[float | None, float | None]] = {
    "uds": (0.4, 1.0),
    "uds-curl": (None, None),
    "tcp": (None, None),
    "open": (0.05, None),
}
EXTRA_FLAGS = 40  # + the portal's 10 = 50 flags


def add_flags(server: RunningServer) -> list[str]:
    keys = []
    with server.admin(timeout=10) as admin:
        for n in range(EXTRA_FLAGS):
            key = f"bench-{n:02d}"
            body = {"key": key, "enabled": True, "percentage": (n * 7) % 100}
            assert admin.post("/admin/v1/flags", json=body).status_code == 201
            keys.append(key)
        listed = admin.get("/admin/v1/flags").json()
    flags = listed["flags"] if isinstance(listed, dict) else listed
    return sorted(flag["key"] for flag in flags)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_tool("php")
    root = tmp_path_factory.mktemp("php-bench")
    fpm_dir = Path(tempfile.mkdtemp(prefix="fp-bench-", dir="/tmp"))
    try:
        with (
            running_server(root / "uds", seed=PORTAL_FLAGS, uds=True) as uds,
            running_server(root / "tcp", seed=PORTAL_FLAGS) as tcp,
            fpm_pool(fpm_dir / "fpm", children=1) as pool,
        ):
            keys = add_flags(uds)
            assert add_flags(tcp) == keys
            assert len(keys) == 50
            yield {
                "pool": pool,
                "keys": ",".join(keys),
                "urls": {
                    "uds": f"unix://{uds.uds}",
                    "tcp": tcp.url,
                    "open": f"unix://{fpm_dir}/nobody.sock",
                },
            }
    finally:
        shutil.rmtree(fpm_dir, ignore_errors=True)


class Runner:
    def __init__(self, pool: FpmPool, keys: str, urls: dict[str, str]) -> None:
        self.client = FastCGIClient(pool.socket)
        self.keys = keys
        self.urls = urls
        self.user = 0

    def request(self, variant: str, user: str | None = None) -> tuple[float, float, dict[str, Any]]:
        """One FPM request: (end-to-end ms, bridge ms inside PHP, answer); the answer's
        ``cpu_us`` is the worker's CPU time in the bridge."""
        self.user += 1
        query = {"user": user or f"bench-{self.user}", "company": "7", "keys": self.keys}
        if variant == "bare":
            query["mode"] = "bare"
        else:
            # A slow answer counts in the p99 instead of opening the circuit (threshold 1).
            query |= {"prefix": "bench", "threshold": "1", "cooldown": "600", "timeout_ms": "2000"}
        if variant == "uds-curl":
            query["transport"] = "curl"
        params = {"FLAGPORT_URL": self.urls.get(variant.removesuffix("-curl"), self.urls["uds"])}
        started = time.perf_counter()
        response = self.client.get(PAGE, query, params)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status == 200, response.text()
        answer = json.loads(response.body)
        return elapsed, answer.get("elapsed_us", 0) / 1000, answer


def run_php_script(benchmark: Any, script: str, *args: str) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` in the PHP CLI with the bridge's autoloader and ``args``,
    once, under the benchmark fixture; the JSON it prints."""
    command = [
        require_tool("php"),
        str(REPO_ROOT / "benchmarks" / script),
        str(REPO_ROOT / "php-bridge" / "autoload.php"),
        *args,
    ]

    def run() -> dict[str, Any]:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    return benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-any-return]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_bridge_cost_per_fpm_request(setup: dict[str, Any], request: Any, benchmark: Any) -> None:
    smoke = bool(request.config.getoption("benchmark_disable"))
    runner = Runner(setup["pool"], setup["keys"], setup["urls"])
    variants = ["bare", "uds", "uds-curl", "tcp", "open"]

    # Correctness first: 50 answers from the server, the same over every transport (the
    # persistent socket's second request reuses its connection), and the circuit opens on a
    # dead socket.
    seen = []
    for variant in ("uds", "uds", "uds-curl", "tcp"):
        _, _, answer = runner.request(variant, user="check")
        assert len(answer["values"]) == 50
        assert answer["status"]["source"] in ("server", "not-modified"), answer
        seen.append(answer["values"])
    assert all(values == seen[0] for values in seen), seen
    _, _, answer = runner.request("open")  # the one failing call that opens the circuit
    _, _, answer = runner.request("open")
    assert answer["status"] == {**answer["status"], "circuit": "open", "calls": 0}

    benchmark.pedantic(lambda: runner.request("uds"), rounds=3 if smoke else 200, iterations=1)

    rounds, per_round = (1, 5) if smoke else (7, 200)
    wall: dict[str, list[float]] = {v: [] for v in variants}
    inside: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    round_medians: dict[str, list[float]] = {v: [] for v in variants}
    failed: dict[str, list[str]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            this_round = []
            for _ in range(per_round):
                total, bridge, answer = runner.request(variant)
                if variant not in ("bare", "open") and answer["status"]["source"] != "server":
                    failed[variant].append(str(answer["status"]["error"]))
                this_round.append(total)
                inside[variant].append(bridge)
                cpu[variant].append(answer.get("cpu_us", 0) / 1000)
            wall[variant] += this_round
            round_medians[variant].append(statistics.median(this_round))
    runner.client.close()
    # Measuring the fail-safe path instead of the server's answers would flatter the bridge.
    assert not any(failed.values()), failed
    if smoke:
        return

    bare = statistics.median(round_medians["bare"])
    rows = []
    figures: dict[str, dict[str, float]] = {}
    for variant in ("uds", "uds-curl", "tcp", "open"):
        added = statistics.median(round_medians[variant]) - bare
        figures[variant] = {
            "p50": statistics.median(inside[variant]),
            "p99": quantile(inside[variant], 0.99),
            "wall_added": added,
            "cpu": statistics.median(cpu[variant]),
        }
    labels = {
        "uds": "bulk of 50 flags over a Unix socket (persistent connection)",
        "uds-curl": "bulk of 50 flags over a Unix socket, curl (new connection)",
        "tcp": "bulk of 50 flags over TCP (loopback, curl)",
        "open": "circuit open (server down)",
    }
    for variant, f in figures.items():
        p50_budget, p99_budget = BUDGETS[variant]
        status = []
        if p50_budget is not None:
            status.append("p50 met" if f["p50"] <= p50_budget else "p50 **missed**")
        if p99_budget is not None:
            status.append("p99 met" if f["p99"] <= p99_budget else "p99 **missed**")
        budget = " / ".join(
            f"{name} <= {value} ms"
            for name, value in (("p50", p50_budget), ("p99", p99_budget))
            if value is not None
        )
        rows.append(
            f"| {labels[variant]} | {f['p50'] * 1000:.0f} µs | {f['p99'] * 1000:.0f} µs "
            f"| {f['wall_added'] * 1000:+.0f} µs | {f['cpu'] * 1000:.0f} µs | {budget or 'report'} "
            f"| {', '.join(status) or '-'} |"
        )
    ratio = figures["uds"]["p50"] / figures["uds-curl"]["p50"]
    report = "\n".join(
        [
            "",
            f"### Run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            "- Command: `uv run --frozen pytest benchmarks/test_php_bridge.py --benchmark-only "
            "-p no:randomly`",
            f"- Method: {rounds} interleaved rounds x {per_round} requests per variant, one "
            "php8.2-fpm worker (OPcache, APCu), keep-alive FastCGI from Python, a new user per "
            "request (full bulk answer + APCu write, no 304), 50 flags.",
            f"- Baseline: the same page without the bridge, end-to-end median {bare * 1000:.0f} "
            "µs per request (FastCGI round trip included).",
            f"- Persistent socket vs curl on the same socket, in-PHP p50: {ratio:.2f}x "
            f"({figures['uds']['p50'] * 1000:.0f} vs {figures['uds-curl']['p50'] * 1000:.0f} µs); "
            "PHP CPU p50 is the FPM worker's own CPU time in the bridge (getrusage), without "
            "the wait for the server.",
            "",
            "| variant | added p50 (in PHP) | added p99 (in PHP) | end-to-end median "
            "vs bare | PHP CPU p50 | budget | status |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(report)
    append_to_results(
        HEADING,
        "Added time per PHP-FPM request (docs/spec.md section 11, issue 7 budgets: Unix "
        "socket p50 <= 1 ms, p99 <= 2 ms; circuit open p50 <= 0.05 ms). Command and "
        "method in each run below; `benchmarks/test_php_bridge.py` writes them.",
        report,
    )
    # Loose regression guards (shared, noisy machines): 3x the issue-7 budgets, and the persistent
    # connection not clearly slower than curl in the same run (medians of a noisy server; the
    # paired test below is the sharper check).
    assert figures["uds"]["p50"] <= 3.0, figures
    assert ratio <= 1.25, figures
    assert figures["open"]["p50"] <= 0.15, figures


def test_transports_paired_on_one_socket(
    setup: dict[str, Any], request: Any, benchmark: Any
) -> None:
    """The persistent connection against curl's new connection per FPM request, the same
    bulk call sent both ways in alternating order (``benchmarks/php_transport_ab.php``): the
    paired difference survives a noisy machine better than two medians do."""
    smoke = bool(request.config.getoption("benchmark_disable"))
    pairs = 10 if smoke else 3000
    socket_path = setup["urls"]["uds"].removeprefix("unix://")
    figures = run_php_script(benchmark, "php_transport_ab.php", socket_path, str(pairs))
    assert figures["pairs"] == pairs
    if smoke:
        return
    line = (
        f"\n### Paired transport A/B, run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
        " UTC\n\n"
        "- Command: `uv run --frozen pytest benchmarks/test_php_bridge.py --benchmark-only "
        "-p no:randomly` (`benchmarks/php_transport_ab.php`, PHP CLI)\n"
        f"- {pairs} pairs, a new user each: persistent socket p50 {figures['socket_p50']:.0f} µs "
        f"(p90 {figures['socket_p90']:.0f}), curl with a new connection p50 "
        f"{figures['curl_p50']:.0f} µs (p90 {figures['curl_p90']:.0f}); paired difference p50 "
        f"{figures['saved_p50']:.0f} µs saved per request by the persistent connection.\n"
    )
    print(line)
    append_to_results(HEADING, "", line)
    # The persistent connection must not be slower than a new one (loose: noisy machines).
    assert figures["saved_p50"] > -50, figures


def _answers(path: Path) -> bool:
    """Whether an HTTP server answers on the Unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(1)
            connection.connect(str(path))
            connection.sendall(b"GET /bare HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return connection.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture(scope="module")
def echo_socket() -> Iterator[str]:
    """The framework-free ASGI echo (``benchmarks/bare_app.py:raw_app``, frozen) served by
    granian on a Unix socket, as ``flags serve --uds`` serves Flagport: one worker."""
    directory = Path(tempfile.mkdtemp(prefix="fp-echo-", dir="/tmp"))
    path = directory / "echo.sock"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--uds",
            str(path),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "benchmarks.bare_app:raw_app",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.monotonic() + 20
        while not _answers(path):
            assert process.poll() is None, "the echo did not start"
            assert time.monotonic() < deadline, "the echo did not start"
            time.sleep(0.05)
        yield str(path)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def test_the_bridge_wait_against_the_runner_floor(
    setup: dict[str, Any], echo_socket: str, request: Any, benchmark: Any
) -> None:
    """What part of the bridge's wait is Flagport's: the same persistent transport sends each
    request to Flagport's bulk and to the framework-free echo on the same runner, paired
    (``benchmarks/php_floor.php``). The echo's round trip is the floor any app served by
    granian puts under the bridge; the paired difference is Flagport's answer."""
    smoke = bool(request.config.getoption("benchmark_disable"))
    pairs = 10 if smoke else 3000
    flagport_socket = setup["urls"]["uds"].removeprefix("unix://")
    figures = run_php_script(benchmark, "php_floor.php", flagport_socket, echo_socket, str(pairs))
    assert figures["pairs"] == pairs
    assert figures["flags"] == 50
    if smoke:
        return
    line = (
        f"\n### The runner's floor under the bridge, run of "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n\n"
        "- Command: `uv run --frozen pytest benchmarks/test_php_bridge.py --benchmark-only "
        "-p no:randomly` (`benchmarks/php_floor.php`, PHP CLI, `SocketTransport`)\n"
        f"- {pairs} pairs, a new user each: Flagport's bulk of 50 flags p50 "
        f"{figures['flagport_p50']:.0f} µs (p90 {figures['flagport_p90']:.0f}); the "
        f"framework-free ASGI echo on the same runner p50 {figures['echo_p50']:.0f} µs (p90 "
        f"{figures['echo_p90']:.0f}); paired difference p50 {figures['added_p50']:.0f} µs "
        f"(Flagport's answer); decoding the {figures['answer_bytes']} byte answer in PHP p50 "
        f"{figures['decode_p50']:.0f} µs.\n"
    )
    print(line)
    append_to_results(HEADING, "", line)
