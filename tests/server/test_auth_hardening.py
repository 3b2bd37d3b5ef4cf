"""Auth hardening (issue 13, item 9 and the low items) with the real ``flags serve``.

One server, off loopback and in HTTPS (``--tls-cert/--tls-key``): the CLI talks to it
(trusting the certificate through ``SSL_CERT_FILE``), ``/readyz`` has no cleartext warning;
failed logins are logged (escaped) and rate-limited per client address; 401s name the
scheme; a new token's secret is not cached; the OpenAPI document declares the token schemes;
the SQLite store and the snapshot cache are owner-only. Then ``flags serve`` refusing to
start: a weak admin token off loopback, a token file other users could read or have written,
a TLS key that does not fit. Plain HTTP off loopback is in ``test_auth.py``."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flagport_server.auth import FAILED_LOGIN_LIMIT
from tests.support.server import (
    ADMIN_TOKEN,
    RunningServer,
    flags_executable,
    free_port,
    running_server,
    wait_until,
)
from tests.support.stores import running_as_root
from tests.support.tools import require_tool

FORGED_PATH = "/admin/v1/flags/x%0d%0a2026-01-01 00:00:00,000 WARNING flagport.server: forged%1b[2J"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, by the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    request += ["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    request += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [require_tool("openssl"), *request],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class TlsServer:
    def __init__(self, server: RunningServer, url: str, cert: Path) -> None:
        self.server = server
        self.url = url
        self.cert = cert
        self.trusted = ssl.create_default_context(cafile=str(cert))

    def client(self, address: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
        """A client bound to its own loopback source ``address``: the failure limit is per
        address, so each test counts only its own failures."""
        transport = httpx.HTTPTransport(local_address=address, verify=self.trusted)
        return httpx.Client(base_url=self.url, transport=transport, timeout=10.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp("tls-server")
    cert, key = _self_signed(workdir)
    port = free_port()
    extra = ["--host", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key)]
    extra += ["--snapshot-cache", "snapshot-cache.json"]
    with running_server(workdir, port=port, extra=extra, wait=False) as server:
        live = TlsServer(server, f"https://127.0.0.1:{port}", cert)
        with live.client() as client:

            def ready() -> bool:
                assert server.process.poll() is None, server.log()
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(ready, timeout=30, interval=0.05), server.log()
        yield live


def test_https_off_loopback(tls: TlsServer) -> None:
    with tls.client() as client:
        ready = client.get("/readyz").json()
        assert ready["warnings"] == []  # no cleartext warning: it is HTTPS
        assert client.get("/admin/v1/flags", headers={"X-API-Key": ADMIN_TOKEN}).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(tls.url.replace("https:", "http:") + "/readyz", timeout=2.0)
    assert "Flagport listening on https://0.0.0.0:" in tls.server.log()
    assert "cleartext" not in tls.server.log()

    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    environment.update(SSL_CERT_FILE=str(tls.cert), FLAGPORT_TOKEN=ADMIN_TOKEN)
    status = subprocess.run(
        [flags_executable(), "--url", tls.url, "status"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert f"server      {tls.url}: ok" in status.stdout, status.stdout


def test_failed_logins_are_logged_escaped_and_rate_limited(tls: TlsServer) -> None:
    with (
        tls.client("127.0.0.7", headers={"Authorization": "Bearer fpa_guess"}) as attacker,
        tls.client("127.0.0.7", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as operator,
        tls.client("127.0.0.8", headers={"X-API-Key": "fpa_guess"}) as other,
    ):
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
        # A valid token always passes, whatever its address did (one proxy, many clients),
        # and another address is not limited.
        assert operator.get("/admin/v1/flags").status_code == 200
        assert other.get("/admin/v1/flags").status_code == 401

    log = tls.server.log()
    lines = [line for line in log.splitlines() if "127.0.0.7" in line]
    failures = [line for line in lines if "auth failed: GET /admin/v1/flags/x" in line]
    assert len(failures) == FAILED_LOGIN_LIMIT, lines
    for line in failures:
        assert line.endswith("from 127.0.0.7: unknown or revoked token"), line
        assert "x\\r\\n2026-01-01 00:00:00,000 WARNING flagport.server: forged\\x1b[2J" in line
    summary = [line for line in lines if f"auth failed {FAILED_LOGIN_LIMIT + 1} times" in line]
    assert len(summary) == 1, lines
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())


def test_401_names_the_scheme_and_a_new_secret_is_not_cached(tls: TlsServer) -> None:
    with tls.client() as anonymous:
        for path in ("/admin/v1/flags", "/v1/snapshot", "/v1/evaluate/x?targetingKey=u"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["www-authenticate"] == 'Bearer realm="flagport"', path
    with tls.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        created = admin.post("/admin/v1/tokens", json={"name": "cached-not", "scope": "evaluate"})
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"


def test_openapi_declares_the_token_schemes_as_they_work(tls: TlsServer) -> None:
    with tls.client() as client:
        schema = client.get("/schema/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert (schemes["bearerToken"]["type"], schemes["bearerToken"]["scheme"]) == (
            "http",
            "bearer",
        )
        assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"]) == ("apiKey", "header")
        assert schemes["apiKey"]["name"] == "X-API-Key"
        required = [{"bearerToken": []}, {"apiKey": []}]
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if path.startswith(("/admin/", "/ofrep/", "/v1/")):
                    # Off loopback without --open-evaluation every operation needs a token.
                    assert operation.get("security") == required, (method, path)
                else:
                    assert "security" not in operation, (method, path)
        # Each declared scheme is accepted as declared.
        for headers in ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, {"X-API-Key": ADMIN_TOKEN}):
            assert client.get("/admin/v1/flags", headers=headers).status_code == 200


def test_store_and_snapshot_cache_are_owner_only(tls: TlsServer) -> None:
    workdir = tls.server.workdir
    files = [workdir / name for name in ("flagport.db", "snapshot-cache.json")]
    files += [workdir / f"flagport.db-{suffix}" for suffix in ("wal", "shm")]
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


def test_a_tls_key_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    _, key = _self_signed(tmp_path)
    refused = _serve(
        tmp_path, "--tls-cert", str(key), "--tls-key", str(key), admin_token=ADMIN_TOKEN
    )
    assert refused.returncode == 2, refused
    assert f"--tls-cert {key} with --tls-key {key} cannot be used" in refused.stderr
    assert not (tmp_path / "flagport.db").exists()
