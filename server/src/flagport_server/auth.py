"""Token authentication: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``.

Tokens are stored as SHA-256 hashes and looked up in the worker's in-memory copy (refreshed
with every snapshot), so checking an evaluation token costs no store round trip. The
bootstrap admin token (``FLAGPORT_ADMIN_TOKEN``) is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from flagport_server.errors import Forbidden, Unauthorized
from flagport_server.state import Runtime, hash_secret
from flagport_server.stores.base import TokenRecord

__all__ = [
    "BOOTSTRAP_ACTOR",
    "BOOTSTRAP_TOKEN_ID",
    "RESERVED_ACTORS",
    "SEED_ACTOR",
    "Actor",
    "admin_guard",
    "evaluation_guard",
    "evaluation_token_problem",
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
        raise Unauthorized("unknown or revoked token")
    if record.scope != "admin":
        raise Forbidden(
            f"token {record.name!r} has the evaluate scope; this path needs an admin token"
        )
    connection.state.actor = Actor(record.name, record.id)


def evaluation_token_problem(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """Why this connection may not evaluate, or ``None`` if it may (any valid token)."""
    runtime: Runtime = connection.app.state.runtime
    if runtime.settings.evaluation_open:
        return None
    secret = presented_token(connection)
    if secret is None:
        return "evaluation token required: send 'Authorization: Bearer <token>'"
    if token_record(runtime, secret) is None:
        return "unknown or revoked token"
    return None


async def evaluation_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard for the SDK feeds (the hot OFREP routes call :func:`evaluation_token_problem`
    directly: Litestar copies the route handler for every guard call)."""
    problem = evaluation_token_problem(connection)
    if problem is not None:
        raise Unauthorized(problem)
