"""CLI budget (issue 5): ``flags disable KEY``, the whole process (the venv's ``flags``,
propagation wait included), against a local server.

Budget: median <= 300 ms against a 1-worker server, and <= 2x a baseline process
``python -c "import httpx; httpx.post(...)"`` that sends the same single request (no wait).
Runs are interleaved (baseline, flags, baseline, ...) and compared by medians; 2 workers are
reported too. Under ``--benchmark-disable`` (``make test``) each runs once and only
correctness is asserted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ADMIN_TOKEN, PORTAL_FLAGS, RunningServer, running_server
from tests.support.server import flags_executable as flags_path

KEY = "ui-improvements"
ROUNDS = 15


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp(f"bench-cli-{request.param}")
    with running_server(workdir, seed=PORTAL_FLAGS, workers=request.param) as server:
        yield server


def _env(server: RunningServer) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    environment.update(FLAGPORT_URL=server.url, FLAGPORT_TOKEN=ADMIN_TOKEN)
    return environment


def _time(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    assert completed.returncode == 0, completed.stderr
    return elapsed


def test_disable_latency(benchmark: Any, live: RunningServer, timed: bool) -> None:
    env = _env(live)
    workers = len(live.args) and int(live.args[live.args.index("--workers") + 1])
    command = [flags_path(), "disable", KEY, "--reason", "benchmark"]
    baseline = [
        sys.executable,
        "-c",
        "import httpx; r = httpx.post("
        f"'{live.url}/admin/v1/flags/{KEY}/disable', json={{}}, "
        f"headers={{'Authorization': 'Bearer {ADMIN_TOKEN}'}}); r.raise_for_status()",
    ]
    rounds = ROUNDS if timed else 1
    for _ in range(1 if timed else 0):  # warm the OS caches
        _time(command, env)
        _time(baseline, env)
    flags_times, baseline_times = [], []
    for _ in range(rounds):
        baseline_times.append(_time(baseline, env))
        flags_times.append(_time(command, env))
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    assert f"{KEY}: off" in output
    assert f"applied by {workers} worker(s)" in output
    benchmark.pedantic(_time, args=(command, env), rounds=3 if timed else 1, iterations=1)
    if not timed:
        return
    flags_median = statistics.median(flags_times) * 1000
    base_median = statistics.median(baseline_times) * 1000
    ratio = flags_median / base_median
    print(
        f"\n{workers} worker(s): flags disable median {flags_median:.0f} ms "
        f"(min {min(flags_times) * 1000:.0f}), baseline httpx.post median {base_median:.0f} ms "
        f"(min {min(baseline_times) * 1000:.0f}), ratio {ratio:.2f}x"
    )
    if workers == 1:
        assert flags_median <= 300, f"median {flags_median:.0f} ms > 300 ms"
        assert ratio <= 2.0, f"{ratio:.2f}x the httpx baseline"
