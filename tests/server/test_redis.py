"""Several Flagport instances on one Redis (issue 6), against real ``redis-server`` and
``redis-sentinel`` processes spawned on free ports in temporary directories.

Instances are real ``flags serve`` subprocesses; which worker served which snapshot is read
from the ``X-Flagport-Worker`` / ``X-Flagport-Snapshot`` headers on fresh connections.
The store contract itself (also on a local 3-node Redis Cluster) is in
``test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flagport.engine import Flag
from flagport_server.errors import InvalidInput, StoreUnavailable
from flagport_server.stores import open_store
from flagport_server.stores.base import Mutation
from flagport_server.stores.redis import parse_redis_url
from tests.server._fixtures import fresh_request
from tests.support.redis import RedisServer, free_port, redis_server
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, start_server
from tests.support.tools import require_tool

SINGLE = "/ofrep/v1/evaluate/flags/"
BODY = {"context": {"targetingKey": "user-1"}}
FLAG = "ui-improvements"


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def instance(
    workdir: Path,
    store: str,
    name: str,
    *,
    workers: int = 2,
    seed: bool = False,
    cache: bool = True,
) -> Iterator[RunningServer]:
    extra = ["--instance-id", name]
    if cache:
        extra += ["--snapshot-cache", str(workdir / "snapshot-cache.json")]
    with running_server(
        workdir, store=store, workers=workers, seed=PORTAL_FLAGS if seed else None, extra=extra
    ) as server:
        yield server


def evaluate(server: RunningServer, key: str = FLAG) -> tuple[int, dict[str, str], Any]:
    status, headers, body = fresh_request(server, "POST", SINGLE + key, BODY)
    return status, headers, json.loads(body) if body else None


def readyz(server: RunningServer) -> tuple[int, dict[str, Any]]:
    with server.client(timeout=5.0) as client:
        answer = client.get("/readyz")
    return answer.status_code, answer.json()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def every_worker_serves(server: RunningServer, version: int, value: Any, workers: int) -> None:
    """Fresh connections until ``workers`` distinct pids answered ``value`` at ``version``."""
    seen: set[str] = set()

    def check() -> bool:
        status, headers, body = evaluate(server)
        assert status == 200, body
        if int(headers["x-flagport-snapshot"]) >= version and body["value"] == value:
            seen.add(headers["x-flagport-worker"])
        return len(seen) >= workers

    wait_for(check, 5.0, f"{workers} workers of {server.url} serving {value!r} at {version}")


def toggle(server: RunningServer, on: bool) -> int:
    action = "enable" if on else "disable"
    with server.admin(timeout=10.0) as admin:
        body: dict[str, Any] = {"reason": "test"}
        if on:
            body["percentage"] = 100  # the seed has it at 0 %
        answer = admin.post(f"/admin/v1/flags/{FLAG}/{action}", json=body)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["snapshot_version"])


class Load:
    """Evaluations in a background thread against several servers (keep-alive clients)
    until stopped: every answer that is not a 200 with a value is a failure."""

    def __init__(self, servers: list[RunningServer]) -> None:
        self.servers = servers
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = [s.client(timeout=5.0) for s in self.servers]
        try:
            deadline = time.monotonic() + 120  # bounded, whatever happens
            while not self._stop.is_set() and time.monotonic() < deadline:
                for client in clients:
                    try:
                        answer = client.post(SINGLE + FLAG, json=BODY)
                        if answer.status_code == 200 and "value" in answer.json():
                            self.ok += 1
                        else:
                            self.failures.append(f"{answer.status_code} {answer.text}")
                    except httpx.HTTPError as error:
                        self.failures.append(repr(error))
                time.sleep(0.002)
        finally:
            for client in clients:
                client.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def metric(server: RunningServer, name: str) -> list[float]:
    with server.client(timeout=5.0) as client:
        text = client.get("/metrics").text
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]


# -- several instances -----------------------------------------------------------------------


def test_two_instances_of_two_workers_see_every_change(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as redis,
        instance(tmp_path / "a", redis.url, "a", seed=True) as a,
        instance(tmp_path / "b", redis.url, "b") as b,
    ):
        for round_ in range(6):
            writer = (a, b)[round_ % 2]
            on = round_ % 2 == 0
            version = toggle(writer, on)
            for server in (a, b):
                every_worker_serves(server, version, on, workers=2)
        with a.admin(timeout=10.0) as admin:
            propagation = admin.get("/admin/v1/propagation", params={"version": version}).json()
        assert propagation["complete"], propagation
        assert {w["instance"] for w in propagation["workers"]} == {"a", "b"}
        assert len(propagation["workers"]) == 4
        assert metric(a, "flagport_store_regressed") == [0.0, 0.0]


def test_eight_writers_through_two_instances_lose_no_update(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as redis,
        instance(tmp_path / "a", redis.url, "a", seed=True, cache=False) as a,
        instance(tmp_path / "b", redis.url, "b", cache=False) as b,
    ):
        with a.admin(timeout=10.0) as admin:
            created = admin.post("/admin/v1/flags", json={"key": "counter", "description": "0"})
            assert created.status_code == 201, created.text
        successes = [0] * 8
        conflicts = [0] * 8
        errors: list[str] = []
        start = threading.Barrier(8)

        def writer(index: int) -> None:
            server = (a, b)[index % 2]
            with server.admin(timeout=10.0) as admin:
                start.wait()
                for _ in range(6):
                    current = admin.get("/admin/v1/flags/counter")
                    flag = current.json()
                    bumped = {"description": str(int(flag["description"]) + 1)}
                    answer = admin.put(
                        "/admin/v1/flags/counter",
                        json=bumped,
                        headers={"If-Match": current.headers["etag"]},
                    )
                    if answer.status_code == 200:
                        successes[index] += 1
                    elif answer.status_code == 412:
                        conflicts[index] += 1
                    else:
                        errors.append(f"{answer.status_code} {answer.text}")

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        total = sum(successes)
        assert total >= 6  # at least one writer wins each round
        with b.admin(timeout=10.0) as admin:
            final = admin.get("/admin/v1/flags/counter").json()
            audit = admin.get("/admin/v1/audit", params={"flag": "counter", "limit": 1000}).json()
        entries = audit["entries"] if isinstance(audit, dict) else audit
        updates = [e for e in entries if e["action"] != "create"]
        assert final["description"] == str(total)  # no update lost
        assert final["version"] == 1 + total
        assert len(updates) == total
        print(f"\n8 writers through 2 instances: {total} writes, {sum(conflicts)} stale (412)")


# -- outages ---------------------------------------------------------------------------------


def test_redis_killed_during_load_then_back_with_its_data(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis", persistence=True) as redis,
        instance(tmp_path / "a", redis.url, "a", seed=True) as a,
        instance(tmp_path / "b", redis.url, "b") as b,
    ):
        version = toggle(a, True)
        every_worker_serves(b, version, True, workers=2)
        with Load([a, b]) as load:
            time.sleep(0.3)
            redis.kill()
            # Every worker of both instances notices (one gauge series per worker).
            for server in (a, b):
                wait_for(
                    lambda s=server: metric(s, "flagport_store_up") == [0.0, 0.0],
                    5,
                    "every worker sees the store down",
                )
            status, body = readyz(a)
            assert (status, body["status"]) == (200, "degraded")
            assert "unavailable" in body["store"]["problem"]
            assert body["snapshot"]["version"] == version
            assert body["snapshot"]["age_s"] >= 0
            # Writes fail fast with a clear 503.
            with b.admin(timeout=10.0) as admin:
                started = time.monotonic()
                answer = admin.post(f"/admin/v1/flags/{FLAG}/disable", json={})
                took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert "Redis store" in answer.json()["detail"]
            assert took < 3.0, took
            time.sleep(0.5)
            redis.start()  # the same port, its append-only file: nothing lost
            for server in (a, b):
                wait_for(lambda s=server: readyz(s)[1]["status"] == "ok", 10, "ok again")
            time.sleep(0.3)
        assert not load.failures, load.failures[:5]
        assert load.ok > 100
        # Every instance resynced by itself: a new change reaches every worker.
        version = toggle(b, False)
        for server in (a, b):
            every_worker_serves(server, version, False, workers=2)
        print(f"\n{load.ok} evaluations across the outage, none failed")


def test_redis_restarted_empty_keeps_serving_and_an_import_restores_it(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path / "redis") as redis,
        instance(tmp_path / "a", redis.url, "a", seed=True) as a,
        instance(tmp_path / "b", redis.url, "b") as b,
    ):
        version = toggle(a, True)
        every_worker_serves(b, version, True, workers=2)
        old_store_id = readyz(a)[1]["snapshot"]["store_id"]
        with Load([a, b]) as load:
            redis.kill()
            redis.start()  # no persistence: an empty Redis, as after a FLUSHALL

            def regressed(server: RunningServer) -> bool:
                body = readyz(server)[1]
                return bool(body["store"].get("regressed"))

            # Every worker of every instance (the gauge has one series per worker).
            for server in (a, b):
                wait_for(
                    lambda s=server: metric(s, "flagport_store_regressed") == [1.0, 1.0],
                    10,
                    "regression reported by every worker",
                )
                assert regressed(server)
            status, body = readyz(a)
            assert (status, body["status"]) == (200, "degraded")
            assert "went backwards" in body["store"]["problem"]
            assert body["snapshot"]["version"] == version
            assert body["snapshot"]["store_id"] == old_store_id
            assert "STORE WENT BACKWARDS" in a.log()
            time.sleep(1.5)  # a few periodic checks: still serving the old snapshot
        assert not load.failures, load.failures[:5]
        every_worker_serves(a, version, True, workers=2)

        # Restore: the document in an instance's snapshot cache, imported through any
        # instance (flags import does the same POST).
        cached = json.loads((tmp_path / "a" / "snapshot-cache.json").read_text())
        with b.admin(timeout=10.0) as admin:
            answer = admin.post(
                "/admin/v1/snapshot", json=cached["document"], params={"reason": "restore"}
            )
        assert answer.status_code == 200, answer.text
        restored = answer.json()["snapshot_version"]
        for server in (a, b):
            # Every worker adopts the restored store (one gauge series per worker).
            wait_for(
                lambda s=server: metric(s, "flagport_store_regressed") == [0.0, 0.0],
                10,
                "every worker adopted the restored store",
            )
            status, body = readyz(server)
            assert (status, body["status"]) == (200, "ok")
            assert body["snapshot"]["store_id"] != old_store_id
            assert body["snapshot"]["version"] == restored
            every_worker_serves(server, restored, True, workers=2)
        version = toggle(a, False)  # and changes flow again
        every_worker_serves(b, version, False, workers=2)


def test_starting_while_redis_is_down(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", persistence=True).start()
    try:
        # A first run leaves a snapshot cache behind.
        with instance(tmp_path / "a", redis.url, "a", seed=True, workers=1) as a:
            version = toggle(a, True)
        redis.kill()
        # Without a cache: not ready, OFREP answers 503 with Retry-After.
        bare = start_server(
            tmp_path / "bare", store=redis.url, extra=["--instance-id", "bare"], wait=False
        )
        cached = start_server(
            tmp_path / "a",
            store=redis.url,
            extra=[
                "--instance-id",
                "a",
                "--snapshot-cache",
                str(tmp_path / "a" / "snapshot-cache.json"),
            ],
        )
        try:
            time.sleep(1.0)

            def answers(server: RunningServer) -> int:
                try:
                    with server.client(timeout=2.0) as client:
                        return client.get("/readyz").status_code
                except httpx.HTTPError:
                    return 0

            wait_for(lambda: answers(bare) == 503, 10, "bare answers 503")
            status, headers, _ = evaluate(bare)
            assert status == 503
            assert headers.get("retry-after")
            status, body = readyz(cached)
            assert (status, body["status"]) == (200, "degraded")
            assert "unavailable" in body["store"]["problem"]
            assert body["snapshot"]["version"] == version
            assert body["snapshot"]["age_s"] >= 1.0  # the cached snapshot's own age
            status, headers, result = evaluate(cached)
            assert (status, result["value"]) == (200, True)
            # Redis comes back: both become ready by themselves.
            redis.start()
            wait_for(lambda: readyz(bare)[1]["status"] == "ok", 10, "bare ready")
            wait_for(lambda: readyz(cached)[1]["status"] == "ok", 10, "cached ok")
        finally:
            for server in (bare, cached):
                server.stop()
    finally:
        redis.kill()


# -- Sentinel --------------------------------------------------------------------------------


def _sentinel(directory: Path, primary_port: int) -> RedisServer:
    require_tool("redis-sentinel")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "sentinel.conf"  # Sentinel rewrites its config file: ours alone
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor flagport 127.0.0.1 {primary_port} 1\n"
        "sentinel down-after-milliseconds flagport 400\n"
        "sentinel failover-timeout flagport 4000\n"
        "sentinel parallel-syncs flagport 1\n"
    )

    class Sentinel(RedisServer):
        def args(self) -> list[str]:
            return [require_tool("redis-sentinel"), str(config), "--logfile", str(self.log_path)]

    return Sentinel(directory, port=port).start()


def test_sentinel_failover_during_evaluation(tmp_path: Path) -> None:
    with redis_server(tmp_path / "primary") as primary:
        replica = RedisServer(
            tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
        ).start()
        sentinel = _sentinel(tmp_path / "sentinel", primary.port)
        try:
            wait_for(
                lambda: "master_link_status:up" in replica.cli("info", "replication"),
                10,
                "replica in sync",
            )
            url = f"redis+sentinel://127.0.0.1:{sentinel.port}/flagport/0"
            with (
                instance(tmp_path / "a", url, "a", seed=True) as a,
                instance(tmp_path / "b", url, "b") as b,
            ):
                version = toggle(a, True)
                every_worker_serves(b, version, True, workers=2)
                with Load([a, b]) as load:
                    primary.kill()
                    # Writes resume once Sentinel has promoted the replica.
                    deadline = time.monotonic() + 20
                    written = None
                    while time.monotonic() < deadline:
                        with b.admin(timeout=10.0) as admin:
                            answer = admin.post(f"/admin/v1/flags/{FLAG}/disable", json={})
                        if answer.status_code == 200:
                            written = int(answer.json()["snapshot_version"])
                            break
                        assert answer.status_code == 503, answer.text
                        time.sleep(0.2)
                    assert written is not None, "writes did not resume after the failover"
                    for server in (a, b):
                        every_worker_serves(server, written, False, workers=2)
                assert not load.failures, load.failures[:5]
                assert written > version
                assert "role:master" in replica.cli("info", "replication")
                print(f"\n{load.ok} evaluations across a Sentinel failover, none failed")
        finally:
            sentinel.kill()
            replica.kill()


# -- TLS -------------------------------------------------------------------------------------


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by the openssl CLI."""
    openssl = require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: directory / f"{name}.pem"
        for name in ("ca", "ca-key", "server", "server-key", "client", "client-key")
    }

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=flagport-test-ca",
        "-keyout",
        str(paths["ca-key"]),
        "-out",
        str(paths["ca"]),
    )
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=flagport-client")):
        csr = directory / f"{name}.csr"
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            str(paths[f"{name}-key"]),
            "-out",
            str(csr),
        )
        extensions = directory / f"{name}.ext"
        extensions.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "basicConstraints=CA:FALSE\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(paths["ca"]),
            "-CAkey",
            str(paths["ca-key"]),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(extensions),
            "-out",
            str(paths[name]),
        )
    return paths


