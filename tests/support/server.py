"""Real Flagport servers for tests: ``flags serve`` in a subprocess on a free port.

    with running_server(tmp_path, workers=2) as server:
        httpx.post(server.url + "/ofrep/v1/evaluate/flags/x", json={...})

Each server gets its own working directory (SQLite store, token file) and a known admin
token. Output goes to ``server.log_path`` and is printed when startup fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.tools import REPO_ROOT

__all__ = [
    "ADMIN_TOKEN",
    "PORTAL_FLAGS",
    "RunningServer",
    "flags_executable",
    "free_port",
    "running_server",
    "wait_until",
]

ADMIN_TOKEN = "fpa_test_admin_token_0123456789abcdef"  # 32+ characters: non-loopback binds
PORTAL_FLAGS = REPO_ROOT / "examples" / "portal-flags.yaml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def flags_executable() -> str:
    return str(Path(sys.executable).parent / "flags")


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


@dataclass
class RunningServer:
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_token: str = ADMIN_TOKEN
    uds: str | None = None
    args: list[str] = field(default_factory=list)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def client(self, **kwargs: object) -> httpx.Client:
        if self.uds:
            transport = httpx.HTTPTransport(uds=self.uds)
            return httpx.Client(base_url="http://flagport", transport=transport, **kwargs)  # type: ignore[arg-type]
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def admin(self, **kwargs: object) -> httpx.Client:
        return self.client(headers=self.admin_headers, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Whatever the main process left behind (a worker that missed the signal) goes too:
        # a test must never leave a server running.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group (granian's main process and its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _with_soft_open_file_limit(limit: int, args: list[str]) -> list[str]:
    """``args`` run with this soft limit on open files (a login shell's is often 1,024)."""
    code = (
        "import os, resource, sys\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(sys.argv[1]), hard), hard))\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    return [sys.executable, "-c", code, str(limit), *args]


def start_server(
    workdir: Path,
    *,
    workers: int = 1,
    seed: Path | None = None,
    store: str | None = None,
    extra: Sequence[str] = (),
    uds: bool = False,
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
    soft_open_files: int | None = None,
) -> RunningServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [flags_executable(), "serve", "--workers", str(workers), "--log-level", "warning"]
    socket_path = None
    if uds:
        socket_path = str(workdir / "flagport.sock")
        args += ["--uds", socket_path]
    else:
        args += ["--port", str(port)]
    args += ["--store", store or f"sqlite:///{workdir / 'flagport.db'}"]
    if seed is not None:
        args += ["--seed", str(seed)]
    args += list(extra)
    if soft_open_files is not None:
        args = _with_soft_open_file_limit(soft_open_files, args)
    log_path = workdir / "server.log"
    environment = {**os.environ, "FLAGPORT_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    server = RunningServer(
        url=f"http://127.0.0.1:{port}",
        workdir=workdir,
        process=process,
        log_path=log_path,
        uds=socket_path,
        args=args,
    )
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: RunningServer, timeout: float = 20.0, workers: int | None = None) -> None:
    def ready() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        if server.uds and not os.path.exists(server.uds):
            return False
        try:
            with server.client(timeout=1.0) as client:
                return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(ready, timeout, 0.05):
        server.kill()
        raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def running_server(workdir: Path, **kwargs: object) -> Iterator[RunningServer]:
    server = start_server(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
        if server.process.poll() is None:
            server.kill()
