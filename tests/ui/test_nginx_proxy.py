"""The README's Nginx set-up, run as written: Debian's nginx terminating TLS (a self-signed
certificate) in front of an admin instance bound to loopback. Sign-in works over HTTPS with a
``Secure`` cookie (the proxy's ``X-Forwarded-Proto`` is trusted), the UI and the admin API pass,
and the evaluation surface is not reachable through the proxy."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import PORTAL_FLAGS, RunningServer, free_port, running_server, wait_until
from tests.support.tools import REPO_ROOT, require_tool

NAME = "flags.portal.example"


def _readme_server_block() -> str:
    """The README's nginx server blocks for the admin instance, verbatim."""
    readme = (REPO_ROOT / "README.md").read_text()
    anchor = readme.index(f"ssl_certificate     /etc/ssl/{NAME}.pem")
    start = readme.rindex("```nginx", 0, anchor) + len("```nginx")
    return readme[start : readme.index("```", start)]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    nginx = require_tool("nginx")
    openssl = require_tool("openssl")
    key, certificate = tmp_path / "k.key", tmp_path / "c.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={NAME}", "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    extra = ["--trusted-proxy", "127.0.0.1", "--public-url", f"https://{NAME}"]
    extra += ["--allowed-host", NAME, "--require-eval-token"]
    with running_server(tmp_path / "server", seed=PORTAL_FLAGS, extra=extra) as server:
        https, http = free_port(), free_port()
        block = (
            _readme_server_block()
            .replace(f"/etc/ssl/{NAME}.pem", str(tmp_path / "c.pem"))
            .replace(f"/etc/ssl/{NAME}.key", str(tmp_path / "k.key"))
            .replace("listen 443 ssl", f"listen 127.0.0.1:{https} ssl")
            .replace("listen 80;", f"listen 127.0.0.1:{http};")
            .replace("127.0.0.1:8787", server.url.removeprefix("http://"))
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
            "events {}\n"
            f"http {{ access_log off; client_body_temp_path {tmp_path}; "
            f"proxy_temp_path {tmp_path};\n{block}\n}}\n"
        )
        process = subprocess.Popen([nginx, "-c", str(conf)], stderr=subprocess.PIPE)
        base = f"https://127.0.0.1:{https}"

        def up() -> bool:
            try:
                httpx.get(base + "/ui/sign-in", verify=False, timeout=1)
                return True
            except httpx.HTTPError:
                return False

        try:
            assert wait_until(up, 10, 0.1), (tmp_path / "error.log").read_text()
            yield server, base
        finally:
            process.send_signal(signal.SIGQUIT)
            process.wait(10)


def test_the_readme_nginx_setup_serves_the_ui_over_tls(
    proxied: tuple[RunningServer, str],
) -> None:
    server, base = proxied
    # A self-signed certificate: the test checks the proxying, not the PKI.
    with httpx.Client(base_url=base, headers={"Host": NAME}, verify=False) as client:
        page = client.get("/ui/sign-in")
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]*)"', page.text)
        assert csrf is not None
        signed = client.post(
            "/ui/sign-in",
            data={"token": server.admin_token, "csrf": csrf.group(1), "next": "/ui/flags"},
        )
        assert signed.status_code == 303, signed.text
        assert "secure" in signed.headers["set-cookie"].lower()
        assert client.get("/ui/flags").status_code == 200
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        assert client.get("/admin/v1/flags", headers=admin).status_code == 200
        # The evaluation surface stays on loopback: the proxy does not pass it.
        evaluated = client.post(
            "/ofrep/v1/evaluate/flags/ui-improvements", json={"context": {}}, headers=admin
        )
        assert evaluated.status_code == 404
        assert "x-flagport-worker" not in evaluated.headers
