"""Token authentication: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``.

Tokens are stored as SHA-256 hashes and looked up in the worker's in-memory copy (refreshed
with every snapshot), so checking an evaluation token costs no store round trip. The
bootstrap admin token (``FLAGPORT_ADMIN_TOKEN``) is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from flagport_server.errors import Forbidden, Unauthorized
from flagport_server.state import Runtime, hash_secret

__all__ = [
    "BOOTSTRAP_ACTOR",
    "admin_guard",
    "evaluation_guard",
    "evaluation_token_problem",
    "presented_token",
]

BOOTSTRAP_ACTOR = "admin"


def presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = connection.headers.get("x-api-key")
    return api_key.strip() if api_key else None


def _identify(runtime: Runtime, secret: str) -> tuple[str, str] | None:
    """(actor name, scope) for a valid token, else ``None``."""
    bootstrap = runtime.settings.admin_token
    if bootstrap and hmac.compare_digest(secret.encode(), bootstrap.encode()):
        return BOOTSTRAP_ACTOR, "admin"
    record = runtime.tokens.get(hash_secret(secret))
    if record is None or record.revoked_at is not None:
        return None
    return record.name, record.scope


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    runtime: Runtime = connection.app.state.runtime
    secret = presented_token(connection)
    if secret is None:
        raise Unauthorized("admin token required: send 'Authorization: Bearer <token>'")
    identity = _identify(runtime, secret)
    if identity is None:
        raise Unauthorized("unknown or revoked token")
    actor, scope = identity
    if scope != "admin":
        raise Forbidden(f"token {actor!r} has the evaluate scope; this path needs an admin token")
    connection.state.actor = actor


def evaluation_token_problem(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """Why this connection may not evaluate, or ``None`` if it may (any valid token)."""
    runtime: Runtime = connection.app.state.runtime
    if runtime.settings.evaluation_open:
        return None
    secret = presented_token(connection)
    if secret is None:
        return "evaluation token required: send 'Authorization: Bearer <token>'"
    if _identify(runtime, secret) is None:
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
