"""DNS rebinding protection for a TCP loopback bind (pure ASGI, wrapped around the whole app).

A loopback bind serves the ``sdk`` scope without a token (docs/spec.md section 5): every rule,
targeted user id and segment member. A web page the developer visits can rename its own host
to 127.0.0.1 (DNS rebinding) and then read it with same-origin requests, which the browser
sends with ``Host: <the attacker's name>``. So a request without a valid token must name this
server: ``localhost``, ``127.0.0.1``, ``[::1]`` or a name given with ``flags serve
--allowed-host``; any other ``Host`` is answered 421 and reaches nothing. A request with a
valid token passes whatever its ``Host`` (a page cannot know a token), and so do requests on
a Unix socket (the PHP bridge, the SDK and the CLI send ``Host: flagport`` there): the
middleware is only installed on a TCP loopback bind.

A request without a ``Host`` header passes: every browser sends one, and the attack needs a
browser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from flagport_server.auth import presented_token, token_record
from flagport_server.cors import CorsPolicy
from flagport_server.errors import MisdirectedRequest
from flagport_server.runtime import Runtime
from flagport_server.wire import ofrep_v1
from flagport_server.wire.admin_v1 import Problem

__all__ = ["LOOPBACK_NAMES", "HostCheck", "host_name", "valid_allowed_host"]

#: The names a tokenless request to a loopback bind may use.
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HTTP: Final[str] = ScopeType.HTTP
#: Allowed ``Host`` values remembered at most (``localhost:8787``, ``127.0.0.1:8787``...):
#: memory stays bounded whatever clients send.
_REMEMBERED_VALUES: Final = 64
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower-cased, without its port (``[::1]:8787`` ->
    ``[::1]``, ``LocalHost:80`` -> ``localhost``)."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def valid_allowed_host(name: str) -> str | None:
    """``name`` as the check compares it (lower case), or ``None`` when it is not a host
    name or an IP address (an ``--allowed-host`` must be one: no port, scheme or path)."""
    value = name.strip().lower()
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        labels = value.split(".")
        if (
            not value
            or len(value) > 253
            or not set(value) <= _NAME_CHARS
            or any(not label or len(label) > 63 or label[0] == "-" for label in labels)
        ):
            return None
        return value
    return f"[{address}]" if address.version == 6 else str(address)


class HostCheck:
    """Answer 421 to a request whose ``Host`` is not an allowed name unless it carries a
    valid token."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        allowed: Iterable[str] = (),
        cors: CorsPolicy | None = None,
    ) -> None:
        self.app = app
        #: Whose headers a refusal on the evaluation surface carries.
        self.cors = cors
        self.runtime = runtime
        self.allowed = LOOPBACK_NAMES | {host_name(name) for name in allowed}
        #: ``Host`` values (as sent) already found allowed: a set lookup instead of parsing
        #: the header on every request (a client sends the same one each time).
        self._allowed_values: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != _HTTP:  # lifespan (Flagport serves no websockets)
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope["headers"]:
            if name == b"host":
                raw = value
                break
        if self.allows(scope, raw):
            await self.app(scope, receive, send)
            return
        await self.refuse(scope, send, raw)

    def allows(self, scope: Scope, raw: bytes | None) -> bool:
        """Whether a request with ``Host`` value ``raw`` (None: absent) may be served: an
        allowed name, or a valid token (the evaluation dispatch asks this for its own
        requests, having read the header in its own scan)."""
        if raw is None or raw in self._allowed_values:
            return True
        if host_name(raw.decode("latin-1")) in self.allowed:
            if len(self._allowed_values) < _REMEMBERED_VALUES:
                self._allowed_values.add(raw)
            return True
        secret = presented_token(ASGIConnection(scope))
        return secret is not None and token_record(self.runtime, secret) is not None

    async def refuse(self, scope: Scope, send: Send, raw: bytes | None) -> None:
        """Answer 421: ``Host`` value ``raw`` is not a name of this server (one
        :meth:`allows` refused: never an absent one)."""
        host = (raw or b"").decode("latin-1")
        error = MisdirectedRequest(
            f"Host {host[:200]!r} is not a name of this server: a request without a token to "
            "a loopback bind must name localhost, 127.0.0.1 or [::1] (or a name given with "
            "flags serve --allowed-host); other names are refused against DNS rebinding"
        )
        cors = self.cors.headers_for(scope) if self.cors is not None else ()
        await _answer(scope, send, error, cors)


async def _answer(
    scope: Scope, send: Send, error: MisdirectedRequest, cors: Sequence[tuple[bytes, bytes]]
) -> None:
    """The refusal in the shape the path's clients read: OFREP's on the evaluation routes,
    problem details elsewhere."""
    path: str = scope.get("path", "")
    if path.startswith("/ofrep/"):
        body = ofrep_v1.encode(
            ofrep_v1.RequestFailure(errorCode="GENERAL", errorDetails=error.detail)
        )
        media = b"application/json"
    else:
        body = msgspec.json.encode(
            Problem(title=error.title, status=error.status_code, detail=error.detail)
        )
        media = b"application/problem+json"
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": error.status_code,
        "headers": [
            (b"content-type", media),
            (b"content-length", str(len(body)).encode()),
            *cors,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
