"""CORS for the evaluation surface only.

Browsers ask Flagport directly with the OpenFeature web provider; the pages live on another
origin, so the evaluation routes answer cross-origin requests from the origins the operator
lists (``flags serve --cors-origin``). What may answer cross-origin, and with which headers,
is docs/spec.md section 12; the decision is docs/adr/0016-cors-for-the-evaluation-surface.md:

- only the evaluation surface (OFREP single and bulk, ``GET /v1/evaluate/{key}``, the change
  stream). The admin API, ``/v1/snapshot``, ``/v1/exposures`` and ``/v1/outcomes`` never carry
  a CORS header, whatever the request says, so no page can read a rule or post a statistic;
- a preflight is answered by :class:`Cors`, before Litestar routes it (it costs no more than
  ``GET /healthz``); from an origin not listed, or for a method the route does not take, it is
  a 403 without any CORS header, which the browser reports as a refused preflight;
- answers to an allowed origin expose ``ETag`` (so the provider can send ``If-None-Match``
  and get 304s), ``Retry-After`` and ``X-Flagport-Snapshot``, and carry ``Vary: Origin``.

One :class:`CorsPolicy` per worker holds the allowed origins and the answer headers, made once
per origin. Who adds them (docs/adr/0024-cors-where-the-answer-is-made.md):

- the evaluation dispatch, to its own answers: it looks the ``Origin`` up in the header scan it
  makes anyway (:meth:`CorsPolicy.answer_headers`), so a dispatched request pays a dict lookup
  and no layer of its own;
- :class:`Cors`, the layer between the dispatch and Litestar: preflights, and every answer
  Litestar gives on the surface (the change stream, a 405, a request the dispatch handed on);
- the wrappers that refuse before the dispatch (the rate limit's 429, the host check's 421):
  :meth:`CorsPolicy.headers_for`, on their refusal path only.

Without ``--cors-origin`` there is no policy and no layer: no cost on the evaluation path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from flagport_server.surface import evaluation_surface_method, send_answer, send_with

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "PREFLIGHT_MAX_AGE",
    "Cors",
    "CorsHeaders",
    "CorsPolicy",
    "normalise_origin",
]

#: Request headers a page may send (the web provider sends the first two and ``Authorization``
#: or ``X-API-Key`` when configured with a token; ``If-None-Match`` on every poll).
ALLOWED_HEADERS: Final = ("Content-Type", "Authorization", "X-API-Key", "If-None-Match")
#: Answer headers a page may read.
EXPOSED_HEADERS: Final = ("ETag", "Retry-After", "X-Flagport-Snapshot")
#: Seconds a browser may keep a preflight's answer (Chromium caps it at 7,200).
PREFLIGHT_MAX_AGE: Final = 7200

#: The CORS headers of one answer.
CorsHeaders = list[tuple[bytes, bytes]]

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


class CorsPolicy:
    """The allowed origins of one worker, and the headers an answer to each carries."""

    def __init__(self, origins: Iterable[str]) -> None:
        allowed = {normalise_origin(origin) for origin in origins}
        if not allowed:
            raise ValueError("a CORS policy needs at least one origin")
        self.any_origin = "*" in allowed
        self.origins = frozenset(origin.encode("latin-1") for origin in allowed - {"*"})
        self.allowed_headers = ", ".join(ALLOWED_HEADERS).encode()
        self.max_age = str(PREFLIGHT_MAX_AGE).encode()
        self._exposed = ", ".join(EXPOSED_HEADERS).encode()
        #: An answer's CORS headers per allowed origin as browsers send it, made once.
        self._answer_headers = {origin: self._headers_for(origin) for origin in self.origins}
        self._any_headers = self._headers_for(b"*")

    def _headers_for(self, allow: bytes) -> CorsHeaders:
        return [
            (b"access-control-allow-origin", allow),
            (b"access-control-expose-headers", self._exposed),
            (b"vary", b"Origin"),
        ]

    def allow_origin(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for this origin, or None: not allowed."""
        if self.any_origin:
            return b"*"
        return origin if origin.lower() in self.origins else None

    def answer_headers(self, origin: bytes) -> CorsHeaders | None:
        """The CORS headers of an answer on the evaluation surface to a request from
        ``origin``, or None: not allowed."""
        if self.any_origin:
            return self._any_headers
        headers = self._answer_headers.get(origin)
        if headers is None and origin.lower() in self.origins:  # sent in another case
            headers = self._headers_for(origin)
        return headers

    def headers_for(self, scope: Scope) -> CorsHeaders:
        """The CORS headers of any answer to this request (none: off the evaluation surface,
        not cross-origin, or from an origin not allowed). For the answers made before the
        dispatch (refusals): it scans the request's headers."""
        if evaluation_surface_method(scope["path"]) is None:
            return []
        for name, value in scope["headers"]:
            if name == b"origin":
                return self.answer_headers(value) or []
        return []


class Cors:
    """Answer preflights, and mark Litestar's answers on the evaluation surface for the allowed
    origins (the layer between the evaluation dispatch and Litestar)."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

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
        if scope["method"] == "OPTIONS" and requested_method is not None:  # type: ignore[typeddict-item]
            allow = self.policy.allow_origin(origin)
            await self._preflight(send, allow, requested_method == method.encode(), method)
            return
        headers = self.policy.answer_headers(origin)
        await self.app(scope, receive, send_with(send, headers) if headers else send)

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
            (b"access-control-allow-headers", self.policy.allowed_headers),
            (b"access-control-max-age", self.policy.max_age),
            (b"vary", b"Origin"),
        ]
        await send_answer(send, 204, headers, b"")
