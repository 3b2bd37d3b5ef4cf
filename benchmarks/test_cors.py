"""What CORS costs the evaluation surface (issue 15), against the same server without it.

Two servers on the portal's flags, one started with ``--cors-origin`` and one without, each
one worker pinned to core 0 (one measured at a time), ``wrk -c64`` on core 1, interleaved
rounds, medians. Every request carries the page's ``Origin`` and a new user (the ``new`` unit
mix of benchmarks/_load.py). Budgets:

- OFREP single and bulk POST with CORS >= 0.97x without (the same requests);
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) costs no more than
  ``GET /healthz`` on the same server: preflight req/s >= healthz req/s.

``make test`` (``--benchmark-disable``): one 1-second round of each, correctness only.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks._load import WrkResult, pin_process_group, unit_script, wrk
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server

ORIGIN = "https://portal.example"
SINGLE_FLAG = "ui-improvements.dropdown-fixes"


def preflight_script(directory: Path) -> Path:
    path = directory / "preflight.lua"
    path.write_text(
        "wrk.method = 'OPTIONS'\n"
        f"wrk.headers['Origin'] = '{ORIGIN}'\n"
        "wrk.headers['Access-Control-Request-Method'] = 'POST'\n"
        "wrk.headers['Access-Control-Request-Headers'] = 'content-type'\n"
    )
    return path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    root = tmp_path_factory.mktemp("cors-bench")
    with (
        running_server(root / "plain", seed=PORTAL_FLAGS) as plain,
        running_server(root / "cors", seed=PORTAL_FLAGS, extra=["--cors-origin", ORIGIN]) as cors,
    ):
        for server in (plain, cors):
            pin_process_group(server.process.pid, 0)
        yield {"plain": plain, "cors": cors}


def test_cors_costs_the_evaluation_surface_nothing_visible(
    servers: dict[str, RunningServer], request: Any, benchmark: Any, tmp_path: Path
) -> None:
    timed = not request.config.getoption("benchmark_disable")
    plain, cors = servers["plain"], servers["cors"]
    # Correctness first: the CORS server marks answers, the plain one does not.
    headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
    body = b'{"context":{"targetingKey":"user-1"}}'
    marked = httpx.post(f"{cors.url}/ofrep/v1/evaluate/flags", content=body, headers=headers)
    assert marked.headers["access-control-allow-origin"] == ORIGIN
    unmarked = httpx.post(f"{plain.url}/ofrep/v1/evaluate/flags", content=body, headers=headers)
    assert "access-control-allow-origin" not in unmarked.headers
    assert marked.json() == unmarked.json()

    single = unit_script(tmp_path, "new", "new", headers={"Origin": ORIGIN})
    bulk = single
    targets = {
        "single, no CORS": (f"{plain.url}/ofrep/v1/evaluate/flags/{SINGLE_FLAG}", single),
        "single, CORS": (f"{cors.url}/ofrep/v1/evaluate/flags/{SINGLE_FLAG}", single),
        "bulk, no CORS": (f"{plain.url}/ofrep/v1/evaluate/flags", bulk),
        "bulk, CORS": (f"{cors.url}/ofrep/v1/evaluate/flags", bulk),
        "preflight": (f"{cors.url}/ofrep/v1/evaluate/flags", preflight_script(tmp_path)),
        "GET /healthz": (f"{cors.url}/healthz", None),
    }
    rounds, seconds = (5, 5) if timed else (1, 1)
    results: dict[str, list[WrkResult]] = {name: [] for name in targets}

    def run() -> None:
        names = list(targets)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                url, script = targets[name]
                result = wrk(url, seconds, script)
                assert result.non_2xx == 0, f"{name}: {result.non_2xx} non-2xx answers"
                results[name].append(result)

    benchmark.pedantic(run, rounds=1, iterations=1)
    rps = {name: statistics.median(r.rps for r in runs) for name, runs in results.items()}
    ratios = {
        "single CORS / no CORS": rps["single, CORS"] / rps["single, no CORS"],
        "bulk CORS / no CORS": rps["bulk, CORS"] / rps["bulk, no CORS"],
        "preflight / healthz": rps["preflight"] / rps["GET /healthz"],
    }
    print(f"\n{rounds} interleaved rounds of {seconds} s, 1 worker on core 0, wrk -c64 on core 1")
    for name, value in rps.items():
        print(f"  {name:18} {value:8.0f} req/s")
    for name, ratio in ratios.items():
        print(f"  {name:24} {ratio:.3f}x")
    benchmark.extra_info.update(rps=rps, ratios=ratios)
    if timed:
        assert ratios["single CORS / no CORS"] >= 0.97, ratios
        assert ratios["bulk CORS / no CORS"] >= 0.97, ratios
        assert ratios["preflight / healthz"] >= 1.0, ratios
