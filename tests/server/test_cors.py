"""CORS for the evaluation surface only (``flags serve --cors-origin``; docs/spec.md section 4),
with the real server: preflights of allowed origins on OFREP single and bulk, ``GET
/v1/evaluate`` and the change stream; ``ETag``, ``Retry-After`` and ``X-Flagport-Snapshot``
exposed; nothing else cross-origin, and nothing for an origin not allowed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flagport_server.cors import ALLOWED_HEADERS, EXPOSED_HEADERS, PREFLIGHT_MAX_AGE_S, valid_origin
from tests.server._fixtures import create_flags
from tests.support.server import RunningServer, flags_executable, free_port, running_server

PORTAL = "https://portal.example"
DEV = "http://localhost:3000"
KEY = "banner"
BODY = {"context": {"targetingKey": "u1"}}
EVALUATION = [
    ("POST", f"/ofrep/v1/evaluate/flags/{KEY}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", f"/v1/evaluate/{KEY}"),
    ("GET", "/v1/stream"),
]
NEVER_CROSS_ORIGIN = [
    ("GET", "/v1/snapshot"),
    ("POST", "/v1/exposures"),
    ("POST", "/v1/outcomes"),
    ("GET", "/admin/v1/flags"),
    ("POST", f"/admin/v1/flags/{KEY}/disable"),
    ("GET", "/healthz"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("cors")
    extra = ["--cors-origin", PORTAL, "--cors-origin", DEV]
    with running_server(workdir, extra=extra) as running:
        create_flags(running, {KEY: {"enabled": True}})
        yield running


def _preflight(client: httpx.Client, method: str, path: str, origin: str) -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, authorization, if-none-match",
        },
    )


def _cors_headers(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize(("method", "path"), EVALUATION)
@pytest.mark.parametrize("origin", [PORTAL, DEV])
def test_a_preflight_of_an_allowed_origin_on_the_evaluation_surface(
    server: RunningServer, method: str, path: str, origin: str
) -> None:
    with server.client(timeout=5.0) as client:
        answer = _preflight(client, method, path, origin)
    assert answer.status_code == 204, answer.text
    assert _cors_headers(answer) == {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": method,
        "access-control-allow-headers": ALLOWED_HEADERS,
        "access-control-max-age": str(PREFLIGHT_MAX_AGE_S),
    }
    assert answer.headers["vary"] == "Origin"
    for header in ("Content-Type", "Authorization", "X-API-Key", "If-None-Match"):
        assert header in answer.headers["access-control-allow-headers"]


@pytest.mark.parametrize(("method", "path"), EVALUATION + NEVER_CROSS_ORIGIN)
@pytest.mark.parametrize("origin", ["https://evil.example", "https://portal.example.evil", "null"])
def test_an_origin_not_allowed_gets_no_cors_headers(
    server: RunningServer, method: str, path: str, origin: str
) -> None:
    with server.client(timeout=5.0) as client:
        assert _cors_headers(_preflight(client, method, path, origin)) == {}


@pytest.mark.parametrize(("method", "path"), NEVER_CROSS_ORIGIN)
def test_nothing_but_the_evaluation_surface_answers_cross_origin(
    server: RunningServer, method: str, path: str
) -> None:
    with server.admin(timeout=5.0) as client:
        before = client.get("/admin/v1/audit").json()
        assert _cors_headers(_preflight(client, method, path, PORTAL)) == {}
        if method == "GET":
            answer = client.get(path, headers={"Origin": PORTAL})
            assert answer.status_code == 200, answer.text
            assert _cors_headers(answer) == {}
        assert client.get("/admin/v1/audit").json() == before


def test_answers_to_an_allowed_origin_expose_etag_and_the_snapshot(server: RunningServer) -> None:
    origin = {"Origin": PORTAL}
    with server.client(timeout=5.0) as client:
        bulk = client.post("/ofrep/v1/evaluate/flags", json=BODY, headers=origin)
        assert bulk.status_code == 200, bulk.text
        assert bulk.headers["access-control-allow-origin"] == PORTAL
        assert bulk.headers["access-control-expose-headers"] == EXPOSED_HEADERS
        assert bulk.headers["vary"] == "Origin"
        etag = bulk.headers["etag"]
        again = client.post(
            "/ofrep/v1/evaluate/flags", json=BODY, headers={**origin, "If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.headers["access-control-allow-origin"] == PORTAL
        assert "ETag" in again.headers["access-control-expose-headers"]
        for answer in (
            client.post(f"/ofrep/v1/evaluate/flags/{KEY}", json=BODY, headers=origin),
            client.get(f"/v1/evaluate/{KEY}?targetingKey=u1", headers=origin),
            client.post("/ofrep/v1/evaluate/flags/no-such-flag", json=BODY, headers=origin),
        ):
            assert answer.headers["access-control-allow-origin"] == PORTAL, answer.text
            assert answer.headers["x-flagport-snapshot"]
        with client.stream("GET", "/v1/stream", headers=origin) as stream:
            assert stream.status_code == 200
            assert stream.headers["access-control-allow-origin"] == PORTAL
        same_origin = client.post("/ofrep/v1/evaluate/flags", json=BODY)
        assert _cors_headers(same_origin) == {}


def test_any_origin(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, extra=["--cors-origin", "*"]) as running,
        running.client(timeout=5.0) as client,
    ):
        answer = _preflight(client, "POST", "/ofrep/v1/evaluate/flags", "https://any.example")
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "vary" not in answer.headers
        assert _cors_headers(_preflight(client, "GET", "/v1/snapshot", "https://a.b")) == {}


def test_without_cors_origins_nothing_answers_cross_origin(tmp_path: Path) -> None:
    with running_server(tmp_path) as running, running.client(timeout=5.0) as client:
        for method, path in EVALUATION:
            assert _cors_headers(_preflight(client, method, path, PORTAL)) == {}


NOT_ORIGINS = [
    "https://portal.example/",
    "https://portal.example/app",
    "portal.example",
    "ftp://portal.example",
    "https://user@portal.example",
    "https://portal.example?x",
    "https://portal.example:99999",
    "",
]


@pytest.mark.parametrize("origin", NOT_ORIGINS)
def test_what_is_not_an_origin(origin: str) -> None:
    assert valid_origin(origin) is None


def test_a_cors_origin_that_is_not_an_origin_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [flags_executable(), "serve", "--port", str(free_port()), "--cors-origin", NOT_ORIGINS[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--cors-origin" in result.stderr
    assert "not an origin" in result.stderr
    assert not (tmp_path / "flagport.db").exists()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("HTTPS://Portal.Example:443", "https://portal.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("*", "*"),
    ],
)
def test_origins_are_kept_as_browsers_send_them(given: str, kept: str) -> None:
    assert valid_origin(given) == kept
