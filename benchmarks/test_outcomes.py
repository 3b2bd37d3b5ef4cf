"""Outcome signals' budget (issue 17, Speed), measured in the same run:

- OFREP single throughput while the same server ingests 1,000 outcome records a second
  (``POST /v1/outcomes``: 100 batches a second, each of 5 items and 5 events, sent open
  loop on schedule) >= 0.9x the throughput of the same server without them. Both servers
  run a plan on ``ui-improvements`` (the driver re-judges its guards after every drain)
  and are loaded *together*: one worker each on core 0, two ``wrk -c64`` on core 1 with
  the unit mixes of benchmarks/_load.py, the outcome sender on core 1 too. Interleaved
  rounds, medians; the requests ratio is the budget, the per-CPU-second ratio (which
  corrects for an unequal share of core 0) is printed beside it.

``make test`` (``--benchmark-disable``) runs a one-second version for correctness only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import yaml

from benchmarks._load import UNIT_MIXES, group_cpu_seconds, pin_process_group, unit_script, wrk
from benchmarks.test_server_throughput import SINGLE_FLAG, fifty_flag_document
from tests.support.server import RunningServer, start_server, wait_until
from tests.support.tools import require_tool

PLAN_FLAG = "ui-improvements"
#: 100 batches a second of 5 items and 5 events: 1,000 outcome records a second, from as
#: many batches as 100 clients reporting every second would send.
BATCHES_PER_SECOND = 100
ITEMS_PER_BATCH = 5
SEVERITIES = ("critical", "major", "minor", "low", "info")


def outcome_batch(n: int, now: float) -> dict[str, Any]:
    """The ``n``-th batch: :data:`ITEMS_PER_BATCH` items (cohort, variant, failures and
    latency bucket varying) and as many events (labels drawn from five severities), over
    the last second."""
    items, events = [], []
    for i in range(ITEMS_PER_BATCH):
        k = n * ITEMS_PER_BATCH + i
        treated = k % 2 == 0
        buckets = [0] * 13
        buckets[k % 13] = 3
        cohort, variant = ("treatment", "on") if treated else ("control", "off")
        items.append(
            {
                "key": PLAN_FLAG,
                "variant": variant,
                "cohort": cohort,
                "requests": 3,
                "failures": int(k % 3 == 0),
                "latency_ms_sum": 30.0 + k % 500,
                "latency_buckets": buckets,
            }
        )
        events.append(
            {
                "key": PLAN_FLAG,
                "variant": variant,
                "cohort": cohort,
                "name": "user_report",
                "labels": {"severity": SEVERITIES[k % len(SEVERITIES)]},
                "count": 1,
            }
        )
    return {"period": [now - 1, now], "items": items, "events": events}


def send_outcomes(url: str, seconds: float) -> tuple[int, int]:
    """Post :data:`BATCHES_PER_SECOND` batches a second for ``seconds``, open loop (each
    on schedule, whatever the answers' latency), from core 1; (batches answered 200,
    batches sent)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})  # this thread only

    async def main() -> tuple[int, int]:
        ok = 0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

            async def post(n: int) -> None:
                nonlocal ok
                answer = await client.post("/v1/outcomes", json=outcome_batch(n, time.time()))
                ok += answer.status_code == 200 and not answer.json()["rejected"]

            loop = asyncio.get_running_loop()
            started = loop.time()
            total = round(seconds * BATCHES_PER_SECOND)
            tasks = []
            for n in range(total):
                await asyncio.sleep(max(0.0, started + n / BATCHES_PER_SECOND - loop.time()))
                tasks.append(asyncio.create_task(post(n)))
            await asyncio.gather(*tasks)
            return ok, total

    return asyncio.run(main())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, timed: bool) -> Iterator[dict[str, Any]]:
    """Two identical servers, each with a running plan on ``ui-improvements``; only the
    first is sent outcomes."""
    require_tool("wrk")
    workdir = tmp_path_factory.mktemp("outcomes-bench")
    seed = workdir / "fifty.yaml"
    seed.write_text(yaml.safe_dump(fifty_flag_document()))
    started: dict[str, RunningServer] = {}
    try:
        for mode in ("with", "without"):
            server = start_server(workdir / mode, seed=seed)
            started[mode] = server
            with server.admin(timeout=10.0) as admin:
                plan = {
                    "key": PLAN_FLAG,
                    "steps": "50,100",
                    "hold": "1h",
                    "guards": [
                        "error_rate > 50% over 5m",
                        "avg_latency > 2s over 5m",
                        'count(user_report{severity="critical"}) > 1000000 over 10m',
                    ],
                }
                answer = admin.post("/admin/v1/rollouts/", json=plan)
                assert answer.status_code == 201, answer.text
            pin_process_group(server.process.pid, 0)
        yield {
            "servers": started,
            "scripts": {mix: unit_script(workdir, mix, mix) for mix in UNIT_MIXES},
        }
    finally:
        for server in started.values():
            server.stop()


