"""Scale past one machine, by simulation (issue 20, item 2; docs/capacity.md).

200 server instances are simulated by 200 change listeners on one ``redis-server`` (spawned
on a free port), spread over a few processes: each listener is a Redis store's own
:meth:`~flagport_server.stores.base.Store.changes`, the code an instance runs, and notes
when each version arrived. A writer commits flag changes through the admin service, as
``flags enable`` does. Measured, in one run:

- **commit to message**: from the moment the writer starts a change (``flags enable``: its
  validation, compile and commit) to the moment each listener has the new version, over
  every (commit, listener) pair: p50, p99, max; the time until the last listener has it, and
  from the first listener to the last (the fan-out alone). Budget: p99 <= 100 ms with 200
  listeners;
- **Redis's cost of one change**: redis-server CPU per commit with every listener subscribed
  (the publish fan-out), and for the whole-configuration read every instance then makes (all
  listeners' reads at once, as 200 instances reloading would);
- **one snapshot apply**, separately: a worker's reload of the portal's flags and of 1,000
  flags (load, compile, swap), wall and CPU, so the 2 cores here measure Redis's fan-out and
  not the queueing of 200 applies on two cores.

The listeners only note arrivals: an instance applies on its own cores, so applying in the
listeners would measure this machine's two cores, not Redis.

``make test`` (``--benchmark-disable``): 20 listeners, 5 commits, correctness only (every
listener sees every version).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from benchmarks._documents import area_flags
from benchmarks._fanout import Arrival, listen
from benchmarks._load import quantile
from flagport_server.auth import Actor
from flagport_server.runtime import Runtime
from flagport_server.services import AdminService
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from tests.support.redis import RedisServer, redis_server
from tests.support.server import PORTAL_FLAGS

COMMIT_TO_MESSAGE_P99_BUDGET_MS = 100.0
FLAG = "ui-improvements"
PREFIX = "fanout"
ACTOR = Actor(name="bench")


@dataclass(frozen=True)
class Shape:
    listeners: int
    processes: int
    commits: int
    #: Seconds between commits, so one commit's fan-out is over before the next.
    gap: float
    applies: int


SMOKE = Shape(listeners=20, processes=2, commits=5, gap=0.05, applies=2)
TIMED = Shape(listeners=200, processes=4, commits=60, gap=0.1, applies=15)


@pytest.fixture(scope="module")
def shape(timed: bool) -> Shape:
    return TIMED if timed else SMOKE


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("fanout-redis")) as server:
        yield server


def _store_url(server: RedisServer, prefix: str) -> str:
    return f"{server.url}?prefix={prefix}"


def _channel(prefix: str) -> str:
    # The key layout of flagport_server.stores.redis (its package docstring).
    return "{" + prefix + "}:changes"


@dataclass
class Listeners:
    """The listener processes and their pipes."""

    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]

    def ask(self, command: str, timeout: float = 60.0) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        return [_receive(pipe, timeout) for pipe in self.pipes]


def _receive(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError("a listener process did not answer")
    return pipe.recv()


SIZES = ["portal", "1000-flags"]


@pytest.fixture
def listeners(redis_process: RedisServer, shape: Shape, size: str) -> Iterator[Listeners]:
    context = multiprocessing.get_context("spawn")
    url = _store_url(redis_process, f"{PREFIX}-{size}")
    per_process = [
        shape.listeners // shape.processes + (i < shape.listeners % shape.processes)
        for i in range(shape.processes)
    ]
    processes: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Connection] = []
    for count in per_process:
        ours, theirs = context.Pipe()
        process = context.Process(target=listen, args=(url, count, theirs), daemon=True)
        process.start()
        processes.append(process)
        pipes.append(ours)
    try:
        for pipe in pipes:
            assert _receive(pipe, 60.0) == "ready"
        yield Listeners(processes, pipes)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _wait_subscribed(server: RedisServer, channel: str, count: int, timeout: float = 30.0) -> None:
    client = redis.Redis(port=server.port)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subscribed = dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
            if subscribed >= count:
                return
            time.sleep(0.02)
        raise TimeoutError(f"{subscribed} of {count} listeners subscribed to {channel}")
    finally:
        client.close()


def _redis_cpu_seconds(server: RedisServer) -> float:
    """redis-server's CPU seconds so far, from its own account (``INFO cpu``: microsecond
    resolution, where /proc counts 10 ms ticks)."""
    client = redis.Redis(port=server.port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _runtime(server: RedisServer, prefix: str, tmp: Path, seed: Path | None = None) -> Runtime:
    settings = Settings(
        store_url=_store_url(server, prefix),
        seed_file=str(seed) if seed else None,
        snapshot_cache=str(tmp / f"cache-{prefix}-{id(seed)}.json"),
        poll_interval=3600.0,  # the listeners' messages are measured, not the repair poll
    )
    return Runtime(settings, open_store(settings.store_url))


async def _commit_all(
    writer: Runtime, shape: Shape, server: RedisServer, key: str
) -> tuple[dict[int, float], float]:
    """Commit ``shape.commits`` changes: the monotonic start of each by the version it made,
    and redis-server's CPU seconds per commit."""
    service = AdminService(writer)
    started_at: dict[int, float] = {}
    cpu_before = _redis_cpu_seconds(server)
    for n in range(shape.commits):
        started = time.monotonic()
        _, version = await service.enable(key, 10.0 if n % 2 else 50.0, ACTOR, "fan-out bench")
        started_at[version] = started
        await asyncio.sleep(shape.gap)
    cpu = _redis_cpu_seconds(server) - cpu_before
    return started_at, cpu / shape.commits