def test_tls_store_and_server(tmp_path: Path) -> None:
    certs = _certificates(tmp_path / "certs")
    tls_port = free_port()
    extra = [
        "--tls-port",
        str(tls_port),
        "--port",
        "0",
        "--tls-cert-file",
        str(certs["server"]),
        "--tls-key-file",
        str(certs["server-key"]),
        "--tls-ca-cert-file",
        str(certs["ca"]),
        "--tls-auth-clients",
        "yes",
    ]
    server = RedisServer(tmp_path / "redis", extra=extra, client_port=tls_port).start()
    try:
        query = (
            f"ssl_ca_certs={certs['ca']}&ssl_certfile={certs['client']}"
            f"&ssl_keyfile={certs['client-key']}"
        )
        url = f"rediss://127.0.0.1:{tls_port}/0?{query}"

        async def store_round_trip() -> None:
            store = open_store(url)
            await store.open()
            try:
                changes = store.changes()
                pending = asyncio.ensure_future(anext(changes))
                await asyncio.sleep(0.2)
                result = await store.commit(
                    [Mutation("flag", "a", "put", Flag(version=1), None)], []
                )
                assert await asyncio.wait_for(pending, 5) == result.snapshot_version
                assert list((await store.load()).document.flags) == ["a"]
                await changes.aclose()  # type: ignore[attr-defined]
            finally:
                await store.close()
            # Without the client certificate the server refuses the handshake: 503-class.
            bare = open_store(f"rediss://:pw@127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca']}")
            with pytest.raises(StoreUnavailable) as caught:
                await bare.open()
            assert f"127.0.0.1:{tls_port}" in str(caught.value)
            assert "pw" not in str(caught.value).replace("://", "")
            await bare.close()

        asyncio.run(store_round_trip())
        # A server on its own prefix (the store above already has a flag: no seeding there).
        with instance(
            tmp_path / "a", url + "&prefix=live", "a", seed=True, workers=1, cache=False
        ) as a:
            version = toggle(a, True)
            every_worker_serves(a, version, True, workers=1)
    finally:
        server.kill()


