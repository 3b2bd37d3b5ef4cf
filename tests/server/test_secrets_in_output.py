"""Secrets never reach output (issue 13, item 4): the store URL's passwords stay out of the
``flags serve`` start-up line, out of every error about the URL (``sentinel_password`` too),
and out of ``/readyz``, which also shows no redis-py client repr."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.errors import InvalidInput
from flagport_server.settings import Settings
from flagport_server.stores import open_store, redact_store_url
from flagport_server.stores.redis import parse_redis_url
from tests.support.server import ADMIN_TOKEN, flags_executable, free_port, wait_until

SECRETS = ("topsecret", "sentsecret")


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:topsecret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:topsecret@h/0", "redis://user:***@h/0"),
        ("redis://topsecret@h/0", "redis://***@h/0"),  # read as a password, so hidden
        ("redis://:top@secret/x@h/0", "redis://:***@h/0"),  # unescaped @ and / in it
        (
            "redis+sentinel://:topsecret@h1,h2/svc/0?prefix=p&sentinel_password=sentsecret",
            "redis+sentinel://:***@h1,h2/svc/0?prefix=p&sentinel_password=***",
        ),
        ("rediss://h/0?ssl_ca_certs=/ca.pem", "rediss://h/0?ssl_ca_certs=/ca.pem"),
        ("sqlite:///./flagport.db", "sqlite:///./flagport.db"),
        (":topsecret@h:6379", "***"),  # no scheme: nothing of it is shown
    ],
)
def test_redact_store_url(url: str, shown: str) -> None:
    assert redact_store_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://:topsecret@h:6379/0?sentinel_password=sentsecret&colour=blue",
        "redis+sentinel://:topsecret@h1:26379/svc/zero?sentinel_password=sentsecret",
        "redis://h/0?sentinel_password=sentsecret&ssl_ca_certs=/ca.pem",
        "sqlite://:topsecret@host/x.db?sentinel_password=sentsecret",
        "sqlite:///x.db?sentinel_password=sentsecret",
        "mysql://:topsecret@h/0?sentinel_password=sentsecret",
        ":topsecret@h/0?sentinel_password=sentsecret",
    ],
)
def test_store_url_errors_name_no_password(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        open_store(url)
    assert _leaks(str(caught.value)) == [], str(caught.value)
    assert caught.value.path == "store_url"


def test_reprs_show_no_secret() -> None:
    url = "redis+sentinel://:topsecret@h1/svc/0?sentinel_password=sentsecret"
    assert _leaks(repr(parse_redis_url(url))) == []
    assert _leaks(repr(open_store(url))) == []
    settings = Settings(store_url=url, admin_token="fpa_" + "topsecret" * 4)
    assert _leaks(repr(settings)) == []


def test_readyz_with_an_unreachable_sentinel_names_addresses_only(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    url = (
        f"redis+sentinel://:topsecret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/svc/0"
        "?sentinel_password=sentsecret"
    )
    settings = Settings(store_url=url, admin_token=ADMIN_TOKEN, stats=False)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    problem = answer.json()["store"]["problem"]
    assert _leaks(answer.text) == []
    assert "<redis." not in problem, problem
    assert "ConnectionPool" not in problem, problem
    for port in ports:
        assert f"127.0.0.1:{port}" in problem, problem


def _serve(tmp_path: Path, store: str, *args: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "FLAGPORT_ADMIN_TOKEN": ADMIN_TOKEN}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with (tmp_path / "server.log").open("wb") as log:
        return subprocess.Popen(
            [flags_executable(), "serve", "--port", str(free_port()), "--store", store, *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )


def test_serve_start_up_output_hides_the_passwords(tmp_path: Path) -> None:
    url = f"redis://:topsecret@127.0.0.1:{free_port()}/0?sentinel_password=sentsecret"
    # Off loopback with open evaluation: the start-up output also warns of both, in the log.
    process = _serve(tmp_path, url, "--host", "0.0.0.0", "--open-evaluation")
    log = tmp_path / "server.log"
    try:
        assert wait_until(lambda: "tokens travel in cleartext" in log.read_text(), timeout=20)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # granian's workers too, if it got that far
        process.wait()
    text = log.read_text()
    assert "store: redis://:***@127.0.0.1:" in text, text
    assert _leaks(text) == [], text
    assert "WARNING flagport.server: evaluation is open to anyone" in text, text
    assert "WARNING flagport.server: tokens travel in cleartext: 0.0.0.0:" in text, text

    # A malformed URL stops `flags serve` before any worker starts, without its secrets.
    bad = _serve(tmp_path, url + "&colour=blue")
    assert bad.wait(timeout=30) == 2
    text = log.read_text()
    assert "unknown option 'colour'" in text, text
    assert "--store" in text, text
    assert _leaks(text) == [], text
    assert "Traceback" not in text, text
