"""CORS for the evaluation surface only (pure ASGI, wrapped around the whole app).

Browsers ask Flagport directly with the OpenFeature web provider; the pages live on another
origin, so the evaluation routes answer cross-origin requests from the origins the operator
lists (``flags serve --cors-origin``). What may answer cross-origin, and with which headers,
is docs/spec.md section 12; the decision is docs/adr/0016-cors-for-the-evaluation-surface.md:

- only the evaluation surface (OFREP single and bulk, ``GET /v1/evaluate/{key}``, the change
  stream). The admin API, ``/v1/snapshot``, ``/v1/exposures`` and ``/v1/outcomes`` never carry
  a CORS header, whatever the request says, so no page can read a rule or post a statistic;
- a preflight is answered here, before the app (it costs less than ``GET /healthz``); from an
  origin not listed, or for a method the route does not take, it is a 403 without any CORS
  header, which the browser reports as a refused preflight;
- answers to an allowed origin expose ``ETag`` (so the provider can send ``If-None-Match``
  and get 304s), ``Retry-After`` and ``X-Flagport-Snapshot``, and carry ``Vary: Origin``.

The headers are made once per allowed origin, here. For a route the evaluation dispatch
serves they are left in the request's scope (:data:`~flagport_server.surface.CORS_HEADERS`)
and whoever answers adds them (the dispatch in its own answer, the rate limit and the host
check in their refusals): a dict lookup per request instead of a wrapped ``send``
(docs/adr/0021-evaluation-dispatch.md). Other answers on the surface (the change stream, a
405) get them through a wrapped ``send``.

Without ``--cors-origin`` the wrapper is not installed at all: no cost on the evaluation path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from flagport_server.surface import (
    CORS_HEADERS,
    dispatched_route,
    evaluation_surface_method,
    send_answer,
    send_with,
)

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "PREFLIGHT_MAX_AGE",
    "Cors",
    "normalise_origin",
]

#: Request headers a page may send (the web provider sends the first two and ``Authorization``
#: or ``X-API-Key`` when configured with a token; ``If-None-Match`` on every poll).
ALLOWED_HEADERS: Final = ("Content-Type", "Authorization", "X-API-Key", "If-None-Match")
#: Answer headers a page may read.
EXPOSED_HEADERS: Final = ("ETag", "Retry-After", "X-Flagport-Snapshot")
#: Seconds a browser may keep a preflight's answer (Chromium caps it at 7,200).
PREFLIGHT_MAX_AGE: Final = 7200

_HTTP: str = ScopeType.HTTP


def normalise_origin(origin: str) -> str:
    """``*`` or a browser's ``Origin`` (``scheme://host[:port]``), lower-cased; else ValueError.

    The message names what is wrong, for ``flags serve --cors-origin``.
    """
    if origin == "*":
        return origin
    if len(origin) > 253 + 20:
        raise ValueError(f"{origin[:40]!r}...: too long for an origin")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{origin!r} is not an origin: give scheme://host[:port], "
            "for example https://portal.example, or *"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            f"{origin!r} is not an origin: an origin has no path, query, fragment or user "
            f"(did you mean {parts.scheme}://{parts.netloc.rpartition('@')[2]}?)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{origin!r} has a port that is not a number in 1-65535") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{parts.scheme}://{host}{suffix}"


class Cors:
    """Answer preflights and mark answers for the allowed origins, on the evaluation surface."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        allowed = {normalise_origin(origin) for origin in origins}
        self.any_origin = "*" in allowed
        self.origins = frozenset(origin.encode("latin-1") for origin in allowed - {"*"})
        self._exposed = ", ".join(EXPOSED_HEADERS).encode()
        self._allowed_headers = ", ".join(ALLOWED_HEADERS).encode()
        self._max_age = str(PREFLIGHT_MAX_AGE).encode()
        #: An answer's CORS headers per allowed origin as browsers send it, made once.
        self._answer_headers = {origin: self._headers_for(origin) for origin in self.origins}
        self._any_headers = self._headers_for(b"*")

    def _headers_for(self, allow: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", allow),
            (b"access-control-expose-headers", self._exposed),
            (b"vary", b"Origin"),
        ]

    def _allowed(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for this origin, or None."""
        if self.any_origin:
            return b"*"
        return origin if origin.lower() in self.origins else None

    def _answer_headers_for(self, origin: bytes) -> list[tuple[bytes, bytes]] | None:
        """The CORS headers of an answer to ``origin``, or None: not allowed."""
        if self.any_origin:
            return self._any_headers
        headers = self._answer_headers.get(origin)
        if headers is None and origin.lower() in self.origins:  # sent in another case
            headers = self._headers_for(origin)
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != _HTTP:
            await self.app(scope, receive, send)
            return
        method = evaluation_surface_method(scope["path"])
        origin = None
        requested_method = None
        if method is not None:
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    requested_method = value
        if origin is None or method is None:
            # Same-origin and server-to-server requests, and every route off the evaluation
            # surface: untouched (a preflight there reaches the app, which answers 405).
            await self.app(scope, receive, send)
            return
        request_method: str = scope["method"]  # type: ignore[typeddict-item]
        if request_method == "OPTIONS" and requested_method is not None:
            allow = self._allowed(origin)
            await self._preflight(send, allow, requested_method == method.encode(), method)
            return
        cors_headers = self._answer_headers_for(origin)
        if cors_headers is None:
            await self.app(scope, receive, send)
        elif dispatched_route(scope["path"], request_method) is not None:
            scope[CORS_HEADERS] = cors_headers  # type: ignore[typeddict-unknown-key]
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send_with(send, cors_headers))

    async def _preflight(
        self, send: Send, allow: bytes | None, method_ok: bool, method: str
    ) -> None:
        if allow is None or not method_ok:
            reason = (
                b"origin not allowed: flags serve --cors-origin lists the origins"
                if allow is None
                else f"this route takes {method} only".encode()
            )
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"vary", b"Origin")]
            await send_answer(send, 403, headers, reason)
            return
        headers = [
            (b"access-control-allow-origin", allow),
            (b"access-control-allow-methods", method.encode()),
            (b"access-control-allow-headers", self._allowed_headers),
            (b"access-control-max-age", self._max_age),
            (b"vary", b"Origin"),
        ]
        await send_answer(send, 204, headers, b"")
