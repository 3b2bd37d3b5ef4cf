"""Token authentication (``Authorization: Bearer <token>`` or ``X-API-Key: <token>``) and
the scope model (docs/spec.md section 5): every route declares the scope it needs with
:func:`requires`, and :func:`access_error` is the one rule deciding whether a request has it.

Scopes: ``evaluate`` (browser-safe: OFREP, ``GET /v1/evaluate``, the change stream), ``sdk``
(``evaluate`` plus ``/v1/snapshot``, ``/v1/exposures``, ``/v1/outcomes``), ``viewer`` (every
admin read and ``explain``), ``admin`` (everything). A request without a token has the bind's
open scope (:attr:`~flagport_server.settings.Settings.open_scope`), if any.

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

import functools
import hmac
import logging
import math
import time
from typing import Any, Final, Literal

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme
from litestar.types import Message, Scope

from flagport.rollout.decision import DRIVER
from flagport_server.errors import Forbidden, ServerError, TooManyRequests, Unauthorized
from flagport_server.runtime import Runtime, hash_secret
from flagport_server.stores.base import SCOPE_MODEL, TokenRecord, TokenScope
from flagport_server.tickets import TicketError, check_ticket, day_of, read_ticket
from flagport_server.token_expiry import TOKEN_EXPIRES_HEADER, token_status

__all__ = [
    "ADMIN",
    "BOOTSTRAP_ACTOR",
    "BOOTSTRAP_TOKEN_ID",
    "EVALUATE",
    "FAILED_LOGIN_LIMIT",
    "FAILED_LOGIN_WINDOW_S",
    "PUBLIC",
    "RESERVED_ACTORS",
    "RESTORE_ACTOR",
    "SCOPES",
    "SDK",
    "SECURITY_SCHEMES",
    "SEED_ACTOR",
    "TOKEN_OPTIONAL",
    "TOKEN_REQUIRED",
    "VIEWER",
    "Actor",
    "FailedLogins",
    "RouteScope",
    "accepts_stream_ticket",
    "access",
    "access_error",
    "credential_of",
    "declared_scope",
    "expiry_warning",
    "grants",
    "needs_token",
    "openapi_security",
    "presented_token",
    "refused_login",
    "requires",
    "scope_guard",
    "token_by_id",
    "token_problem",
    "token_record",
]

#: The audit actor of the bootstrap token (``FLAGPORT_ADMIN_TOKEN``) and its token id.
BOOTSTRAP_ACTOR: Final = "admin"
BOOTSTRAP_TOKEN_ID: Final = "bootstrap"
#: The audit actor of ``--seed``.
SEED_ACTOR: Final = "seed"
#: The audit actor of ``flags restore`` (made on the store directly, with no token).
RESTORE_ACTOR: Final = "restore"
#: Names no new token may take (in any case): an audit entry by them must be what it says
#: (``driver``: the rollout driver's automatic transitions).
RESERVED_ACTORS: Final = frozenset({BOOTSTRAP_ACTOR, SEED_ACTOR, RESTORE_ACTOR, DRIVER})

EVALUATE: Final = "evaluate"
SDK: Final = "sdk"
VIEWER: Final = "viewer"
ADMIN: Final = "admin"
#: The token scopes, narrowest first.
SCOPES: Final[tuple[TokenScope, ...]] = (EVALUATE, SDK, VIEWER, ADMIN)
#: What a route that needs no token declares (the operations routes, the OpenAPI document).
PUBLIC: Final = "public"
#: What a route may declare: a token scope, or :data:`PUBLIC`.
RouteScope = Literal["evaluate", "sdk", "viewer", "admin", "public"]
_ROUTE_SCOPES: Final = frozenset({*SCOPES, PUBLIC})
#: The routes' scopes each token scope reaches (docs/spec.md section 5). ``viewer`` reads the
#: admin API but does not evaluate: a dashboard's key is not an SDK key.
_GRANTS: Final[dict[str, frozenset[str]]] = {
    EVALUATE: frozenset({EVALUATE}),
    SDK: frozenset({EVALUATE, SDK}),
    VIEWER: frozenset({VIEWER}),
    ADMIN: frozenset({EVALUATE, SDK, VIEWER, ADMIN}),
}
_SCOPE_OPT: Final = "flagport_scope"
#: A route opt: a stream ticket stands in for a token header (:func:`accepts_stream_ticket`).
_TICKET_OPT: Final = "flagport_stream_ticket"


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, as its audit entry records it: the token's name and id.
    ``request_id``: the approved change request being applied (set only by the approval
    service: a change under an approval policy passes with it)."""

    name: str
    token_id: str | None = None
    request_id: str | None = None


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


def refused_login(connection: ASGIConnection[Any, Any, Any, Any], problem: str) -> ServerError:
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


#: A token in one of these states opens nothing.
_INVALID: Final = frozenset({"revoked", "expired"})


