"""Real ``redis-server`` processes for the tests, spawned on free ports in temporary
directories: never the machine's shared 6379, and nothing is ever flushed but our own.

    with redis_server(tmp_path) as redis:          # one server for one test
        redis.url                                  # redis://127.0.0.1:PORT/0
        redis.kill(); redis.start()                # an outage, a restart (same port)

:func:`shared_redis` and :func:`shared_cluster` are started once per test session and
stopped at exit; tests sharing them use their own key prefix (``?prefix=``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.tools import require_tool

__all__ = [
    "RedisCluster",
    "RedisServer",
    "free_port",
    "redis_server",
    "shared_cluster",
    "shared_redis",
    "unique_prefix",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    import random

    generator = random.Random()
    for _ in range(200):
        port = generator.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _wait_port(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}:\n{log.read_text()}")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError(f"redis-server not listening on {port} after {timeout}s:\n{log.read_text()}")


@dataclass
class RedisServer:
    """One ``redis-server`` (or ``redis-sentinel``) process; ``start()`` again after
    ``kill()`` restarts it on the same port and directory."""

    directory: Path
    port: int = field(default_factory=free_port)
    persistence: bool = False
    extra: Sequence[str] = ()
    #: The port clients connect to (the TLS port when ``extra`` sets one).
    client_port: int | None = None
    binary: str = "redis-server"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.client_port or self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def args(self) -> list[str]:
        args = [
            require_tool(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--dbfilename",
            f"dump-{self.port}.rdb",
        ]
        if self.persistence:
            # Every write fsynced to the append-only file: a restart loses nothing.
            args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            args += ["--appendfilename", f"appendonly-{self.port}.aof"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        return [*args, *self.extra]

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        _wait_port(self.client_port or self.port, self.process, self.log_path)
        return self

    def kill(self) -> None:
        """SIGKILL: an outage (no shutdown save)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str, port: int | None = None) -> str:
        """``redis-cli`` against this server (plain port only)."""
        result = subprocess.run(
            [require_tool("redis-cli"), "-p", str(port or self.port), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return result.stdout


@contextlib.contextmanager
def redis_server(directory: Path, **kwargs: object) -> Iterator[RedisServer]:
    server = RedisServer(directory, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.kill()


@dataclass
class RedisCluster:
    """A local Redis Cluster of three primaries and no replicas."""

    directory: Path
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=true"

    def start(self) -> RedisCluster:
        for index in range(3):
            node = RedisServer(
                self.directory / f"node{index}",
                port=free_cluster_port(),
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                require_tool("redis-cli"),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


_shared: dict[str, RedisServer | RedisCluster] = {}
_shared_dirs: list[str] = []


def _cleanup() -> None:
    for server in _shared.values():
        server.kill()
    for directory in _shared_dirs:
        shutil.rmtree(directory, ignore_errors=True)


atexit.register(_cleanup)


def _directory() -> Path:
    directory = tempfile.mkdtemp(prefix="flagport-redis-")
    _shared_dirs.append(directory)
    return Path(directory)


def shared_redis() -> RedisServer:
    """One plain ``redis-server`` for the whole session (tests use their own prefix)."""
    server = _shared.get("redis")
    if (
        not isinstance(server, RedisServer)
        or server.process is None
        or server.process.poll() is not None
    ):
        require_tool("redis-server")
        server = RedisServer(_directory()).start()
        _shared["redis"] = server
    return server


def shared_cluster() -> RedisCluster:
    """One local three-node Redis Cluster for the whole session."""
    cluster = _shared.get("cluster")
    if not isinstance(cluster, RedisCluster) or any(
        n.process is None or n.process.poll() is not None for n in cluster.nodes
    ):
        require_tool("redis-server")
        require_tool("redis-cli")
        if isinstance(cluster, RedisCluster):
            cluster.kill()
        cluster = RedisCluster(_directory()).start()
        _shared["cluster"] = cluster
    return cluster


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
