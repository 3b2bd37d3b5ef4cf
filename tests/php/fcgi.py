"""A minimal FastCGI client (responder role, keep-alive) to drive PHP-FPM from tests.

    with FastCGIClient("/tmp/x/fpm.sock") as fpm:
        response = fpm.get("/path/page.php", {"user": "42"}, params={"FLAGPORT_URL": url})
        response.status, response.headers, response.body

Only what tests need: one request at a time per connection, GET/POST, stdout and stderr
collected; FCGI_KEEP_CONN keeps the connection for the next request.
"""

from __future__ import annotations

import socket
import struct
import urllib.parse
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FastCGIClient", "FastCGIResponse", "encode_params"]

_VERSION = 1
_BEGIN_REQUEST, _END_REQUEST, _PARAMS, _STDIN, _STDOUT, _STDERR = 1, 3, 4, 5, 6, 7
_RESPONDER = 1
_KEEP_CONN = 1
_HEADER = struct.Struct("!BBHHBx")


def _length(n: int) -> bytes:
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def encode_params(params: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in params.items():
        key, val = name.encode(), value.encode()
        out += _length(len(key)) + _length(len(val)) + key + val
    return bytes(out)


def _records(kind: int, request_id: int, data: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(data), 65535):
        chunk = data[start : start + 65535]
        out += _HEADER.pack(_VERSION, kind, request_id, len(chunk), 0) + chunk
    out += _HEADER.pack(_VERSION, kind, request_id, 0, 0)  # end of stream
    return bytes(out)


@dataclass
class FastCGIResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes = b""
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class FastCGIClient:
    """One keep-alive connection to a FastCGI server (Unix socket path or (host, port))."""

    def __init__(self, address: str | tuple[str, int], timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._request_id = 0

    def __enter__(self) -> FastCGIClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connect(self) -> socket.socket:
        if self._socket is None:
            family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.address)
            self._socket = sock
        return self._socket

    def get(
        self, script: str, query: dict[str, str] | None = None, params: dict[str, str] | None = None
    ) -> FastCGIResponse:
        return self.request("GET", script, query, params=params)

    def request(
        self,
        method: str,
        script: str,
        query: dict[str, str] | None = None,
        body: bytes = b"",
        params: dict[str, str] | None = None,
        uri: str | None = None,
    ) -> FastCGIResponse:
        try:
            return self._request(method, script, query, body, params, uri)
        except OSError:
            self.close()  # FPM may have closed an idle connection: retry once on a fresh one
            return self._request(method, script, query, body, params, uri)

    def _request(
        self,
        method: str,
        script: str,
        query: dict[str, str] | None,
        body: bytes,
        params: dict[str, str] | None,
        uri: str | None,
    ) -> FastCGIResponse:
        sock = self._connect()
        self._request_id = self._request_id % 65535 + 1
        rid = self._request_id
        query_string = urllib.parse.urlencode(query or {})
        path = uri or "/" + script.rsplit("/", 1)[-1]
        environ = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "flagport-tests",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": method,
            "SCRIPT_FILENAME": script,
            "SCRIPT_NAME": "/" + script.rsplit("/", 1)[-1],
            "REQUEST_URI": path + ("?" + query_string if query_string else ""),
            "DOCUMENT_URI": path,
            "QUERY_STRING": query_string,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded" if body else "",
            "HTTP_HOST": "localhost",
            **(params or {}),
        }
        begin = struct.pack("!HB5x", _RESPONDER, _KEEP_CONN)
        message = (
            _HEADER.pack(_VERSION, _BEGIN_REQUEST, rid, len(begin), 0)
            + begin
            + _records(_PARAMS, rid, encode_params(environ))
            + _records(_STDIN, rid, body)
        )
        sock.sendall(message)
        stdout, stderr = bytearray(), bytearray()
        buffer = b""
        while True:
            while len(buffer) < _HEADER.size:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("FastCGI server closed the connection mid-response")
                buffer += chunk
            _, kind, got_id, length, padding = _HEADER.unpack_from(buffer)
            need = _HEADER.size + length + padding
            while len(buffer) < need:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("FastCGI server closed the connection mid-record")
                buffer += chunk
            content = buffer[_HEADER.size : _HEADER.size + length]
            buffer = buffer[need:]
            if got_id != rid:
                continue
            if kind == _STDOUT:
                stdout += content
            elif kind == _STDERR:
                stderr += content
            elif kind == _END_REQUEST:
                break
        head, _, payload = bytes(stdout).partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        raw: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                raw.append((name.strip(), value.strip()))
                headers[name.strip().lower()] = value.strip()
        status = int(headers.get("status", "200").split()[0])
        return FastCGIResponse(status, headers, payload, bytes(stderr), raw)
