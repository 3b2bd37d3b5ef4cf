"""A real webhook receiver for tests and benchmarks: an HTTP server in a thread on a free
port that keeps every request (headers, body, when it arrived) and answers with the status
the test sets; it can be stopped and started again on the same port (a receiver that is
down), or made to never answer (a silent one)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.server import free_port, wait_until

__all__ = ["Delivery", "Receiver"]


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)


class Receiver:
    """``status``: the answer to every request (``None``: hold it without answering)."""

    def __init__(self, status: int | None = 200) -> None:
        self.port = free_port()
        self.status = status
        self.received: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/flagport"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Delivery(dict(self.headers.items()), body))
                status = receiver.status
                if status is None:
                    receiver._release.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._release.clear()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self.received)

    def wait_for(
        self, predicate: Callable[[list[Delivery]], bool], timeout: float = 10.0
    ) -> list[Delivery]:
        """The deliveries once ``predicate`` holds; AssertionError after ``timeout``."""
        if not wait_until(lambda: predicate(self.deliveries()), timeout):
            raise AssertionError(f"receiver: condition not met in {timeout}s: {self.deliveries()}")
        return self.deliveries()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
