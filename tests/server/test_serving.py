"""How ``flags serve`` holds up: connection limits and timeouts, the open-file limit, host
names, Prometheus directories of crashed servers, and store writes failing under /readyz.

Most tests share one server, started the way an operator could start it: on ``--host
localhost`` (a name, not an address), with a soft open-file limit of 512 it must raise
itself, at most two change streams and a half-second body deadline. The full flood of
idle sockets, slow bodies and streams is ``benchmarks/test_connection_soak.py``.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from flagport import LocalClient
from flagport._connection import KEEPALIVE_EXPIRY
from flagport_cli.main import cli
from flagport_server.serve import (
    METRICS_DIR_PREFIX,
    granian_server,
    metrics_directory,
    worker_connection_limit,
)
from flagport_server.settings import Settings, bind_address
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until

LOW_SOFT_LIMIT = 512
BODY_TIMEOUT = 0.5
MAX_STREAMS = 2
CONTEXT = {"context": {"targetingKey": "user-1"}}


@dataclass
class TemporaryDirectory:
    """The server's temporary directory as it found it at start."""

    path: Path
    crashed: Path  # left by a process killed inside ``metrics_directory()``
    alive: Path  # of a process still inside ``metrics_directory()``
    foreign: Path  # named like ours, made by something else


def _hold_metrics_directory(env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    """A process inside ``metrics_directory()``, as a server is while it runs."""
    code = (
        "import time\n"
        "from flagport_server.serve import metrics_directory\n"
        "with metrics_directory() as directory:\n"
        "    print(directory, flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


@pytest.fixture(scope="module")
def temporary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporaryDirectory]:
    path = tmp_path_factory.mktemp("tmp")
    env = {**os.environ, "TMPDIR": str(path)}
    alive, alive_directory = _hold_metrics_directory(env)
    crashed, crashed_directory = _hold_metrics_directory(env)
    crashed.kill()
    crashed.wait()
    foreign = path / (METRICS_DIR_PREFIX + "made-by-something-else")
    foreign.mkdir()
    try:
        yield TemporaryDirectory(path, crashed_directory, alive_directory, foreign)
    finally:
        alive.kill()
        alive.wait()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, temporary: TemporaryDirectory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("serving")
    assert temporary.crashed.is_dir()  # what a crash leaves
    with running_server(
        workdir,
        env={"TMPDIR": str(temporary.path)},
        seed=PORTAL_FLAGS,
        extra=[
            "--host",
            "localhost",
            "--max-streams",
            str(MAX_STREAMS),
            "--body-timeout",
            str(BODY_TIMEOUT),
        ],
        soft_open_files=LOW_SOFT_LIMIT,
    ) as running:
        yield running


def _port(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        limits[name] = (soft, hard)
    return limits


# -- the open-file limit -----------------------------------------------------------------


def test_serving_process_raises_its_open_file_limit_to_the_hard_limit(
    server: RunningServer,
) -> None:
    with server.client() as client:
        worker = int(client.get("/readyz").json()["worker"])
    soft, hard = _limits(worker)["Max open files"]
    assert soft == hard, f"worker {worker} kept a soft limit of {soft} (hard {hard})"


def test_raise_open_file_limit_needs_no_help_from_granian() -> None:
    # Granian's extension happens to raise the limit when imported (its sysinfo crate does):
    # the server must not depend on that.
    code = (
        "import resource, sys\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (min({LOW_SOFT_LIMIT}, hard), hard))\n"
        "from flagport_server.serve import raise_open_file_limit\n"
        "assert 'granian' not in sys.modules\n"
        "print(raise_open_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    returned, soft, hard = map(int, output)
    assert returned == soft > LOW_SOFT_LIMIT, output
    assert soft == hard or hard == resource.RLIM_INFINITY, output


def test_each_worker_accepts_connections_up_to_just_under_its_open_file_limit() -> None:
    # Past the open-file limit ``accept`` fails at once and granian retries in a busy loop.
    assert worker_connection_limit(1024) == 1024 - 256
    assert worker_connection_limit(20_000) == 20_000 - 256
    assert worker_connection_limit(10_000_000) == 32_768


def test_granian_gets_the_header_timeout_backlog_and_connection_limit() -> None:
    settings = Settings(host="localhost", backlog=4096)
    server = granian_server(settings, log_level="warning", open_files=20_000)
    assert server.http1_settings is not None
    assert server.http1_settings.header_read_timeout == 5_000  # milliseconds
    assert server.backlog == 4096
    assert server.backpressure == worker_connection_limit(20_000)
    assert server.bind_addr == "127.0.0.1"


def test_sdk_clients_drop_idle_connections_before_the_server_closes_them() -> None:
    # Reusing a connection at the moment the server closes it fails the request.
    assert Settings().header_timeout > KEEPALIVE_EXPIRY


# -- host names --------------------------------------------------------------------------


def test_a_host_name_is_resolved_to_the_address_to_listen_on(server: RunningServer) -> None:
    # ``server`` listens on ``--host localhost``.
    assert bind_address("localhost") == "127.0.0.1"
    assert bind_address("::1") == "::1"
    assert bind_address("127.0.0.1") == "127.0.0.1"
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    assert "Flagport listening on http://localhost:" in server.log()


def test_a_host_that_does_not_resolve_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["serve", "--host", "no-such-host.invalid"])
    assert result.exit_code == 2, result.output
    assert "no-such-host.invalid" in result.output
    assert "does not resolve" in result.output
    assert not (tmp_path / ".flagport").exists()  # nothing was set up


# -- the body deadline -------------------------------------------------------------------


def _slow_request(server: RunningServer, head: str, sent: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b"\r\n" + sent)
        answer = _read_answer(sock, timeout=BODY_TIMEOUT + 5)
        return answer, time.monotonic() - started


def test_a_body_not_received_in_time_is_answered_408_and_the_connection_closed(
    server: RunningServer,
) -> None:
    head = (
        "POST /ofrep/v1/evaluate/flags/ui-improvements HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n"
    )
    answer, elapsed = _slow_request(server, head, b'{"context": {')
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert b"connection: close" in rest.lower()
    assert b'"errorCode":"GENERAL"' in rest
    assert b"not received within 0.5 seconds" in rest
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 2


def test_an_admin_body_not_received_in_time_is_a_problem_408(server: RunningServer) -> None:
    head = (
        "PUT /admin/v1/flags/slow HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {server.admin_token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n"
    )
    answer, _ = _slow_request(server, head, b'{"description": ')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"application/problem+json" in answer
    assert b'"title":"Request timeout"' in answer
    with server.admin() as admin:
        assert admin.get("/admin/v1/flags/slow").status_code == 404  # nothing changed


def test_a_body_sent_in_parts_within_the_deadline_is_served(server: RunningServer) -> None:
    body = b'{"context": {"targetingKey": "user-1"}}'
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        sock.sendall(
            b"POST /ofrep/v1/evaluate/flags/ui-improvements HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
        )
        time.sleep(BODY_TIMEOUT / 3)
        sock.sendall(body[10:])
        answer = _read_answer(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


# -- the stream cap ----------------------------------------------------------------------


def _open_stream(stack: ExitStack, server: RunningServer) -> httpx.Response:
    client = stack.enter_context(httpx.Client(base_url=server.url, timeout=5))
    return stack.enter_context(client.stream("GET", "/v1/stream"))


def _hold_every_stream_slot(stack: ExitStack, server: RunningServer) -> None:
    """Open the worker's ``MAX_STREAMS`` streams. A slot frees a moment after its client
    leaves, so the slots of earlier tests' streams are waited for (a leaked slot never
    frees: this then fails)."""
    deadline = time.monotonic() + 5
    held = 0
    while held < MAX_STREAMS:
        attempt = ExitStack()
        if _open_stream(attempt, server).status_code == 200:
            stack.enter_context(attempt)
            held += 1
            continue
        attempt.close()
        assert time.monotonic() < deadline, f"only {held} of {MAX_STREAMS} slots free up"
        time.sleep(0.05)


def _advertises_streams(server: RunningServer) -> bool:
    with server.client() as client:
        answer = client.post("/ofrep/v1/evaluate/flags", json=CONTEXT)
    assert answer.status_code == 200
    return "eventStreams" in answer.json()


def test_over_the_stream_cap_the_stream_answers_503_and_bulk_stops_advertising_it(
    server: RunningServer,
) -> None:
    with ExitStack() as stack:
        _hold_every_stream_slot(stack, server)
        with ExitStack() as extra:
            refused = _open_stream(extra, server)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert "too many change streams" in refused.read().decode()
        assert not _advertises_streams(server)
    # The slots free as their clients leave.
    assert wait_until(lambda: _advertises_streams(server), 5)
    with ExitStack() as stack:
        assert _open_stream(stack, server).status_code == 200


def test_clients_that_leave_before_their_stream_starts_free_their_slots(
    server: RunningServer,
) -> None:
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", _port(server))) as sock:
            sock.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    with ExitStack() as stack:
        _hold_every_stream_slot(stack, server)


def test_local_client_refused_a_stream_polls_the_snapshot(server: RunningServer) -> None:
    with ExitStack() as stack:
        _hold_every_stream_slot(stack, server)
        client = stack.enter_context(
            LocalClient(server.url, initial_backoff=0.05, max_backoff=0.2, report_exposures=False)
        )
        assert client.wait_ready(5)
        before = client.version or 0
        with server.admin() as admin:
            answer = admin.post("/admin/v1/flags/performance-monitoring/enable")
            assert answer.status_code == 200, answer.text
        assert wait_until(lambda: (client.version or 0) > before, 5)
        assert not _advertises_streams(server)  # the client never had a stream


# -- store writes failing ----------------------------------------------------------------


def test_readyz_is_degraded_naming_the_problem_while_the_store_refuses_writes(
    server: RunningServer,
) -> None:
    """A full disk, simulated for the worker alone: a file-size limit of 0 bytes makes every
    write that grows a file fail (SQLite's WAL), while reads go on."""
    with server.client() as client:
        assert client.post("/ofrep/v1/evaluate/flags", json=CONTEXT).status_code == 200
        # Prometheus's files for this worker exist before writes fail.
        assert client.get("/metrics").status_code == 200
        ready = client.get("/readyz").json()
        assert ready["status"] == "ok", ready
        worker = int(ready["worker"])

        def degraded() -> bool:
            return bool(client.get("/readyz").json()["status"] == "degraded")

        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(worker, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        try:
            assert wait_until(degraded, 5)
            ready = client.get("/readyz").json()
        finally:
            resource.prlimit(worker, resource.RLIMIT_FSIZE, unlimited)
        problem = ready["store"]["problem"]
        assert "refuses writes" in problem
        assert str(server.workdir / "flagport.db") in problem  # which store
        assert ready["warnings"][0] == problem
        assert ready["store"]["ok"] is True  # it can still be read: evaluations go on
        assert client.post("/ofrep/v1/evaluate/flags", json=CONTEXT).status_code == 200
        assert wait_until(lambda: client.get("/readyz").json()["status"] == "ok", 5)


# -- Prometheus directories of crashed servers -------------------------------------------


def test_metrics_directories_of_crashed_servers_are_removed_at_the_next_start(
    server: RunningServer, temporary: TemporaryDirectory
) -> None:
    left = {p.name for p in temporary.path.iterdir()}
    assert temporary.crashed.name not in left
    assert temporary.alive.name in left  # locked by a running process
    assert temporary.foreign.name in left  # not made by this code: not ours to judge
    own = left - {temporary.alive.name, temporary.foreign.name}
    assert len(own) == 1  # the server's, while it runs
    assert own.pop().startswith(METRICS_DIR_PREFIX)


def test_metrics_directory_is_removed_on_a_clean_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with metrics_directory() as directory:
        assert Path(directory).is_dir()
    assert list(tmp_path.iterdir()) == []
