"""Bad peers for fail-safe tests: a server that accepts and never answers, one that answers
garbage, on TCP or on a Unix socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["BULK_BODY", "BadPeer", "ScriptedPeer", "bad_peer", "dead_tcp_url", "scripted_peer"]

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


#: A valid OFREP bulk answer of one flag, as the scripted peer sends it.
BULK_BODY = b'{"flags":[{"key":"peer-flag","reason":"STATIC","variant":"on","value":true}]}'


def _answer(extra_headers: bytes = b"", body: bytes = BULK_BODY) -> bytes:
    return (
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: "7-peer"\r\n'
        + extra_headers
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


#: What the scripted peer does with the n-th request (0-based) on a connection: the bytes to
#: send (then wait for the next request), ``None`` (close without answering), or a tuple
#: ``(bytes, "close")`` (send, then close).
Action = bytes | tuple[bytes, str] | None
SCRIPTS: dict[str, Callable[[int], Action]] = {
    # keep-alive: every request answered on the same connection
    "keep": lambda n: _answer(),
    # answers, then closes the idle connection (no Connection: close header)
    "idle-close": lambda n: (_answer(), "close"),
    # answers the first request of a connection, drops the second without a byte
    "drop-second": lambda n: _answer() if n == 0 else None,
    # never answers
    "drop": lambda n: None,
    # announces the close
    "connection-close": lambda n: (_answer(b"connection: close\r\n"), "close"),
    # a chunked answer (in three chunks, one with an extension)
    "chunked": lambda n: (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(
            f"{len(part):x}{';x=1' if i == 1 else ''}\r\n".encode() + part + b"\r\n"
            for i, part in enumerate((BULK_BODY[:10], BULK_BODY[10:40], BULK_BODY[40:]))
        )
        + b"0\r\n\r\n"
    ),
    # more bytes than the Content-Length
    "overrun": lambda n: _answer() + b"HTTP/1.1 200 OK\r\n",
    # headers beyond the client's limit
    "huge-headers": lambda n: _answer(b"x-filler: " + b"a" * 20_000 + b"\r\n"),
    # a body announced beyond the client's limit
    "huge-body": lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 9000000\r\n\r\n{",
    # two framings at once
    "two-lengths": lambda n: _answer(b"content-length: 3\r\n"),
    "length-and-chunked": lambda n: _answer(b"transfer-encoding: chunked\r\n"),
    # a body shorter than announced, then the close
    "short-body": lambda n: (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}", "close"),
    # a 304 (no body) kept alive, then a 200 on the same connection
    "not-modified": lambda n: (
        b'HTTP/1.1 304 Not Modified\r\netag: "7-peer"\r\n\r\n' if n == 0 else _answer()
    ),
}


class ScriptedPeer:
    """An HTTP/1.1 peer on a Unix socket that follows one of :data:`SCRIPTS` on every
    connection and counts connections and requests (for the persistent-connection tests)."""

    def __init__(self, script: str, uds: Path) -> None:
        self.script = SCRIPTS[script]
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            uds.unlink()
        self._listener.bind(str(uds))
        self._listener.listen(128)
        self.url = f"unix://{uds}"
        self.path = str(uds)
        self.connections = 0
        self.requests = 0
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5.0)
            buffer = b""
            n = 0
            while True:
                try:
                    while b"\r\n\r\n" not in buffer:
                        chunk = connection.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buffer) < length:
                        chunk = connection.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    buffer = buffer[length:]
                    self.requests += 1
                    action = self.script(n)
                    n += 1
                    if action is None:
                        return
                    if isinstance(action, tuple):
                        connection.sendall(action[0])
                        return
                    connection.sendall(action)
                except OSError:
                    return

    def close(self) -> None:
        """Stop as a server process dies: the listener and every open connection closed."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._accepter.join(2)
        for thread in self._threads:
            thread.join(2)


@contextlib.contextmanager
def scripted_peer(script: str, uds: Path) -> Iterator[ScriptedPeer]:
    peer = ScriptedPeer(script, uds)
    try:
        yield peer
    finally:
        peer.close()
