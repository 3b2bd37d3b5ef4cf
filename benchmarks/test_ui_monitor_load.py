"""The deployment monitor under watch (issue 18, Speed): with the monitor open in 20 browsers'
worth of server-sent event streams, OFREP throughput stays >= 0.95x of none open.

Two servers (one worker each, the portal's flags, ``ui-improvements`` changed a moment ago so
the monitor has a flag to show), loaded *together* as the stats benchmark loads them: both on
core 0, two ``wrk -c64`` on core 1, a new user per request. One of them has 20 signed-in
``/ui/deployment-monitor/events`` streams open the whole time (each a fragment at every
change and every heartbeat). Compared per round: the requests each served; medians of
interleaved rounds.

``make test`` (``--benchmark-disable``): one 1-second round, correctness only.
"""

from __future__ import annotations

import re
import statistics
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks._load import pin_process_group, unit_script, wrk
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until

STREAMS = 20
BUDGET = 0.95
SINGLE = "/ofrep/v1/evaluate/flags/ui-improvements.dropdown-fixes"


def _signed_in_cookies(server: RunningServer) -> httpx.Cookies:
    with server.client() as client:
        page = client.get("/ui/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]*)"', page.text)
        assert csrf is not None
        answer = client.post(
            "/ui/sign-in",
            data={"token": server.admin_token, "csrf": csrf.group(1), "next": "/ui/flags"},
        )
        assert answer.status_code == 303, answer.text
        return client.cookies


class Watchers:
    """``STREAMS`` monitor streams held open in threads, counting the fragments they get."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.cookies = _signed_in_cookies(server)
        self.stop = threading.Event()
        self.fragments = [0] * STREAMS
        self.threads = [
            threading.Thread(target=self._watch, args=(i,), daemon=True) for i in range(STREAMS)
        ]

    def _watch(self, index: int) -> None:
        with (
            httpx.Client(base_url=self.server.url, cookies=self.cookies, timeout=None) as client,
            client.stream("GET", "/ui/deployment-monitor/events") as answer,
        ):
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    self.fragments[index] += 1
                if self.stop.is_set():
                    return

    def __enter__(self) -> Watchers:
        for thread in self.threads:
            thread.start()
        assert wait_until(lambda: all(self.fragments), 30, 0.1), self.fragments
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        # Each stream notices at its next fragment (a heartbeat at the latest).
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    root = tmp_path_factory.mktemp("monitor-load")
    with (
        running_server(root / "watched", seed=PORTAL_FLAGS) as watched,
        running_server(root / "unwatched", seed=PORTAL_FLAGS) as unwatched,
    ):
        for server in (watched, unwatched):
            with server.admin() as admin:
                answer = admin.post(
                    "/admin/v1/flags/ui-improvements/enable", json={"percentage": 50}
                )
                assert answer.status_code == 200, answer.text
            pin_process_group(server.process.pid, 0)
        yield {"watched": watched, "unwatched": unwatched}


def test_ofrep_with_the_monitor_open_in_20_browsers(
    servers: dict[str, RunningServer], tmp_path: Path, timed: bool, benchmark: Any
) -> None:
    script = unit_script(tmp_path, "post-new", "new")
    rounds, seconds = (7, 4) if timed else (1, 1)
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"watched": [], "unwatched": []}

    def run() -> None:
        with Watchers(servers["watched"]) as watchers, ThreadPoolExecutor(2) as pool:
            for _ in range(rounds):
                runs = {
                    name: pool.submit(wrk, server.url + SINGLE, seconds, script)
                    for name, server in servers.items()
                }
                results = {name: future.result() for name, future in runs.items()}
                for name, result in results.items():
                    assert result.non_2xx == 0, name
                    rates[name].append(result.rps)
                ratios.append(results["watched"].rps / results["unwatched"].rps)
            assert all(watchers.fragments)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = statistics.median(ratios)
    print(
        f"\n{rounds} rounds of {seconds} s, loaded together: with {STREAMS} monitor streams "
        f"{statistics.median(rates['watched']):.0f} req/s, without "
        f"{statistics.median(rates['unwatched']):.0f} req/s: {ratio:.3f}x (budget >= {BUDGET}x)"
        f"\n  rounds: {' '.join(f'{r:.3f}' for r in ratios)}"
    )
    benchmark.extra_info.update(ratio=ratio)
    if timed:
        assert ratio >= BUDGET