@functools.lru_cache(maxsize=4)
def _bootstrap(admin_token: str) -> TokenRecord:
    """The bootstrap token as a record: its ``secret_hash`` is the admin token's, so what is
    bound to a token's credential (:func:`credential_of`) ends when the admin token changes."""
    return TokenRecord(
        id=BOOTSTRAP_TOKEN_ID,
        name=BOOTSTRAP_ACTOR,
        scope="admin",
        secret_hash=hash_secret(admin_token),
        created_at="",
        scope_model=SCOPE_MODEL,
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
    """The valid (known, not revoked, not expired) token ``secret`` is, else ``None``. The
    bootstrap token is a record with the id :data:`BOOTSTRAP_TOKEN_ID`. The expiry was made
    a number once per snapshot (:attr:`Served.token_expiry`): a token that never expires
    costs one attribute test more, one that does a lookup and a comparison."""
    bootstrap = runtime.settings.admin_token
    if bootstrap and hmac.compare_digest(secret.encode(), bootstrap.encode()):
        return _bootstrap(bootstrap)
    served = runtime.served
    if served is None:
        return None
    digest = hash_secret(secret)
    record = served.tokens.get(digest)
    if record is None or record.revoked_at is not None:
        return None
    if record.expires_at is not None and time.time() >= served.token_expiry[digest]:
        return None
    return record


def token_problem(runtime: Runtime, secret: str) -> str:
    """Why ``secret`` is refused (the 401's detail; only asked once it was): an expired
    token's or a rotated-away secret's names the moment it stopped working and what to do,
    never a secret."""
    served = runtime.served
    digest = hash_secret(secret)
    record = served.tokens.get(digest) if served is not None else None
    if record is not None and record.revoked_at is None and record.expires_at is not None:
        return (
            f"token {record.name!r} expired at {record.expires_at}: rotate it "
            f"(flags token rotate {record.id}) or use another token"
        )
    retired = served.retired_tokens.get(digest) if served is not None else None
    if retired is not None and retired.revoked_at is None:
        return (
            f"this secret of token {retired.name!r} stopped working at {retired.rotated_at}, "
            "when the token was rotated: use its new secret"
        )
    return "unknown or revoked token"


def access_error(
    connection: ASGIConnection[Any, Any, Any, Any], required: RouteScope
) -> ServerError | None:
    """Why this request may not use a route that needs ``required`` (401 without a valid
    token, 403 naming the scope for a token whose scope does not reach it, 429 after too many
    failures), or ``None`` if it may. The hot evaluation routes call this directly (a guard
    would copy the route handler on every request); every other route has
    :func:`scope_guard`."""
    return access(connection, required)[0]


def access(
    connection: ASGIConnection[Any, Any, Any, Any], required: RouteScope
) -> tuple[ServerError | None, TokenRecord | None]:
    """:func:`access_error`, and the valid token the request presented (``None`` when it
    needs none, or presented none)."""
    if required == PUBLIC:
        return None, None
    runtime: Runtime = connection.app.state.runtime
    if not needs_token(runtime, required):
        return None, None  # a token, if any, is not even read: the request needs none
    secret = presented_token(connection)
    if secret is None:
        return Unauthorized(
            f"this path needs a token with the {_reaching(required)}: send "
            "'Authorization: Bearer <token>'"
        ), None
    record = token_record(runtime, secret)
    if record is None:
        return refused_login(connection, token_problem(runtime, secret)), None
    return _within_scope(record, required)


def needs_token(runtime: Runtime, required: RouteScope) -> bool:
    """Whether a route that needs ``required`` needs a token on this bind (the bind's open
    scope does not reach it). :func:`access` asks this first; the evaluation dispatch asks it
    to skip building a connection for a request that needs no token."""
    open_scope = runtime.settings.open_scope
    return required != PUBLIC and (open_scope is None or not grants(open_scope, required))


def _within_scope(
    record: TokenRecord, required: TokenScope
) -> tuple[ServerError | None, TokenRecord | None]:
    """A valid token let in if its scope reaches ``required``, else 403 naming both."""
    if not grants(record.scope, required):
        return Forbidden(
            f"token {record.name!r} has the {record.scope} scope; this path needs the "
            f"{_reaching(required)}"
        ), None
    return None, record


def _reaching(required: TokenScope) -> str:
    """``"sdk scope"``, or with the broader scopes that include it: ``"sdk scope (or
    admin)"``."""
    broader = [scope for scope in SCOPES if scope != required and grants(scope, required)]
    return f"{required} scope" + (f" (or {' or '.join(broader)})" if broader else "")


def accepts_stream_ticket() -> dict[str, bool]:
    """A route's ``opt`` saying a stream ticket (``?ticket=``, :mod:`flagport_server.tickets`)
    stands in for a token header: the change stream, which a browser's ``EventSource`` opens
    without headers."""
    return {_TICKET_OPT: True}


def credential_of(record: TokenRecord) -> str:
    """What a UI session or a stream ticket made for ``record`` is bound to, and what an
    open stream is checked against: the hash of its secret of now (the bootstrap token's:
    of the configured admin token), so one made before the secret was rotated or the admin
    token changed no longer checks."""
    return record.secret_hash


def token_by_id(runtime: Runtime, token_id: str) -> TokenRecord | None:
    """The valid (known, not revoked, not expired) token whose id is ``token_id``, else
    ``None``."""
    if token_id == BOOTSTRAP_TOKEN_ID:
        admin_token = runtime.settings.admin_token
        return _bootstrap(admin_token) if admin_token else None
    for record in runtime.tokens.values():
        if record.id == token_id:
            return record if token_status(record, time.time()) not in _INVALID else None
    return None


def _ticket_access(
    connection: ASGIConnection[Any, Any, Any, Any],
    required: RouteScope,
    error: ServerError | None,
    record: TokenRecord | None,
) -> tuple[ServerError | None, TokenRecord | None]:
    """A route that takes stream tickets: a request refused for want of a token is let in
    by its ticket if it has a valid one; a request let in by a token header may not carry
    another token's ticket (what :func:`access` decided otherwise stands)."""
    ticket = connection.query_params.get("ticket")
    if ticket is None or required == PUBLIC:
        return error, record
    if error is None and record is None:
        return None, None  # the request needs no token: its ticket does not matter
    if presented_token(connection) is not None:
        if error is None and record is not None and not ticket.startswith(f"{record.id}."):
            return Unauthorized("the stream ticket was made for another token"), None
        return error, record
    runtime: Runtime = connection.app.state.runtime
    served = runtime.served
    key = served.ticket_key if served is not None else None
    if key is None:
        return Unauthorized("stream tickets are off on this server: send a token header"), None
    try:
        parsed = read_ticket(ticket)
        record = token_by_id(runtime, parsed.token_id)
        if record is None:
            raise TicketError("the token this stream ticket was made for is unknown or revoked")
        check_ticket(key, parsed, credential_of(record), day_of(time.time()))
    except TicketError as bad:
        return Unauthorized(str(bad)), None
    return _within_scope(record, required)


def openapi_security(
    required: RouteScope, open_scope: TokenScope | None
) -> list[SecurityRequirement]:
    """What the OpenAPI document says a route needs: a token, unless the bind's open scope
    (``flags serve``'s tokenless access) reaches ``required``."""
    if open_scope is not None and grants(open_scope, required):
        return TOKEN_OPTIONAL
    return TOKEN_REQUIRED


def grants(scope: TokenScope, required: RouteScope) -> bool:
    """Whether a token of ``scope`` may use a route that needs ``required``."""
    return required in _GRANTS[scope]


def requires(scope: RouteScope) -> dict[str, str]:
    """A route's (or router's) ``opt`` declaring the scope it needs; the handler's own
    declaration wins over its router's."""
    return {_SCOPE_OPT: scope}


def declared_scope(handler: BaseRouteHandler) -> RouteScope | None:
    """The scope ``handler`` declares, ``None`` if it declares none (a test walks every route
    and fails on that)."""
    scope = handler.opt.get(_SCOPE_OPT)
    return scope if scope in _ROUTE_SCOPES else None


async def scope_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The guard of every route but the hot evaluation ones: the route's declared scope, and
    the token's name and id as the audit actor."""
    required = declared_scope(handler)
    if required is None:  # never served: the route walk test fails first
        raise Forbidden(f"{connection.scope['path']} declares no scope")
    error, record = access(connection, required)
    if handler.opt.get(_TICKET_OPT):
        error, record = _ticket_access(connection, required, error, record)
    if error is not None:
        raise error
    if record is not None:
        connection.state.actor = Actor(record.name, record.id)
        #: The token the request was let in with (the change stream ends when it is revoked).
        connection.state.token = record
        if record.expires_at is not None and token_status(record, time.time()) == "expiring":
            # Read by expiry_warning as the answer starts (a guard cannot add headers).
            connection.state.token_expires = record.expires_at


async def expiry_warning(message: Message, scope: Scope) -> None:
    """The app's ``before_send`` hook: an answer to a request whose token expires within 7
    days names the expiry in :data:`TOKEN_EXPIRES_HEADER` (the CLI warns on stderr). The
    evaluation dispatch answers in front of the app, so the hot path never runs this."""
    if message["type"] != "http.response.start":
        return
    expires = scope.get("state", {}).get("token_expires")
    if expires:
        headers = list(message.get("headers") or [])
        headers.append((TOKEN_EXPIRES_HEADER.lower().encode(), str(expires).encode()))
        message["headers"] = headers
