"""The bridge under Debian's php8.2-fpm, driven over FastCGI like nginx would.

- 5,000 contexts (one FPM request each, over the Unix socket and TCP): the bridge's values
  equal what ``Flagport\\Bucketing`` predicts in PHP, what ``flagport.bucket`` predicts and what
  the Python engine evaluates from the server's exported snapshot.
- Fail-safe across FPM requests with the server stopped, hung (accepts, never answers) and
  answering garbage: later requests, in any worker of the pool, get the last good values from
  APCu and see the open circuit (no call, no wait).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import flagport
from flagport.document import load_document
from tests.php.conftest import BRIDGE, ROLLOUTS, Servers, create_rollouts
from tests.php.fakes import bad_peer
from tests.php.fcgi import FastCGIClient
from tests.php.fpm import FpmPool, fpm_pool
from tests.support.server import PORTAL_FLAGS, running_server

PAGE = str(BRIDGE / "tests" / "fpm" / "bridge.php")
CONTEXTS = 5_000
PREDICT = ",".join(f"{key}:{pct}" for key, pct in ROLLOUTS.items())
UI_KEYS = "ui-improvements,ui-improvements.dropdown-fixes," + ",".join(ROLLOUTS)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FpmPool]:
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="fp-fpm-", dir="/tmp"))
    try:
        with fpm_pool(directory, children=2) as running:
            yield running
            errors = running.php_errors()
            assert "Fatal" not in errors, errors
            assert "Warning" not in errors, errors
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def page(client: FastCGIClient, url: str, **query: Any) -> dict[str, Any]:
    response = client.get(PAGE, {k: str(v) for k, v in query.items()}, {"FLAGPORT_URL": url})
    assert response.status == 200, (response.status, response.text(), response.stderr)
    return json.loads(response.body)  # type: ignore[no-any-return]


def test_5000_contexts_match_bucketing_and_the_python_engine(
    pool: FpmPool, servers: Servers
) -> None:
    with servers.uds.admin(timeout=10) as admin:
        exported = admin.get("/admin/v1/snapshot")
        assert exported.status_code == 200, exported.text
    engine = flagport.compile_snapshot(load_document(exported.content))
    urls = [servers.uds_url, servers.tcp.url]

    def run(worker: int) -> list[tuple[int, dict[str, Any]]]:
        out = []
        with pool.client() as client:
            for i in range(worker, CONTEXTS, 4):
                answer = page(
                    client,
                    urls[i % 2],
                    user=f"user-{i}",
                    company=i % 13,
                    keys=",".join(ROLLOUTS),
                    predict=PREDICT,
                    prefix="match",
                )
                out.append((i, answer))
        return out

    with ThreadPoolExecutor(4) as executor:
        answers = [item for chunk in executor.map(run, range(4)) for item in chunk]
    assert len(answers) == CONTEXTS
    mismatches = []
    counts = dict.fromkeys(ROLLOUTS, 0)
    for i, answer in answers:
        unit = f"user-{i}"
        context = {"targetingKey": unit, "company_id": i % 13, "role": "member"}
        assert answer["status"]["source"] in ("server", "not-modified"), answer
        for key, percentage in ROLLOUTS.items():
            python_bucket = flagport.bucket(key, unit) < percentage * 1000
            python_engine = engine.evaluate(key, context).value
            got = (answer["values"][key], answer["predicted"][key], python_bucket, python_engine)
            if len(set(got)) != 1:
                mismatches.append((unit, key, got))
            counts[key] += answer["values"][key]
    assert mismatches == [], mismatches[:5]
    for key, percentage in ROLLOUTS.items():
        assert abs(counts[key] / CONTEXTS - percentage / 100) < 0.03, (key, counts[key])
    assert len({answer["pid"] for _, answer in answers}) == 2, "both FPM workers served"


def warm(pool: FpmPool, url: str, prefix: str, users: list[str]) -> dict[str, dict[str, Any]]:
    with pool.client() as client:
        return {
            user: page(client, url, user=user, keys=UI_KEYS, prefix=prefix)["values"]
            for user in users
        }


def assert_fail_safe(
    pool: FpmPool,
    url: str,
    prefix: str,
    known: dict[str, dict[str, Any]],
    *,
    first_call_ms: tuple[float, float],
    threshold: int = 3,
) -> None:
    """Requests through the pool: the first ``threshold`` try the peer and count failures;
    every later one, whichever worker serves it, sees the open circuit and no wait."""
    options = {"prefix": prefix, "timeout_ms": 100, "threshold": threshold, "cooldown": 60}
    defaults = json.dumps(dict.fromkeys(UI_KEYS.split(","), True))
    users = list(known)
    results = []
    # Two keep-alive connections: FPM binds each to its own worker, so requests alternate
    # between the pool's two processes and only APCu carries state from one to the other.
    with pool.client() as first, pool.client() as second:
        for n in range(30):
            user = users[n % len(users)]
            client = (first, second)[n % 2]
            answer = page(client, url, user=user, keys=UI_KEYS, defaults=defaults, **options)
            results.append(answer)
            assert answer["values"] == known[user], (n, answer)
            assert answer["status"]["source"] == "last-good", answer
        stranger = page(first, url, user="never-seen", keys=UI_KEYS, defaults=defaults, **options)
    low, high = first_call_ms
    assert len({answer["pid"] for answer in results}) == 2
    for answer in results[:threshold]:
        assert answer["status"]["calls"] == 1
        assert low <= answer["elapsed_us"] / 1000 < high, answer
    assert results[threshold - 1]["status"]["circuit"] == "open"
    for answer in results[threshold:]:
        assert answer["status"]["calls"] == 0, answer
        assert answer["status"]["circuit"] == "open"
        assert answer["elapsed_us"] < 5_000, answer
    # No last good value for this context: the configured defaults, still without a call.
    assert stranger["values"] == dict.fromkeys(UI_KEYS.split(","), True)
    assert stranger["status"] == {**stranger["status"], "source": "defaults", "calls": 0}


def enable_ui(server: Any) -> None:
    with server.admin(timeout=10) as admin:
        response = admin.post("/admin/v1/flags/ui-improvements/enable", json={"percentage": 50})
        assert response.status_code == 200, response.text


def test_server_stopped(pool: FpmPool, tmp_path: Path) -> None:
    with running_server(tmp_path / "stopped", seed=PORTAL_FLAGS) as server:
        create_rollouts(server)
        enable_ui(server)
        known = warm(pool, server.url, "stopped", [f"s{i}" for i in range(8)])
        assert any(v["ui-improvements.dropdown-fixes"] for v in known.values())
        assert not all(v["ui-improvements.dropdown-fixes"] for v in known.values())
        server.stop()
        assert_fail_safe(pool, server.url, "stopped", known, first_call_ms=(0, 50))


@pytest.mark.parametrize("mode", ["hang", "garbage", "garbage-http"])
def test_server_hung_or_answering_garbage(
    pool: FpmPool, servers: Servers, mode: str, tmp_path: Path
) -> None:
    import tempfile

    known = warm(pool, servers.uds_url, f"peer-{mode}", [f"{mode}-{i}" for i in range(8)])
    socket_dir = Path(tempfile.mkdtemp(prefix="fp-peer-", dir="/tmp"))
    try:
        with bad_peer(mode, socket_dir / "peer.sock") as peer:
            expected = (90, 400) if mode == "hang" else (0, 50)
            assert_fail_safe(pool, peer.url, f"peer-{mode}", known, first_call_ms=expected)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
