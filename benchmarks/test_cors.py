"""CORS budgets (issue 15), measured in the same run:

- OFREP throughput with ``--cors-origin`` configured >= 0.97x without, single and bulk-50
  requests, every request cross-origin (``Origin`` of an allowed page, so every answer gets
  the CORS headers) and from a new user (the ``new`` unit mix of benchmarks/_load.py): one
  worker each, pinned to core 0, a CORS server and a plain one loaded together by two ``wrk``
  on core 1 (as in test_stats.py). Two such pairs, started in ABBA order (the server started
  first is a little slower whatever its settings); a round's ratio is the geometric mean of
  the two pairs'; interleaved rounds, medians;
- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) costs no
  more than a ``GET /healthz`` on the same server: requests per second of each alone on the
  server, one after the other, alternating which goes first.

``make test`` (``--benchmark-disable``) runs tiny versions for correctness only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks._load import pin_process_group, unit_script, wrk
from benchmarks.test_server_throughput import SINGLE_FLAG, fifty_flag_document
from tests.support.server import RunningServer, start_server
from tests.support.tools import require_tool

ORIGIN = "https://portal.example"
#: The (CORS, plain) pairs measured together, the first started first in one, last in the
#: other.
PAIRS = (("cors", "plain"), ("cors-b", "plain-b"))
SHAPES = {
    "single": f"/ofrep/v1/evaluate/flags/{SINGLE_FLAG}",
    "bulk-50": "/ofrep/v1/evaluate/flags",
}


def _script(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_tool("wrk")
    workdir = tmp_path_factory.mktemp("cors-bench")
    seed = workdir / "fifty.yaml"
    seed.write_text(yaml.safe_dump(fifty_flag_document()))
    servers: dict[str, RunningServer] = {}
    cors = ["--cors-origin", ORIGIN]
    try:
        # Two pairs started in ABBA order: measured on one pair only, the server started
        # first was slower by 1-3 % whatever its settings (two plain servers: 0.951-1.020),
        # as wide as the budget; the geometric mean of the two pairs' ratios cancels it.
        for name, extra in (("cors", cors), ("plain", []), ("plain-b", []), ("cors-b", cors)):
            servers[name] = start_server(workdir / name, seed=seed, extra=extra)
            pin_process_group(servers[name].process.pid, 0)
        preflight = [
            "wrk.method = 'OPTIONS'",
            f"wrk.headers['Origin'] = '{ORIGIN}'",
            "wrk.headers['Access-Control-Request-Method'] = 'POST'",
            "wrk.headers['Access-Control-Request-Headers'] = 'content-type, authorization'",
        ]
        yield {
            "servers": servers,
            "post": unit_script(workdir, "post", "new", headers={"Origin": ORIGIN}),
            "preflight": _script(workdir, "preflight", preflight),
        }
    finally:
        for server in servers.values():
            server.stop()


def _together(runs: dict[str, tuple[str, Path | None]], seconds: float) -> dict[str, float]:
    with ThreadPoolExecutor(len(runs)) as pool:
        started = {
            name: pool.submit(wrk, url, seconds, script) for name, (url, script) in runs.items()
        }
        results = {name: run.result() for name, run in started.items()}
    for name, result in results.items():
        assert result.non_2xx == 0, name
    return {name: result.rps for name, result in results.items()}


def test_cors_costs_nothing_measurable(setup: dict[str, Any], timed: bool, benchmark: Any) -> None:
    servers = setup["servers"]
    rounds, seconds = (7, 4) if timed else (1, 1)
    ratios: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    ratios["preflight/healthz"] = []
    raw: dict[str, list[float]] = {}

    def run() -> None:
        if timed:  # warm-up, not counted
            for path in SHAPES.values():
                for server in servers.values():
                    wrk(server.url + path, 1, setup["post"])
        for _ in range(rounds):
            for shape, path in SHAPES.items():
                pair_ratios = []
                for cors, plain in PAIRS:
                    rps = _together(
                        {
                            "cors": (servers[cors].url + path, setup["post"]),
                            "plain": (servers[plain].url + path, setup["post"]),
                        },
                        seconds,
                    )
                    pair_ratios.append(rps["cors"] / rps["plain"])
                    for mode, value in rps.items():
                        raw.setdefault(f"{shape} {mode}", []).append(value)
                ratios[shape].append(math.sqrt(pair_ratios[0] * pair_ratios[1]))
            # One after the other, each alone on the server: loaded together, a single
            # worker serves the two clients' requests in turn, so each gets half of them
            # whatever they cost (the ratio was 1.0 by construction).
            cors = servers["cors"].url
            runs = [
                ("preflight", cors + SHAPES["bulk-50"], setup["preflight"]),
                ("healthz", cors + "/healthz", None),
            ]
            if len(ratios["preflight/healthz"]) % 2:
                runs.reverse()
            rps = {}
            for name, url, script in runs:
                result = wrk(url, seconds, script)
                assert result.non_2xx == 0, name
                rps[name] = result.rps
                raw.setdefault(name, []).append(result.rps)
            ratios["preflight/healthz"].append(rps["preflight"] / rps["healthz"])

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(
        f"\n{rounds} rounds of {seconds} s, loaded together: 1 worker each on core 0, "
        "two wrk -c64 on core 1; medians"
    )
    for name, values in sorted(raw.items()):
        print(f"  {name:20} {statistics.median(values):8.0f} req/s")
    summary = {name: statistics.median(values) for name, values in ratios.items()}
    for name, values in ratios.items():
        print(f"  {name:20} {summary[name]:.3f}x  rounds: " + " ".join(f"{v:.3f}" for v in values))
    # Correctness in both modes: the answers cross-origin pages read carry the headers.
    with servers["cors"].client(timeout=5.0) as client:
        answer = client.post(
            SHAPES["single"], json={"context": {"targetingKey": "u"}}, headers={"Origin": ORIGIN}
        )
        assert answer.headers["access-control-allow-origin"] == ORIGIN
    if timed:
        for shape in SHAPES:
            assert summary[shape] >= 0.97, f"{shape}: with CORS {summary[shape]:.3f}x"
        assert summary["preflight/healthz"] >= 1.0, summary
