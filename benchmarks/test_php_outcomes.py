"""PHP outcome reporting budget (issue 17, "Speed"): what ``Flagport\\Laravel\\ReportOutcomes``
adds to a PHP-FPM request, the batch post amortised.

Debian's php8.2-fpm (two workers) runs the Laravel portal page
(``php-bridge/tests/fpm/laravel.php``, ``/portal``: a Blade page reading only
``ui-improvements.dropdown-fixes``) against a server on a Unix socket with a plan running on
``ui-improvements``, so every request reads a plan cohort. The same page with and without the
middleware (``FLAGPORT_OUTCOMES``), interleaved request by request, in several rounds, over
one keep-alive FastCGI connection (one worker):

- client wait: from sending the request to the end of the answer (the middleware's work is
  in ``terminate()``, after ``fastcgi_finish_request``); budget +0.05 ms (median vs median);
- FPM busy time: the worker's time in the script, ``terminate()`` and the post included
  (measured in PHP, read by ``busy.php`` from the other worker once the request has ended,
  before the next one is sent); budget +0.1 ms p50; the mean is reported too (it carries
  the one request a second that posts the pool's batch).

``make test`` (``--benchmark-disable``): a smoke run of a few requests, correctness only.
Timed: ``uv run --frozen pytest benchmarks/test_php_outcomes.py --benchmark-only
-p no:randomly``; figures appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._load import append_to_results
from tests.php.fcgi import FastCGIClient
from tests.php.fpm import FpmPool, fpm_pool
from tests.support.server import PORTAL_FLAGS, running_server, wait_until
from tests.support.tools import REPO_ROOT, require_path, require_tool

FPM_DIR = REPO_ROOT / "php-bridge" / "tests" / "fpm"
APP = str(FPM_DIR / "laravel.php")
BUSY = str(FPM_DIR / "busy.php")
HEADING = "## PHP outcome reporting (issue 17)"
#: Budgets (ms): client wait added (medians), FPM busy time added (p50).
WAIT_BUDGET = 0.05
BUSY_BUDGET = 0.1
VARIANTS = ("bare", "outcomes")
USERS = 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_tool("php-fpm8.2")
    require_path(Path("/usr/share/php/Illuminate/autoload.php"), "php-laravel-framework")
    root = tmp_path_factory.mktemp("php-outcomes-bench")
    work = Path(tempfile.mkdtemp(prefix="fp-ocb-", dir="/tmp"))
    try:
        # A Unix socket, as the portal's sidecar; --driver: the plan must run.
        with (
            running_server(root / "uds", seed=PORTAL_FLAGS, uds=True, extra=["--driver"]) as server,
            fpm_pool(work / "fpm", children=2) as pool,
        ):
            with server.admin(timeout=10) as admin:
                started = admin.post(
                    "/admin/v1/rollouts/",
                    json={
                        "key": "ui-improvements",
                        "steps": "50,100",
                        "hold": "1h",
                        "guards": ["error_rate > 99% over 1m"],
                    },
                )
                assert started.status_code == 201, started.text

                def running() -> bool:
                    view = admin.get("/admin/v1/rollouts/ui-improvements").json()
                    return bool(view["status"] == "running")

                assert wait_until(running, timeout=10.0)
            yield {"server": server, "pool": pool, "app_dir": work / "app"}
            errors = pool.php_errors()
            assert "Fatal" not in errors, errors[-3000:]
            assert "Warning" not in errors, errors[-3000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Runner:
    """Pages over one keep-alive connection (one worker), the busy-time probe over another
    (the other worker)."""

    def __init__(self, pool: FpmPool, url: str, app_dir: Path) -> None:
        self.pages = FastCGIClient(pool.socket)
        self.probe = FastCGIClient(pool.socket)
        self.url = url
        self.app_dir = app_dir
        self.seq = 0

    def close(self) -> None:
        self.pages.close()
        self.probe.close()

    def request(self, variant: str) -> tuple[float, float, str]:
        """One page: (client wait ms, FPM busy ms, body)."""
        self.seq += 1
        seq = str(self.seq)
        params = {
            "FLAGPORT_URL": self.url,
            "FLAGPORT_APP_DIR": str(self.app_dir),
            "FLAGPORT_OUTCOMES": "1" if variant == "outcomes" else "",
            "FLAGPORT_BENCH_SEQ": seq,
        }
        query = {"user": str(1 + self.seq % USERS)}
        started = time.perf_counter()
        response = self.pages.request("GET", APP, query, params=params, uri="/portal")
        waited = (time.perf_counter() - started) * 1000
        assert response.status == 200, response.text()[:500]
        # The worker may still be in terminate(): wait for its figure before the next page.
        deadline = time.monotonic() + 5
        while True:
            busy = json.loads(self.probe.get(BUSY).body)
            if busy is not None and busy[0] == seq:
                return waited, busy[1] / 1e6, response.text()
            assert time.monotonic() < deadline, ("no busy time for", seq, busy)
            time.sleep(0.0002)


def test_outcome_middleware_cost_per_fpm_request(
    setup: dict[str, Any], request: Any, benchmark: Any
) -> None:
    smoke = bool(request.config.getoption("benchmark_disable"))
    server = setup["server"]
    runner = Runner(setup["pool"], f"unix://{server.uds}", setup["app_dir"])
    try:
        # Correctness: both variants render the page for a user of either cohort.
        for variant in VARIANTS:
            for _ in range(3):
                _, spent, body = runner.request(variant)
                assert "dropdown" in body
                assert spent > 0
        benchmark.pedantic(
            lambda: runner.request("outcomes"), rounds=3 if smoke else 100, iterations=1
        )
        rounds, per_round = (1, 5) if smoke else (7, 300)
        wait: dict[str, list[float]] = {v: [] for v in VARIANTS}
        busy: dict[str, list[float]] = {v: [] for v in VARIANTS}
        round_wait: dict[str, list[float]] = {v: [] for v in VARIANTS}
        round_busy: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for number in range(rounds):
            this_wait: dict[str, list[float]] = {v: [] for v in VARIANTS}
            this_busy: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for index in range(per_round):
                # Interleaved, alternating which goes first.
                order = VARIANTS if (index + number) % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    waited, spent, _ = runner.request(variant)
                    this_wait[variant].append(waited)
                    this_busy[variant].append(spent)
            for variant in VARIANTS:
                wait[variant] += this_wait[variant]
                busy[variant] += this_busy[variant]
                round_wait[variant].append(statistics.median(this_wait[variant]))
                round_busy[variant].append(statistics.median(this_busy[variant]))
    finally:
        runner.close()
    if smoke:
        return

    wait_added = statistics.median(round_wait["outcomes"]) - statistics.median(round_wait["bare"])
    busy_added = statistics.median(round_busy["outcomes"]) - statistics.median(round_busy["bare"])
    mean_added = statistics.fmean(busy["outcomes"]) - statistics.fmean(busy["bare"])

    def status(added: float, budget: float) -> str:
        return "met" if added <= budget else "**missed**"

    rows = [
        f"| client wait (median) | {statistics.median(wait['bare']) * 1000:.0f} µs "
        f"| {statistics.median(wait['outcomes']) * 1000:.0f} µs | {wait_added * 1000:+.1f} µs "
        f"| <= {WAIT_BUDGET * 1000:.0f} µs | {status(wait_added, WAIT_BUDGET)} |",
        f"| FPM busy time (p50) | {statistics.median(busy['bare']) * 1000:.0f} µs "
        f"| {statistics.median(busy['outcomes']) * 1000:.0f} µs | {busy_added * 1000:+.1f} µs "
        f"| <= {BUSY_BUDGET * 1000:.0f} µs | {status(busy_added, BUSY_BUDGET)} |",
        f"| FPM busy time (mean, posts included) | {statistics.fmean(busy['bare']) * 1000:.0f} µs "
        f"| {statistics.fmean(busy['outcomes']) * 1000:.0f} µs | {mean_added * 1000:+.1f} µs "
        "| report | - |",
    ]
    report = "\n".join(
        [
            "",
            f"### Run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            "",
            "- Command: `uv run --frozen pytest benchmarks/test_php_outcomes.py --benchmark-only "
            "-p no:randomly`",
            f"- Method: {rounds} rounds x {per_round} requests per variant, interleaved request "
            "by request; the Laravel portal page (Blade, one plan flag read through a gated "
            "child) on one php8.2-fpm worker (OPcache, APCu) over keep-alive FastCGI; the "
            "server on a Unix socket with a plan running. Differences are of the medians of "
            "the rounds' medians. Busy time is measured in PHP from the script's start to "
            "after terminate() (the post included), read by another worker before the next "
            "request.",
            "",
            "| measure | without | with ReportOutcomes | added | budget | status |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(report)
    append_to_results(
        HEADING,
        "What the Laravel outcome middleware adds per PHP-FPM request (issue 17: client "
        "wait <= 0.05 ms, FPM busy time <= 0.1 ms p50, the batch post amortised). "
        "`benchmarks/test_php_outcomes.py` writes each run.",
        report,
    )
    # Loose regression guards (shared, noisy machines): 3x the budgets.
    assert wait_added <= 3 * WAIT_BUDGET, rows
    assert busy_added <= 3 * BUSY_BUDGET, rows
