"""TLS (issue 13, item 9): ``flags serve --tls-cert/--tls-key`` serves HTTPS, the CLI talks to
it (trusting the certificate through ``SSL_CERT_FILE``), and a non-loopback HTTPS bind has no
cleartext warning, while ``--open-evaluation`` there is warned in the log and ``/readyz``.
The plain-HTTP non-loopback case is in ``test_auth.py``."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.server import (
    ADMIN_TOKEN,
    flags_executable,
    free_port,
    running_server,
    wait_until,
)
from tests.support.tools import require_tool


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, by the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            require_tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_https_with_tls_cert_and_key(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    extra = ["--host", "0.0.0.0", "--open-evaluation", "--tls-cert", str(cert)]
    extra += ["--tls-key", str(key)]
    # The helper waits for /readyz over plain HTTP: start without waiting, then ask in TLS.
    with running_server(tmp_path / "server", port=port, extra=extra, wait=False) as server:
        url = f"https://127.0.0.1:{port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trusted, timeout=2.0) as client:

            def answers() -> bool:
                assert server.process.poll() is None, server.log()
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(answers, timeout=30, interval=0.05), server.log()
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            warnings = ready.json()["warnings"]
            assert warnings == [
                "evaluation is open to anyone who can reach this non-loopback address"
            ]
            flags = client.get("/admin/v1/flags", headers={"X-API-Key": ADMIN_TOKEN})
            assert flags.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0)
        assert "Flagport listening on https://0.0.0.0:" in server.log()
        assert "WARNING flagport.server: evaluation is open to anyone" in server.log()
        assert "cleartext" not in server.log()

        environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
        environment.update(SSL_CERT_FILE=str(cert), FLAGPORT_TOKEN=ADMIN_TOKEN)
        listed = subprocess.run(
            [flags_executable(), "--url", url, "status"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert f"server      {url}: ok" in listed.stdout, listed.stdout


def test_a_key_that_does_not_fit_is_refused_before_starting(tmp_path: Path) -> None:
    _, key = _self_signed(tmp_path)
    environment = {**os.environ, "FLAGPORT_ADMIN_TOKEN": ADMIN_TOKEN}
    store = f"sqlite:///{tmp_path / 'flagport.db'}"
    tls = ["--tls-cert", str(key), "--tls-key", str(key)]  # a key is no certificate
    refused = subprocess.run(
        [flags_executable(), "serve", "--port", str(free_port()), "--store", store, *tls],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2, refused
    assert f"--tls-cert {key} with --tls-key {key} cannot be used" in refused.stderr
    assert not (tmp_path / "flagport.db").exists()