def _latencies_ms(started_at: dict[int, float], arrivals: list[list[Arrival]]) -> list[float]:
    """Commit-to-message times of every (commit, listener) pair; each listener must have had
    every version."""
    latencies: list[float] = []
    for listener, seen in enumerate(arrivals):
        by_version = dict(seen)
        missing = sorted(set(started_at) - set(by_version))
        assert not missing, f"listener {listener} never had versions {missing}"
        latencies += [(by_version[v] - t) * 1000 for v, t in started_at.items()]
    return latencies


def _last_listener_ms(started_at: dict[int, float], arrivals: list[list[Arrival]]) -> list[float]:
    """Per commit: until the last listener had it."""
    by_listener = [dict(seen) for seen in arrivals]
    return [(max(seen[v] for seen in by_listener) - t) * 1000 for v, t in started_at.items()]


def _spread_ms(started_at: dict[int, float], arrivals: list[list[Arrival]]) -> list[float]:
    """Per commit: from the first listener having it to the last (the fan-out alone, without
    the writer's validation and commit)."""
    by_listener = [dict(seen) for seen in arrivals]
    return [
        (max(seen[v] for seen in by_listener) - min(seen[v] for seen in by_listener)) * 1000
        for v in started_at
    ]


@pytest.mark.parametrize("size", SIZES)
def test_commit_to_message_at_every_listener(
    redis_process: RedisServer,
    size: str,
    listeners: Listeners,
    shape: Shape,
    timed: bool,
    tmp_path: Path,
    benchmark: Any,
) -> None:
    server = redis_process
    prefix = f"{PREFIX}-{size}"
    _wait_subscribed(server, _channel(prefix), shape.listeners)
    seed = _seed(size, tmp_path)
    writer = _runtime(server, prefix, tmp_path, seed=seed)

    async def run() -> tuple[dict[int, float], float]:
        await writer.start()
        try:
            await AdminService(writer).seed(str(seed))
            await asyncio.sleep(0.5)  # the seed's own fan-out is over
            return await _commit_all(writer, shape, server, _flag(size))
        finally:
            await writer.stop()

    # pytest-benchmark times the whole series once; the figures are the quantiles.
    started_at, redis_cpu_per_commit = benchmark.pedantic(
        asyncio.run, args=(run(),), rounds=1, iterations=1
    )
    time.sleep(0.5)  # the last commit's messages are in
    cpu_before = _redis_cpu_seconds(server)
    load_seconds = listeners.ask("load")
    redis_cpu_herd = _redis_cpu_seconds(server) - cpu_before
    arrivals = [a for batch in listeners.ask("stop") for a in batch]
    assert len(arrivals) == shape.listeners

    latencies = _latencies_ms(started_at, arrivals)
    last = _last_listener_ms(started_at, arrivals)
    spread = _spread_ms(started_at, arrivals)
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    print(
        f"\n{size}: {shape.listeners} listeners in {shape.processes} processes,"
        f" {shape.commits} commits:"
        f"\n  commit to message: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
        f" (budget p99 {COMMIT_TO_MESSAGE_P99_BUDGET_MS:.0f} ms)"
        f"\n  until the last listener: median {statistics.median(last):.1f} ms,"
        f" p99 {quantile(last, 0.99):.1f} ms"
        f"\n  first to last listener: median {statistics.median(spread):.1f} ms,"
        f" p99 {quantile(spread, 0.99):.1f} ms"
        f"\n  redis-server CPU per commit (the commit and its publish to {shape.listeners}):"
        f" {redis_cpu_per_commit * 1000:.2f} ms"
        f"\n  every listener reading the whole configuration at once: redis-server CPU"
        f" {redis_cpu_herd * 1000:.1f} ms, slowest process {max(load_seconds) * 1000:.0f} ms"
    )
    benchmark.extra_info.update(p50_ms=p50, p99_ms=p99, max_ms=max(latencies))
    if timed:
        assert p99 <= COMMIT_TO_MESSAGE_P99_BUDGET_MS


