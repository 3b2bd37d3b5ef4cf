"""CORS for the evaluation surface only (``flags serve --cors-origin``; docs/spec.md section 4).

Pure ASGI, wrapped around the whole app only when origins are configured, so a server without
``--cors-origin`` pays nothing. A web page of an allowed origin may call OFREP single and bulk
(``POST``), ``GET /v1/evaluate/{key}`` and the change stream (``GET /v1/stream``): its
preflight is answered here (204, no token needed: browsers send none on a preflight), and
the answers to its requests carry ``Access-Control-Allow-Origin`` and expose ``ETag`` (so the
web provider's polls can be 304), ``Retry-After`` and ``X-Flagport-Snapshot``.

Nothing else answers cross-origin: the admin API, ``/v1/snapshot``, ``/v1/exposures`` and
``/v1/outcomes`` never carry CORS headers, and a preflight for them, or from an origin not
allowed, is left to the app (its plain ``OPTIONS`` answer, without CORS headers), so the
browser refuses to send the request or to show its answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "PREFLIGHT_MAX_AGE_S",
    "Cors",
    "evaluation_methods",
    "valid_origin",
]

#: Request headers a page may send: the JSON body, a token either way, the bulk ETag.
ALLOWED_HEADERS: Final = "Content-Type, Authorization, X-API-Key, If-None-Match"
#: Answer headers a page may read.
EXPOSED_HEADERS: Final = "ETag, Retry-After, X-Flagport-Snapshot"
#: How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_S: Final = 7200

_HTTP: Final[str] = ScopeType.HTTP
_OFREP_BULK: Final = "/ofrep/v1/evaluate/flags"
_OFREP_SINGLE: Final = "/ofrep/v1/evaluate/flags/"
_EVALUATE_GET: Final = "/v1/evaluate/"
_STREAM: Final = "/v1/stream"


def evaluation_methods(path: str) -> bytes | None:
    """The method a page may use on ``path`` if it is on the evaluation surface, else
    ``None`` (the admin API, the SDK feeds, the operations routes)."""
    if path == _OFREP_BULK or path.startswith(_OFREP_SINGLE):
        return b"POST"
    if path.startswith(_EVALUATE_GET) or path == _STREAM:
        return b"GET"
    return None


def valid_origin(text: str) -> str | None:
    """``text`` as browsers send it in ``Origin`` (``https://portal.example``, a port only if
    not the scheme's default), ``*``, or ``None`` when it is neither (a path, a user, another
    scheme)."""
    value = text.strip()
    if value == "*":
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or value.endswith(("?", "#"))
    ):
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class Cors:
    """Answer allowed preflights on the evaluation surface and add the CORS headers to its
    answers to allowed origins."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        allowed = frozenset(origins)
        self.any_origin = "*" in allowed
        #: The headers every answer to an allowed origin gets, built once per origin.
        self._answer_headers = {origin.encode(): _answer_headers(origin) for origin in allowed}
        self._any = _answer_headers("*")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != _HTTP:
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        if origin is None:  # not cross-origin: the server-side clients' requests
            await self.app(scope, receive, send)
            return
        method = evaluation_methods(scope["path"])
        headers = (
            None
            if method is None
            else self._any
            if self.any_origin
            else self._answer_headers.get(origin)
        )
        if headers is None:  # not the evaluation surface, or an origin not allowed
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _requested_method(scope) is not None:  # type: ignore[typeddict-item]
            await _preflight(send, headers[:-1], method)  # type: ignore[arg-type]
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *headers]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _answer_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an answer to ``origin`` (``*``: any origin, no ``Vary``); the last
    is ``Access-Control-Expose-Headers``, which a preflight answer leaves out."""
    headers = [(b"access-control-allow-origin", origin.encode())]
    if origin != "*":
        headers.append((b"vary", b"Origin"))
    headers.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
    return headers


def _requested_method(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"access-control-request-method":
            return value
    return None


async def _preflight(send: Send, cors: list[tuple[bytes, bytes]], method: bytes) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 204,
        "headers": [
            *cors,
            (b"access-control-allow-methods", method),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
