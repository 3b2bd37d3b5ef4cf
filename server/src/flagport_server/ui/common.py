"""What every admin UI page shares (docs/adr/0026-admin-ui.md): who is signed in (the
session cookie re-checked against the live tokens), the role a route needs, strict form
decoding, the CSRF check and the page response. The pages themselves are
:mod:`flagport_server.ui.routes` and :mod:`flagport_server.ui.flag_routes`."""

from __future__ import annotations

import time
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Template

from flagport_server.audit import percentage_text
from flagport_server.auth import (
    ADMIN,
    PUBLIC,
    VIEWER,
    Actor,
    credential_of,
    requires,
    token_by_id,
)
from flagport_server.errors import Forbidden, InvalidInput, ServerError, SignInNeeded
from flagport_server.runtime import Runtime
from flagport_server.services import AdminService
from flagport_server.stores.base import TokenRecord
from flagport_server.ui.session import (
    SESSION_COOKIE,
    SessionError,
    check_session,
    csrf_matches,
    csrf_token,
    read_session,
)
from flagport_server.wire.fields import validation_problem

__all__ = [
    "Admin",
    "Csrf",
    "UiRequest",
    "UiUser",
    "check_csrf",
    "current_user",
    "page",
    "percent",
    "read_form",
    "server_secret",
    "signed_in",
    "ui_guard",
    "ui_opts",
]

#: The UI's role opt (``viewer``: any signed-in token, ``admin``: admin tokens only).
_UI_ROLE_OPT: Final = "flagport_ui_role"

Admin = NamedDependency[AdminService]
UiRequest = Request[Any, Any, State]
#: A form's CSRF token (an HMAC in URL-safe base64).
Csrf = Annotated[str, msgspec.Meta(max_length=64)]


class UiUser(msgspec.Struct, frozen=True):
    """Who is signed in: the live token, the session and its forms' CSRF token."""

    token: TokenRecord
    session: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.token.scope == ADMIN

    @property
    def actor(self) -> Actor:
        return Actor(self.token.name, self.token.id)


def server_secret(connection: ASGIConnection[Any, Any, Any, Any]) -> bytes:
    """The store's server secret, which signs sessions and CSRF tokens."""
    runtime: Runtime = connection.app.state.runtime
    served = runtime.served
    if served is None or served.ticket_key is None:
        raise ServerError(
            "the admin UI needs the store's server secret, which this worker could not read: "
            "see /readyz"
        )
    return served.ticket_key


def signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> UiUser:
    """The signed-in user, re-checked against the live tokens; :class:`SignInNeeded`."""
    path = connection.scope["path"]
    value = connection.cookies.get(SESSION_COOKIE)
    if not value:
        raise SignInNeeded("sign in to continue", path)
    secret = server_secret(connection)
    runtime: Runtime = connection.app.state.runtime
    try:
        session = read_session(value)
        record = token_by_id(runtime, session.token_id)
        if record is None or record.scope not in (ADMIN, VIEWER):
            raise SessionError("the token of this session was revoked")
        check_session(secret, session, credential_of(record), time.time())
    except SessionError as bad:
        raise SignInNeeded(f"{bad}: sign in again", path) from None
    return UiUser(record, value, csrf_token(secret, value))


async def ui_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The UI pages' guard: a valid session, and an admin token for the routes that change
    something (a viewer's POST is refused with 403, nothing changed)."""
    role = handler.opt.get(_UI_ROLE_OPT)
    if role is None:
        return
    user = signed_in(connection)
    if role == ADMIN and not user.is_admin:
        raise Forbidden(
            f"token {user.token.name!r} has the {user.token.scope} scope: only an admin "
            "token may change flags"
        )
    connection.state.ui_user = user


def percent(value: Any) -> str:
    """A percentage as every page shows it (``12.5 %``, ``100 %``): the audit's text of the
    number, then U+202F (a narrow no-break space); the templates' ``percent`` filter."""
    return f"{percentage_text(value)}\u202f%"


def ui_opts(role: Literal["viewer", "admin"] | None) -> dict[str, Any]:
    """A UI route's opts: the admin API's scope model sees it as public (it takes no token
    header: :func:`ui_guard` reads the session), the UI's own role says who may use it."""
    return {**requires(PUBLIC), _UI_ROLE_OPT: role}


def current_user(request: UiRequest) -> UiUser:
    """The user :func:`ui_guard` found (routes with a role only)."""
    user: UiUser = request.state.ui_user
    return user


async def read_form(request: UiRequest, kind: type[Any]) -> Any:
    """The form's fields converted strictly to ``kind`` (unknown fields refused, each field
    bounded), :class:`InvalidInput` naming the field."""
    form = await request.form()
    fields = {name: form.get(name) for name in form}
    try:
        return msgspec.convert(fields, type=kind, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidInput(*validation_problem(str(error))) from None


def check_csrf(request: UiRequest, binding: str | None, presented: str) -> None:
    """403 (nothing changed) unless ``presented`` is the CSRF token of ``binding``."""
    if not csrf_matches(server_secret(request), binding, presented):
        raise Forbidden(
            "the form's CSRF token is missing or wrong (the page is stale, or another site "
            "sent it): nothing was changed; reload the page and try again"
        )


def page(name: str, request: UiRequest, status: int = 200, **context: Any) -> Template:
    """Template ``name`` with the signed-in user (if any) and the path in its context."""
    user = getattr(request.state, "ui_user", None)
    return Template(
        template_name=name,
        context={"user": user, "path": request.url.path, **context},
        status_code=status,
    )
