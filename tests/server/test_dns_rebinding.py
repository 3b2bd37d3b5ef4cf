"""DNS rebinding (docs/spec.md section 5) with the real ``flags serve``: on a TCP loopback bind a
request without a valid token must name the server (localhost, 127.0.0.1, [::1] or an
``--allowed-host``); any other ``Host`` gets 421 and reaches nothing. Token-bearing requests,
Unix-socket clients and non-loopback binds are not affected."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flagport_server.host_check import host_name, valid_allowed_host
from tests.server._fixtures import create_flags
from tests.support.server import (
    ADMIN_TOKEN,
    RunningServer,
    flags_executable,
    free_port,
    running_server,
)

KEY = "secret-rollout"
BODY = {"context": {"targetingKey": "u1"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("rebinding")
    with running_server(workdir, extra=["--allowed-host", "Flags.Internal"]) as running:
        create_flags(running, {KEY: {"enabled": True, "description": "do not leak"}})
        yield running


def _probe(client: httpx.Client, host: str, headers: dict[str, str] | None = None) -> list[int]:
    sent = {"Host": host, **(headers or {})}
    return [
        client.get("/v1/snapshot", headers=sent).status_code,
        client.post(f"/ofrep/v1/evaluate/flags/{KEY}", json=BODY, headers=sent).status_code,
        client.get("/readyz", headers=sent).status_code,
        client.get("/metrics", headers=sent).status_code,
    ]


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.2", "localhost.evil.example", "[::2]"],
)
def test_a_tokenless_request_naming_another_host_is_refused(
    server: RunningServer, host: str
) -> None:
    port = server.url.rsplit(":", 1)[1]
    with server.client(timeout=10.0) as client:
        assert _probe(client, host.format(port=port)) == [421] * 4
        problem = client.get("/v1/snapshot", headers={"Host": host.format(port=port)})
        assert problem.headers["content-type"] == "application/problem+json"
        assert "DNS rebinding" in problem.json()["detail"]
        assert KEY not in problem.text
        ofrep = client.post(f"/ofrep/v1/evaluate/flags/{KEY}", json=BODY, headers={"Host": host})
        assert ofrep.json()["errorCode"] == "GENERAL"
        assert "--allowed-host" in ofrep.json()["errorDetails"]


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:{port}",
        "LocalHost",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "[::1]",
        "flags.internal",
        "FLAGS.INTERNAL:{port}",
    ],
)
def test_the_servers_own_names_pass(server: RunningServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    with server.client(timeout=10.0) as client:
        assert _probe(client, host.format(port=port)) == [200] * 4


def test_a_valid_token_passes_whatever_the_host(server: RunningServer) -> None:
    with server.admin(timeout=10.0) as admin:
        made = admin.post("/admin/v1/tokens", json={"name": "rebind-sdk", "scope": "sdk"})
        sdk = made.json()["secret"]
    with server.client(timeout=10.0) as client:
        assert _probe(client, "evil.example", {"Authorization": f"Bearer {sdk}"}) == [200] * 4
        assert _probe(client, "evil.example", {"X-API-Key": sdk}) == [200] * 4
        admin_path = client.get(
            "/admin/v1/flags", headers={"Host": "evil.example", "X-API-Key": ADMIN_TOKEN}
        )
        assert admin_path.status_code == 200
        # A made-up token is no token.
        assert _probe(client, "evil.example", {"Authorization": "Bearer fps_guess"}) == [421] * 4


def test_unix_socket_clients_are_not_affected(tmp_path: Path) -> None:
    with running_server(tmp_path, uds=True) as running, running.client(timeout=10.0) as client:
        create_flags(running, {KEY: {"enabled": True}})
        for host in ("flagport", "evil.example"):
            assert _probe(client, host) == [200] * 4


def test_a_non_loopback_bind_is_not_affected(tmp_path: Path) -> None:
    extra = ["--host", "0.0.0.0", "--open-evaluation"]
    with running_server(tmp_path, extra=extra) as running, running.client(timeout=10.0) as client:
        create_flags(running, {KEY: {"enabled": True}})
        answer = client.post(
            f"/ofrep/v1/evaluate/flags/{KEY}", json=BODY, headers={"Host": "flags.example.com"}
        )
        assert answer.status_code == 200, answer.text


NOT_HOST_NAMES = [
    "http://flags.internal",
    "flags.internal:8787",
    "a/b",
    "",
    "bad_name",
    "-x.example",
]


@pytest.mark.parametrize("name", NOT_HOST_NAMES)
def test_what_is_not_a_host_name(name: str) -> None:
    assert valid_allowed_host(name) is None


def test_an_allowed_host_that_is_not_a_host_name_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [flags_executable(), "serve", "--port", str(free_port()), "--allowed-host", "a/b"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--allowed-host" in result.stderr
    assert "not a host name" in result.stderr
    assert not (tmp_path / "flagport.db").exists()


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8787", "localhost"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8787", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("::1", "::1"),  # not a valid Host (an IPv6 address needs brackets): matches nothing
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Flags.Internal", "flags.internal"),
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_valid_allowed_host(given: str, kept: str) -> None:
    assert valid_allowed_host(given) == kept