def _plan_treatment_requests(server: RunningServer) -> int:
    with server.admin(timeout=10.0) as admin:
        answer = admin.get(f"/admin/v1/rollouts/{PLAN_FLAG}")
    assert answer.status_code == 200, answer.text
    guard = answer.json()["guards"][0]
    return int(guard["evidence"]["treatment"]["requests"])


def test_ofrep_single_while_ingesting_outcomes(
    servers: dict[str, Any], timed: bool, benchmark: Any
) -> None:
    with_, without = servers["servers"]["with"], servers["servers"]["without"]
    url = f"/ofrep/v1/evaluate/flags/{SINGLE_FLAG}"
    mixes = list(UNIT_MIXES) if timed else ["returning"]
    rounds, seconds = (7, 4) if timed else (1, 1)
    ratios: dict[str, list[tuple[float, float]]] = {mix: [] for mix in mixes}
    raw: dict[tuple[str, str], list[float]] = {}
    sent: list[float] = []

    def measure_pair(mix: str) -> None:
        script = servers["scripts"][mix]
        pair = {"with": with_, "without": without}
        cpu_before = {mode: group_cpu_seconds(s.process.pid) for mode, s in pair.items()}
        with ThreadPoolExecutor(3) as pool:
            sender = pool.submit(send_outcomes, with_.url, seconds)
            runs = {
                mode: pool.submit(wrk, s.url + url, seconds, script) for mode, s in pair.items()
            }
            results = {mode: run.result() for mode, run in runs.items()}
            answered, posted = sender.result()
        cpu = {
            mode: group_cpu_seconds(s.process.pid) - cpu_before[mode] for mode, s in pair.items()
        }
        assert answered == posted, (answered, posted)
        sent.append(posted)
        for mode, result in results.items():
            assert result.non_2xx == 0, (mix, mode)
            raw.setdefault((mix, mode), []).append(result.rps)
        on, off = results["with"].rps, results["without"].rps
        ratios[mix].append((on / off, (on / cpu["with"]) / (off / cpu["without"])))

    def run() -> None:
        for mix in mixes if timed else ():  # warm-up, not counted
            for server in (with_, without):
                wrk(server.url + url, 1, servers["scripts"][mix])
        for _ in range(rounds):
            for mix in mixes:
                measure_pair(mix)

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(
        f"\n{rounds} rounds of {seconds} s, OFREP single with and without outcome ingestion "
        f"loaded together (1 worker each on core 0, two wrk -c64 and the sender on core 1); "
        f"{BATCHES_PER_SECOND} outcome batches a second ({ITEMS_PER_BATCH} items and "
        f"{ITEMS_PER_BATCH} events each), open loop, {sum(sent)} sent, all counted"
    )
    for mix, pairs in ratios.items():
        served = statistics.median(r for r, _ in pairs)
        per_cpu = statistics.median(c for _, c in pairs)
        print(
            f"  {mix:9} without {statistics.median(raw[mix, 'without']):6.0f} with "
            f"{statistics.median(raw[mix, 'with']):6.0f} req/s | with/without {served:.3f}x "
            f"requests, {per_cpu:.3f}x per CPU-second (budget >= 0.9x)"
        )
        print("    rounds (requests): " + " ".join(f"{r:.3f}" for r, _ in pairs))
    # Correctness: what was sent reached the store and the plan's guard reading.
    assert wait_until(lambda: _plan_treatment_requests(with_) > 0, timeout=10.0)
    assert _plan_treatment_requests(without) == 0
    if timed:
        for mix, pairs in ratios.items():
            served = statistics.median(r for r, _ in pairs)
            assert served >= 0.9, f"{mix}: {served:.3f}x with outcome ingestion"
