"""How a rollout probe reads one answer (health URLs, Prometheus queries): within one
deadline for the whole exchange and up to a size, whatever the other end does
(docs/adr/0025-prometheus-guards.md). A server trickling its answer a byte at a time
passes every per-read timeout and held a probe, and with it the last result the guards
read, for as long as it liked."""

from __future__ import annotations

import http.server
import time
from collections.abc import Iterator

import httpx
import pytest

from flagport.rollout.errors import PrometheusError
from flagport_server.driver import HealthPolls
from flagport_server.probes import MAX_ANSWER_BYTES, AnswerTooLarge, fetch
from flagport_server.prometheus import ask
from tests.support.http_server import serving

pytestmark = pytest.mark.anyio


class Ends(http.server.BaseHTTPRequestHandler):
    """Under ``/trickle``: a 200 whose body comes a byte every 50 ms; ``/huge``: a 200
    with a body over the cap; ``/ok``: ``{"status": "ok"}``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        first = self.path.split("?")[0].split("/")[1]  # a query's path is under its base
        body = {"huge": b"x" * (MAX_ANSWER_BYTES + 1), "ok": b'{"status": "ok"}'}.get(first)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if body is not None else 10_000))
        self.end_headers()
        try:
            if body is not None:
                self.wfile.write(body)
                return
            for _ in range(10_000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass  # the probe gave up and closed the connection

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def ends() -> Iterator[str]:
    with serving(Ends) as url:
        yield url


async def test_a_trickled_answer_ends_at_the_deadline(ends: str) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:  # each read well inside 1 s
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await fetch(client, f"{ends}/trickle", 0.5)
        assert time.monotonic() - began < 3.0


async def test_an_answer_over_the_cap_is_not_read(ends: str) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        with pytest.raises(AnswerTooLarge):
            await fetch(client, f"{ends}/huge", 5.0)
        assert await fetch(client, f"{ends}/ok", 5.0) == (200, b'{"status": "ok"}')


async def test_a_health_poll_over_the_cap_fails_and_a_query_says_why(ends: str) -> None:
    polls = HealthPolls(httpx.AsyncClient(timeout=5.0))
    try:
        assert await polls.poll(f"{ends}/huge")
        assert not await polls.poll(f"{ends}/ok")
        with pytest.raises(PrometheusError, match="over 1,048,576 bytes"):
            await ask(polls.client, f"{ends}/huge", "up")
    finally:
        await polls.close()
