"""One webhook delivery attempt against a receiver that trickles the head of its answer, a
byte every 50 ms (each read well inside the client's timeout): the attempt ends at its
deadline as "no answer in time", so the webhook's retries and dead letter go on as for a
silent receiver (docs/adr/0028-webhooks-over-the-audit-log.md)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from flagport_server.stores.base import AuditEntry
from flagport_server.stores.webhook_records import WebhookRecord
from flagport_server.webhooks.delivery import send

pytestmark = pytest.mark.anyio


@pytest.fixture
def trickling() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                    if stop.is_set():
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return  # the sender gave up
                    time.sleep(0.05)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(5)


async def test_a_trickled_answer_head_ends_the_attempt_at_its_deadline(trickling: str) -> None:
    record = WebhookRecord(id="w1", url=trickling, secret="s" * 32, created_at="2027-01-01")
    entry = AuditEntry(id=7, actor="alice", action="enable", key="checkout", at="2027-01-01")
    async with httpx.AsyncClient(timeout=1.0) as client:
        began = time.monotonic()
        result = await send(client, record, entry, "flag.changed", None, 0.5)
        assert time.monotonic() - began < 3.0
    assert (result.status, result.error) == (None, "no answer in time")
