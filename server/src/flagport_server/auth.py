"""Token authentication: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``.

Tokens are stored as SHA-256 hashes and looked up in the worker's in-memory copy (refreshed
with every snapshot), so checking an evaluation token costs no store round trip. The
bootstrap admin token (``FLAGPORT_ADMIN_TOKEN``) is compared in constant time.

A wrong token is logged with the client's address, and past :data:`FAILED_LOGIN_LIMIT`
failures in :data:`FAILED_LOGIN_WINDOW_S` from one address (per worker) it answers 429 with
``Retry-After`` and is no longer logged one by one. A valid token always passes, whatever
its address did: several clients behind one proxy share an address, and nobody's typos may
lock an operator out of the kill switch (docs/adr/0009-auth-hardening.md).
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from typing import Any, Final

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme

from flagport_server.errors import Forbidden, ServerError, TooManyRequests, Unauthorized
from flagport_server.runtime import Runtime, hash_secret
from flagport_server.stores.base import TokenRecord

__all__ = [
    "BOOTSTRAP_ACTOR",
    "BOOTSTRAP_TOKEN_ID",
    "FAILED_LOGIN_LIMIT",
    "FAILED_LOGIN_WINDOW_S",
    "RESERVED_ACTORS",
    "SECURITY_SCHEMES",
    "SEED_ACTOR",
    "TOKEN_OPTIONAL",
    "TOKEN_REQUIRED",
    "Actor",
    "FailedLogins",
    "admin_guard",
    "evaluation_auth_error",
    "evaluation_guard",
    "presented_token",
    "token_record",
]

#: The audit actor of the bootstrap token (``FLAGPORT_ADMIN_TOKEN``) and its token id.
BOOTSTRAP_ACTOR: Final = "admin"
BOOTSTRAP_TOKEN_ID: Final = "bootstrap"
#: The audit actor of ``--seed``.
SEED_ACTOR: Final = "seed"
#: Names no new token may take (in any case): an audit entry by them must be what it says.
RESERVED_ACTORS: Final = frozenset({BOOTSTRAP_ACTOR, SEED_ACTOR})


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, as its audit entry records it: the token's name and id."""

    name: str
    token_id: str | None = None


log = logging.getLogger("flagport.server")

#: The OpenAPI security schemes: a token as a bearer token or in ``X-API-Key``.
SECURITY_SCHEMES: Final[dict[str, SecurityScheme | Reference]] = {
    "bearerToken": SecurityScheme(
        type="http", scheme="bearer", description="A Flagport token: 'Authorization: Bearer ...'"
    ),
    "apiKey": SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="The same token in the X-API-Key header",
    ),
}
#: Operations that need a token (either scheme).
TOKEN_REQUIRED: Final[list[SecurityRequirement]] = [{"bearerToken": []}, {"apiKey": []}]
#: Operations that take a token but need none (evaluation on an open bind).
TOKEN_OPTIONAL: Final[list[SecurityRequirement]] = [*TOKEN_REQUIRED, {}]

#: Failed token checks one client address may make per window, per worker.
FAILED_LOGIN_LIMIT: Final = 20
FAILED_LOGIN_WINDOW_S: Final = 60.0
#: Addresses remembered at most (memory stays bounded whatever the addresses).
_FAILED_LOGIN_ADDRESSES: Final = 10_000


class FailedLogins:
    """Failed token checks per client address in fixed windows."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, count)

    def record(self, address: str, now: float) -> tuple[int, int | None]:
        """Count one failure: (failures in the address's window, seconds until the window
        ends when they are over the limit, else ``None``)."""
        start, count = self._windows.pop(address, (now, 0))
        if now - start >= FAILED_LOGIN_WINDOW_S:
            start, count = now, 0
        count += 1
        self._windows[address] = (start, count)  # last in order: the most recent failure
        if len(self._windows) > _FAILED_LOGIN_ADDRESSES:
            del self._windows[next(iter(self._windows))]
        if count <= FAILED_LOGIN_LIMIT:
            return count, None
        return count, max(1, math.ceil(start + FAILED_LOGIN_WINDOW_S - now))


def _refused(connection: ASGIConnection[Any, Any, Any, Any], problem: str) -> ServerError:
    """The error for a token that is not (or no longer) valid, counted and logged."""
    state = connection.app.state
    failures: FailedLogins | None = state.get("failed_logins")
    if failures is None:
        failures = state["failed_logins"] = FailedLogins()
    client = connection.client
    address = client.host if client is not None and client.host else "a Unix socket peer"
    count, retry_after = failures.record(address, time.monotonic())
    if count <= FAILED_LOGIN_LIMIT:
        log.warning(
            "auth failed: %s %s from %s: %s",
            connection.scope.get("method", "GET"),
            connection.scope["path"],
            address,
            problem,
        )
    elif count == FAILED_LOGIN_LIMIT + 1:
        log.warning(
            "auth failed %d times in %g s from %s: answering 429 without logging each "
            "failure for %d s",
            count,
            FAILED_LOGIN_WINDOW_S,
            address,
            retry_after,
        )
    if retry_after is not None:
        return TooManyRequests(
            f"too many failed token checks from {address}; retry in {retry_after} s",
            retry_after,
        )
    return Unauthorized(problem)


_BOOTSTRAP: Final = TokenRecord(
    id=BOOTSTRAP_TOKEN_ID, name=BOOTSTRAP_ACTOR, scope="admin", secret_hash="", created_at=""
)


def presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = connection.headers.get("x-api-key")
    return api_key.strip() if api_key else None


def token_record(runtime: Runtime, secret: str) -> TokenRecord | None:
    """The valid (known, not revoked) token ``secret`` is, else ``None``. The bootstrap
    token is a record with the id :data:`BOOTSTRAP_TOKEN_ID`."""
    bootstrap = runtime.settings.admin_token
    if bootstrap and hmac.compare_digest(secret.encode(), bootstrap.encode()):
        return _BOOTSTRAP
    record = runtime.tokens.get(hash_secret(secret))
    if record is None or record.revoked_at is not None:
        return None
    return record


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    runtime: Runtime = connection.app.state.runtime
    secret = presented_token(connection)
    if secret is None:
        raise Unauthorized("admin token required: send 'Authorization: Bearer <token>'")
    record = token_record(runtime, secret)
    if record is None:
        raise _refused(connection, "unknown or revoked token")
    if record.scope != "admin":
        raise Forbidden(
            f"token {record.name!r} has the evaluate scope; this path needs an admin token"
        )
    connection.state.actor = Actor(record.name, record.id)


def evaluation_auth_error(connection: ASGIConnection[Any, Any, Any, Any]) -> ServerError | None:
    """Why this connection may not evaluate (401 or 429), or ``None`` if it may (any valid
    token)."""
    runtime: Runtime = connection.app.state.runtime
    if runtime.settings.evaluation_open:
        return None
    secret = presented_token(connection)
    if secret is None:
        return Unauthorized("evaluation token required: send 'Authorization: Bearer <token>'")
    if token_record(runtime, secret) is None:
        return _refused(connection, "unknown or revoked token")
    return None


async def evaluation_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard for the SDK feeds (the hot OFREP routes call :func:`evaluation_auth_error`
    directly: Litestar copies the route handler for every guard call)."""
    error = evaluation_auth_error(connection)
    if error is not None:
        raise error