# -- URLs ------------------------------------------------------------------------------------


def test_redis_urls() -> None:
    options = parse_redis_url("redis+sentinel://:s%40cret@h1:26379,h2/prod-flags/2?prefix=prod")
    assert options.hosts == [("h1", 26379), ("h2", 26379)]
    assert (options.service, options.db, options.password, options.prefix) == (
        "prod-flags",
        2,
        "s@cret",
        "prod",
    )
    assert "s@cret" not in options.location
    options = parse_redis_url("rediss://user:pw@redis.internal:6380/1?ssl_ca_certs=/ca.pem")
    assert (options.username, options.password, options.db, options.ssl_ca_certs) == (
        "user",
        "pw",
        1,
        "/ca.pem",
    )
    assert parse_redis_url("redis://localhost").hosts == [("localhost", 6379)]
    for bad in (
        "redis+sentinel://h1:26379",  # no service
        "redis://:topsecret@h:6379/x",  # db not a number
        "redis://:topsecret@h:6379/0?colour=blue",  # unknown option
        "redis://h:6379/0?ssl_ca_certs=/ca.pem",  # TLS options on a plain URL
        "redis://h1,h2/0",  # several hosts without Sentinel
        "redis://h:6379/0?prefix=a:b",
    ):
        with pytest.raises(InvalidInput) as caught:
            open_store(bad)
        assert "topsecret" not in str(caught.value), bad
        assert caught.value.path == "store_url"


def test_unreachable_redis_fails_fast_without_the_password() -> None:
    port = free_port()

    async def attempt() -> tuple[str, float]:
        store = open_store(f"redis://:topsecret@127.0.0.1:{port}/0")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.commit([Mutation("flag", "a", "put", Flag(version=1), None)], [])
        took = time.monotonic() - started
        await store.close()
        return str(caught.value), took

    message, took = asyncio.run(attempt())
    assert f"127.0.0.1:{port}" in message
    assert "topsecret" not in message
    assert took < 2.0