async def _apply_costs(
    writer: Runtime, reader: Runtime, key: str, applies: int
) -> tuple[float, float]:
    """Median wall and CPU seconds of ``reader`` applying a change of ``key`` that ``writer``
    committed."""
    service = AdminService(writer)
    walls: list[float] = []
    cpus: list[float] = []
    for n in range(applies):
        await service.enable(key, float(n % 90 + 1), ACTOR, None)
        wall, cpu = time.perf_counter(), time.process_time()
        await reader.reload()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _seed(size: str, directory: Path) -> Path:
    if size == "portal":
        return PORTAL_FLAGS
    path = directory / "thousand.yaml"
    path.write_text(yaml.safe_dump(area_flags(250, experiments=False)))
    return path


def _flag(size: str) -> str:
    """The flag each commit changes."""
    return FLAG if size == "portal" else "area-1"


@pytest.mark.parametrize("size", SIZES)
def test_one_snapshot_apply(
    redis_process: RedisServer, shape: Shape, size: str, tmp_path: Path, benchmark: Any
) -> None:
    prefix = f"apply-{size}"
    seed = _seed(size, tmp_path)
    writer = _runtime(redis_process, prefix, tmp_path, seed=seed)
    reader = _runtime(redis_process, prefix, tmp_path)

    async def run() -> tuple[float, float, int]:
        await writer.start()
        try:
            await AdminService(writer).seed(str(seed))
            await reader.store.open()
            await reader.reload()
            try:
                wall, cpu = await _apply_costs(writer, reader, _flag(size), shape.applies)
                return wall, cpu, len(reader.snapshot or ())
            finally:
                await reader.store.close()
        finally:
            await writer.stop()

    wall, cpu, flags = benchmark.pedantic(asyncio.run, args=(run(),), rounds=1, iterations=1)
    assert flags == (10 if size == "portal" else 1000)
    benchmark.extra_info.update(wall_ms=wall * 1000, cpu_ms=cpu * 1000)
    print(
        f"\none snapshot apply, {flags} flags: {wall * 1000:.2f} ms wall, {cpu * 1000:.2f} ms CPU"
    )
