"""Auth hardening (issue 13, low items) with the real ``flags serve``: failed logins logged
(escaped) and rate-limited per client address, 401s that name the scheme, no caching of a
new token's secret, the token schemes in the OpenAPI document, owner-only files (SQLite
store, snapshot cache), and ``flags serve`` refusing a weak admin token off loopback or a
token file other users could read or have written."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flagport_server.auth import FAILED_LOGIN_LIMIT
from tests.server._fixtures import live_server
from tests.support.server import ADMIN_TOKEN, RunningServer, flags_executable, free_port
from tests.support.stores import running_as_root

server = live_server(extra=("--require-eval-token", "--snapshot-cache", "snapshot-cache.json"))

FORGED_PATH = "/admin/v1/flags/x%0d%0a2026-01-01 00:00:00,000 WARNING flagport.server: forged%1b[2J"


@pytest.fixture
def from_address(server: RunningServer) -> Iterator[object]:
    """Clients bound to their own loopback source address: the failure limit is per address,
    so each test counts only its own failures."""
    made: list[httpx.Client] = []

    def client(address: str, **kwargs: object) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        opened = httpx.Client(base_url=server.url, transport=transport, timeout=10.0, **kwargs)  # type: ignore[arg-type]
        made.append(opened)
        return opened

    yield client
    for opened in made:
        opened.close()


def test_failed_logins_are_logged_escaped_and_rate_limited(
    server: RunningServer, from_address: object
) -> None:
    attacker = from_address("127.0.0.7", headers={"Authorization": "Bearer fpa_guess"})  # type: ignore[operator]
    for _ in range(FAILED_LOGIN_LIMIT):
        refused = attacker.get(FORGED_PATH)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    limited = attacker.get("/admin/v1/flags")
    assert limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["status"] == 429
    evaluation = attacker.get("/v1/evaluate/x", params={"targetingKey": "u"})
    assert evaluation.status_code == 429
    assert evaluation.json()["errorCode"] == "GENERAL"
    assert "retry-after" in evaluation.headers
    # A valid token always passes, whatever its address did (one proxy, many clients)...
    operator = from_address("127.0.0.7", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # type: ignore[operator]
    assert operator.get("/admin/v1/flags").status_code == 200
    # ... and another address is not limited.
    other = from_address("127.0.0.8", headers={"X-API-Key": "fpa_guess"})  # type: ignore[operator]
    assert other.get("/admin/v1/flags").status_code == 401

    lines = [line for line in server.log().splitlines() if "127.0.0.7" in line]
    failures = [line for line in lines if "auth failed: GET /admin/v1/flags/x" in line]
    assert len(failures) == FAILED_LOGIN_LIMIT, lines
    for line in failures:
        assert line.endswith("from 127.0.0.7: unknown or revoked token"), line
        assert "x\\r\\n2026-01-01 00:00:00,000 WARNING flagport.server: forged\\x1b[2J" in line
    summary = [line for line in lines if f"auth failed {FAILED_LOGIN_LIMIT + 1} times" in line]
    assert len(summary) == 1, lines
    assert not any(line.startswith("2026-01-01") for line in server.log().splitlines())


def test_401_names_the_scheme_and_a_new_secret_is_not_cached(server: RunningServer) -> None:
    with server.client(timeout=10.0) as anonymous:
        for path in ("/admin/v1/flags", "/v1/snapshot", "/v1/evaluate/x?targetingKey=u"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["www-authenticate"] == 'Bearer realm="flagport"', path
    with server.admin(timeout=10.0) as admin:
        created = admin.post("/admin/v1/tokens", json={"name": "cached-not", "scope": "evaluate"})
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"


def test_openapi_declares_the_token_schemes_as_they_work(server: RunningServer) -> None:
    with server.client(timeout=10.0) as client:
        schema = client.get("/schema/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["bearerToken"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["bearerToken"]["description"],
        }
        assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"]) == ("apiKey", "header")
        assert schemes["apiKey"]["name"] == "X-API-Key"
        required = [{"bearerToken": []}, {"apiKey": []}]
        paths = schema["paths"]
        for path, operations in paths.items():
            for method, operation in operations.items():
                if path.startswith(("/admin/", "/ofrep/", "/v1/")):
                    # This server requires evaluation tokens: every operation needs one.
                    assert operation.get("security") == required, (method, path)
                else:
                    assert "security" not in operation, (method, path)
        # Each declared scheme is accepted as declared.
        for headers in ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, {"X-API-Key": ADMIN_TOKEN}):
            assert client.get("/admin/v1/flags", headers=headers).status_code == 200


def test_store_and_snapshot_cache_are_owner_only(server: RunningServer) -> None:
    files = [server.workdir / name for name in ("flagport.db", "snapshot-cache.json")]
    files += [server.workdir / f"flagport.db-{suffix}" for suffix in ("wal", "shm")]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- flags serve refuses to start ------------------------------------------------------------


def _serve(
    workdir: Path, *args: str, admin_token: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if admin_token is not None:
        environment["FLAGPORT_ADMIN_TOKEN"] = admin_token
    store = f"sqlite:///{workdir / 'flagport.db'}"
    return subprocess.run(
        [flags_executable(), "serve", "--port", str(free_port()), "--store", store, *args],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_weak_admin_token_is_refused_off_loopback(tmp_path: Path) -> None:
    refused = _serve(tmp_path, "--host", "0.0.0.0", admin_token="x" * 31)
    assert refused.returncode == 2, refused
    assert "FLAGPORT_ADMIN_TOKEN has 31 characters" in refused.stderr
    assert "at least 32" in refused.stderr
    assert not (tmp_path / "flagport.db").exists()


def test_a_token_file_others_could_read_or_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / ".flagport"
    directory.mkdir(mode=0o700)
    token_file = directory / "admin-token"
    token_file.write_text("fpa_planted_or_leaked_0123456789\n")
    token_file.chmod(0o644)
    refused = _serve(tmp_path)
    assert refused.returncode == 2, refused
    assert "mode is 0644" in refused.stderr
    assert "chmod 600" in refused.stderr
    assert "fpa_planted" not in refused.stderr + refused.stdout

    token_file.chmod(0o600)
    directory.chmod(0o777)
    refused = _serve(tmp_path)
    assert refused.returncode == 2, refused
    assert "mode is 0777" in refused.stderr
    assert "swap the token file" in refused.stderr

    if running_as_root():  # only root can give a file away
        directory.chmod(0o700)
        os.chown(token_file, 65534, 65534)
        refused = _serve(tmp_path)
        assert refused.returncode == 2, refused
        assert "belongs to uid 65534" in refused.stderr
    assert not (tmp_path / "flagport.db").exists()
