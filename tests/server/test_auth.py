"""Auth bootstrap (docs/spec.md section 5) with the real ``flags serve``: a non-loopback bind
without an admin token refuses to start; a loopback bind generates one, prints it once and
keeps it in ``./.flagport/admin-token`` (0600); evaluation needs tokens off loopback."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.support.server import (
    RunningServer,
    flags_executable,
    free_port,
    running_server,
    wait_ready,
)


def _env_without_admin_token() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("FLAGPORT_ADMIN_TOKEN", "FLAGPORT_TOKEN")
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def test_non_loopback_without_admin_token_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            flags_executable(),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--store",
            f"sqlite:///{tmp_path / 'f.db'}",
        ],
        cwd=tmp_path,
        env=_env_without_admin_token(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "FLAGPORT_ADMIN_TOKEN" in result.stderr
    assert not (tmp_path / ".flagport").exists()
    assert not (tmp_path / "f.db").exists()


def _serve_loopback(workdir: Path) -> RunningServer:
    port = free_port()
    log_path = workdir / "server.log"
    args = [
        flags_executable(),
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--store",
        f"sqlite:///{workdir / 'flagport.db'}",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env_without_admin_token(),
            start_new_session=True,
        )
    server = RunningServer(
        url=f"http://127.0.0.1:{port}",
        workdir=workdir,
        process=process,
        log_path=log_path,
        args=args,
    )
    wait_ready(server)
    return server


def test_loopback_generates_token_file_and_prints_it_once(tmp_path: Path) -> None:
    server = _serve_loopback(tmp_path)
    try:
        token_file = tmp_path / ".flagport" / "admin-token"
        assert token_file.exists()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert server.log().count(token) == 1
        with server.client(timeout=10.0) as client:
            assert client.get("/admin/v1/flags").status_code == 401
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/admin/v1/flags", headers=headers).status_code == 200
            # Evaluation is open on loopback.
            created = client.post("/admin/v1/flags", headers=headers, json={"key": "x"})
            assert created.status_code == 201
            answer = client.post(
                "/ofrep/v1/evaluate/flags/x", json={"context": {"targetingKey": "u"}}
            )
            assert answer.status_code == 200
    finally:
        server.stop()
    # A restart reuses the file and does not print the secret again.
    server = _serve_loopback(tmp_path)
    try:
        assert (tmp_path / ".flagport" / "admin-token").read_text().strip() == token
        assert server.log().count(token) == 1
        with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.get("/admin/v1/flags/x").status_code == 200
    finally:
        server.stop()


def test_non_loopback_needs_evaluation_tokens(tmp_path: Path) -> None:
    with running_server(tmp_path, extra=["--host", "0.0.0.0"]) as server:
        with server.admin(timeout=10.0) as admin:
            assert admin.post("/admin/v1/flags", json={"key": "x"}).status_code == 201
            secret = admin.post(
                "/admin/v1/tokens", json={"name": "portal", "scope": "evaluate"}
            ).json()["secret"]
        body = {"context": {"targetingKey": "u"}}
        with server.client(timeout=10.0) as client:
            anonymous = client.post("/ofrep/v1/evaluate/flags/x", json=body)
            assert anonymous.status_code == 401
            assert client.get("/v1/evaluate/x?targetingKey=u").status_code == 401
            assert client.post("/ofrep/v1/evaluate/flags", json=body).status_code == 401
            for headers in ({"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
                answer = client.post("/ofrep/v1/evaluate/flags/x", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
            wrong = client.post(
                "/ofrep/v1/evaluate/flags/x", json=body, headers={"X-API-Key": "nope"}
            )
            assert wrong.status_code == 401
            # Operations need no token.
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 200
        # Plain HTTP off loopback: tokens travel in cleartext, said in /readyz and the log.
        cleartext = "tokens travel in cleartext: 0.0.0.0:"
        assert any(w.startswith(cleartext) for w in ready.json()["warnings"]), ready.json()
        assert f"WARNING flagport.server: {cleartext}" in server.log()


def test_require_eval_token_on_loopback(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, extra=["--require-eval-token"]) as server,
        server.client(timeout=10.0) as client,
    ):
        answer = client.post("/ofrep/v1/evaluate/flags/x", json={"context": {"targetingKey": "u"}})
        assert answer.status_code == 401
        with_admin = client.post(
            "/ofrep/v1/evaluate/flags/x",
            json={"context": {"targetingKey": "u"}},
            headers=server.admin_headers,
        )
        assert with_admin.status_code == 404  # authorized; the flag does not exist
        assert with_admin.json()["errorCode"] == "FLAG_NOT_FOUND"
