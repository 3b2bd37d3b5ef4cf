"""Bad peers for fail-safe tests: a server that accepts and never answers, one that answers
garbage, on TCP or on a Unix socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BadPeer", "bad_peer", "dead_tcp_url"]

GARBAGE_BYTES = b"\x00\xff\xfe garbage, not HTTP at all \r\n\r\n"
GARBAGE_HTTP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
    b'Connection: close\r\n\r\n{"flags": [{"ke'
)


class BadPeer:
    """Listens in a thread; ``mode`` is ``hang``, ``garbage`` or ``garbage-http``."""

    def __init__(self, mode: str, uds: Path | None = None) -> None:
        self.mode = mode
        if uds is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                uds.unlink()
            self._listener.bind(str(uds))
            self.url = f"unix://{uds}"
        else:
            self._listener = socket.socket()
            self._listener.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._listener.listen(128)
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "hang":
                self._held.append(connection)  # never read, never answer, never close
                continue
            with connection:
                connection.settimeout(1.0)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                    connection.sendall(GARBAGE_BYTES if self.mode == "garbage" else GARBAGE_HTTP)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for connection in self._held:
            connection.close()
        self._thread.join(2)


@contextlib.contextmanager
def bad_peer(mode: str, uds: Path | None = None) -> Iterator[BadPeer]:
    peer = BadPeer(mode, uds)
    try:
        yield peer
    finally:
        peer.close()


def dead_tcp_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
