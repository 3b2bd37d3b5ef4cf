"""The bridge's persistent Unix-socket transport (``Flagport\\SocketTransport``) against
scripted peers and a real server: one connection reused across requests (also across PHP-FPM
requests of one worker), a connection the server closed is replaced without a failure, and
every malformed or oversized answer is an error that leaves no half-read connection behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.php.conftest import BRIDGE
from tests.php.fakes import BULK_BODY, bad_peer, scripted_peer
from tests.php.fcgi import FastCGIClient
from tests.php.fpm import FpmPool, fpm_pool

#: Makes ``count`` requests, each through a new SocketTransport (as each FPM request builds its
#: client), and prints what each got.
DRIVER = """
require $argv[1];
$out = [];
for ($i = 0; $i < (int) $argv[3]; $i++) {
    if (($argv[5] ?? '') === 'close-between' && $i > 0) {
        Flagport\\SocketTransport::closePersistent($argv[2]);
    }
    $transport = new Flagport\\SocketTransport($argv[2], 50, (int) $argv[4]);
    $started = hrtime(true);
    try {
        $headers = $i === 0 ? [] : ['If-None-Match' => '"7-peer"'];
        $answer = $transport->request('POST', '/ofrep/v1/evaluate/flags', '{}', $headers);
        $out[] = ['status' => $answer->status, 'body' => $answer->body, 'etag' => $answer->etag];
    } catch (Flagport\\TransportException $error) {
        $out[] = ['error' => $error->getMessage()];
    }
    $out[$i]['ms'] = (hrtime(true) - $started) / 1e6;
}
echo json_encode($out);
"""


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fp-st-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def drive(
    php: str, socket_path: str, count: int, timeout_ms: int = 250, mode: str = ""
) -> list[dict[str, Any]]:
    args = [str(BRIDGE / "autoload.php"), socket_path, str(count), str(timeout_ms), mode]
    result = subprocess.run(
        [php, "-r", DRIVER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr  # no warning leaks out of the transport
    return json.loads(result.stdout)  # type: ignore[no-any-return]


GOOD = {"status": 200, "body": BULK_BODY.decode(), "etag": '"7-peer"'}


def good(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in answer.items() if k != "ms"} for answer in answers]


@pytest.mark.parametrize(
    ("script", "connections"),
    [
        ("keep", 1),  # one connection for every request
        ("idle-close", 4),  # the server closed it while idle: a new one, no failure
        ("drop-second", 4),  # the close raced the request: retried once on a new connection
        ("connection-close", 4),  # announced close honoured
    ],
)
def test_answers_over_reused_or_replaced_connections(
    php: str, sock_dir: Path, script: str, connections: int
) -> None:
    with scripted_peer(script, sock_dir / "peer.sock") as peer:
        answers = drive(php, peer.path, 4)
        assert good(answers) == [GOOD] * 4
        assert peer.connections == connections
        assert peer.requests == (7 if script == "drop-second" else 4)


def test_close_persistent_drops_the_kept_connection(php: str, sock_dir: Path) -> None:
    with scripted_peer("keep", sock_dir / "peer.sock") as peer:
        assert good(drive(php, peer.path, 3, mode="close-between")) == [GOOD] * 3
        assert (peer.connections, peer.requests) == (3, 3)


def test_chunked_and_not_modified_answers(php: str, sock_dir: Path) -> None:
    with scripted_peer("chunked", sock_dir / "chunked.sock") as peer:
        assert good(drive(php, peer.path, 3)) == [{**GOOD, "etag": None}] * 3
        assert peer.connections == 1
    with scripted_peer("not-modified", sock_dir / "nm.sock") as peer:
        answers = good(drive(php, peer.path, 2))
        assert answers == [{"status": 304, "body": "", "etag": '"7-peer"'}, GOOD]
        assert peer.connections == 1


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("drop", "closed the connection without answering"),
        ("overrun", "more than the answer's Content-Length"),
        ("huge-headers", "headers are larger than"),
        ("huge-body", "bad Content-Length"),
        ("short-body", "ended after 2 of 100 bytes"),
        ("two-lengths", "more than one content-length header"),
        ("length-and-chunked", "both Content-Length and Transfer-Encoding"),
    ],
)
def test_bad_answers_are_errors_and_never_reused(
    php: str, sock_dir: Path, script: str, error: str
) -> None:
    with scripted_peer(script, sock_dir / "bad.sock") as peer:
        answers = drive(php, peer.path, 3)
        assert all(error in answer.get("error", "") for answer in answers), answers
        # Every failed exchange closed its connection: each request opened a new one, and a
        # connection that was new when it failed is not retried.
        assert peer.connections == 3
        assert peer.requests == 3


def test_hung_peer_times_out_and_nothing_listening_fails_fast(php: str, sock_dir: Path) -> None:
    with bad_peer("hang", sock_dir / "hang.sock") as peer:
        answers = drive(php, peer.url.removeprefix("unix://"), 2, timeout_ms=100)
    for answer in answers:
        assert "timed out after 100 ms" in answer["error"], answer
        assert 90 <= answer["ms"] < 600, answer
    answers = drive(php, str(sock_dir / "nobody.sock"), 1)
    assert "cannot connect" in answers[0]["error"], answers
    assert answers[0]["ms"] < 50, answers


def test_fpm_workers_keep_their_connection_and_survive_a_restart(sock_dir: Path) -> None:
    """One FPM worker keeps its connection across requests; when the server goes away (its
    connections closed, as when it stops) and another listens on the same socket, the next
    request reconnects and gets the new server's answer, with no failure."""
    page = str(BRIDGE / "tests" / "fpm" / "bridge.php")
    path = sock_dir / "server.sock"
    with fpm_pool(sock_dir / "fpm", children=1) as pool:
        with scripted_peer("keep", path) as first:
            for n in range(5):
                answer = fpm_page(pool, page, first.url, f"u{n}")
                assert answer["values"] == {"peer-flag": True}, answer
            assert (first.connections, first.requests) == (1, 5), "one connection, 5 requests"
        with scripted_peer("keep", path) as second:
            for n in range(2):
                answer = fpm_page(pool, page, second.url, f"v{n}")
                assert answer["status"] == {**answer["status"], "source": "server", "error": None}
            assert (second.connections, second.requests) == (1, 2)
        assert pool.php_errors() == "", pool.php_errors()


def fpm_page(pool: FpmPool, page: str, url: str, user: str) -> dict[str, Any]:
    with FastCGIClient(pool.socket) as client:
        response = client.get(page, {"user": user, "prefix": f"st-{user}"}, {"FLAGPORT_URL": url})
    assert response.status == 200, response.text()
    return json.loads(response.body)  # type: ignore[no-any-return]
