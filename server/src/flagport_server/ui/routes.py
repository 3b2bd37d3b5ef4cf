"""The admin UI (``/ui/``; docs/adr/0026-admin-ui.md): server-rendered pages over the admin
services, so nothing is done here that is not validated, audited and propagated exactly as
through the admin API. Each handler decodes the form, calls one service, renders.

Who is signed in comes from the session cookie (:mod:`flagport_server.ui.session`), checked
by :func:`ui_guard` against the live tokens on every request; the admin API never reads that
cookie (its guard reads token headers only). Every POST carries a CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Response, Router, get, post
from litestar.config.compression import CompressionConfig
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.template import TemplateConfig
from markupsafe import escape

from flagport_server.auth import ADMIN, VIEWER, credential_of, refused_login, token_record
from flagport_server.errors import Forbidden, NotFound, ServerError, SignInNeeded
from flagport_server.http_errors import UI_EXCEPTION_HANDLERS
from flagport_server.operations import Operations
from flagport_server.rate_limit import TrustedProxies
from flagport_server.routes.feeds import STREAM_RETRY_AFTER, OpenStreams
from flagport_server.runtime import Runtime
from flagport_server.settings import Settings, is_loopback
from flagport_server.ui.common import (
    Admin,
    Csrf,
    UiRequest,
    check_csrf,
    current_user,
    page,
    percent,
    read_form,
    server_secret,
    signed_in,
    ui_guard,
    ui_opts,
)
from flagport_server.ui.flag_routes import FLAG_ROUTES, flag_path
from flagport_server.ui.policy import SECURITY_HEADERS
from flagport_server.ui.session import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    csrf_token,
    mint_session,
    new_nonce,
)
from flagport_server.ui.views import (
    MAX_FILTER_TAG,
    MAX_FILTER_TEXT,
    SPARK_HOURS,
    flag_tree,
    matching_flags,
    monitor_view,
    rollouts_view,
    sparkline,
)
from flagport_server.wire.fields import Reason

__all__ = ["UI_BODY_LIMIT", "ui_compression_config", "ui_router", "ui_template_config"]

log = logging.getLogger("flagport.server")

HERE = Path(__file__).resolve().parent
#: A UI form is a few short fields.
UI_BODY_LIMIT: Final = 8 * 1024
#: Seconds between two monitor fragments when nothing changed (the page's heartbeat: a page
#: that hears nothing for three of them says it lost the server).
MONITOR_HEARTBEAT_S: Final = 5.0
_STATIC: Final = {
    "ui.css": ((HERE / "static" / "ui.css").read_bytes(), "text/css; charset=utf-8"),
    "monitor.js": ((HERE / "static" / "monitor.js").read_bytes(), "text/javascript"),
}

Operation = NamedDependency[Operations]


def ui_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 with autoescaping on for every template (keys, descriptions and reasons are
    untrusted text) and undefined names an error, not an empty string."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    environment.filters["percent"] = percent
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def _over_https(request: UiRequest) -> bool:
    """Whether the browser's connection is HTTPS: this server's TLS, or a trusted proxy
    (``--trusted-proxy``) that terminated it and says so in ``X-Forwarded-Proto``."""
    if request.url.scheme == "https":
        return True
    runtime: Runtime = request.app.state.runtime
    proxies = TrustedProxies(runtime.settings.trusted_proxies)
    peer = request.client.host if request.client is not None else ""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.strip().lower() == "https" and proxies.trusts(peer)


def _plain_http_refusal(settings: Settings, https: bool) -> str | None:
    """Why a sign-in may not be made here: a token over plain HTTP off loopback."""
    if https or settings.uds is not None or is_loopback(settings.host):
        return None
    return (
        f"sign-in is refused over plain HTTP on {settings.host}: the token would cross the "
        "network in cleartext. Serve HTTPS (flags serve --tls-cert/--tls-key), or bind to "
        "127.0.0.1 behind a TLS-terminating proxy (README: the admin UI behind Nginx)"
    )


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a UI path of this server, else the flags page."""
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value[:512]
    return "/ui/flags"


class SignInForm(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    csrf: Csrf
    next: Annotated[str, msgspec.Meta(max_length=512)] = "/ui/flags"


class PostForm(msgspec.Struct, forbid_unknown_fields=True):
    csrf: Csrf


class KillForm(msgspec.Struct, forbid_unknown_fields=True):
    csrf: Csrf
    reason: Reason | None = None
    #: Where to go after: the list, the monitor, or the flag's own page.
    back: Literal["flags", "deployment-monitor", "rollouts", "flag"] = "flags"


@get("/", opt=ui_opts(None), include_in_schema=False)
async def ui_home() -> Redirect:
    return Redirect("/ui/deployment-monitor", status_code=303)


@get("/static/{name:str}", opt=ui_opts(None), include_in_schema=False)
async def ui_static(name: FromPath[str]) -> Response[bytes]:
    found = _STATIC.get(name)
    if found is None:
        return Response(b"not found", status_code=404, media_type="text/plain")
    return Response(found[0], media_type=found[1], headers={"Cache-Control": "max-age=300"})


@get("/sign-in", opt=ui_opts(None), include_in_schema=False)
async def sign_in_page(
    request: UiRequest,
    next_path: Annotated[
        str | None, QueryParameter(name="next", required=False, max_length=512)
    ] = None,
) -> Template:
    nonce = request.cookies.get(PRESESSION_COOKIE) or new_nonce()
    runtime: Runtime = request.app.state.runtime
    template = page(
        "sign_in.html",
        request,
        csrf=csrf_token(server_secret(request), nonce),
        next=_safe_next(next_path),
        problem=_plain_http_refusal(runtime.settings, _over_https(request)),
    )
    template.cookies.append(_cookie(request, PRESESSION_COOKIE, nonce, 3600))
    return template


def _cookie(request: UiRequest, name: str, value: str, max_age: int) -> Cookie:
    runtime: Runtime = request.app.state.runtime
    return Cookie(
        key=name,
        value=value,
        max_age=max_age,
        path="/ui",
        secure=_over_https(request) or runtime.settings.tls_cert is not None,
        httponly=True,
        samesite="strict",
    )


@post("/sign-in", opt=ui_opts(None), include_in_schema=False)
async def sign_in(request: UiRequest) -> Response[Any]:
    runtime: Runtime = request.app.state.runtime
    refusal = _plain_http_refusal(runtime.settings, _over_https(request))
    if refusal is not None:
        raise Forbidden(refusal)
    form: SignInForm = await read_form(request, SignInForm)
    check_csrf(request, request.cookies.get(PRESESSION_COOKIE), form.csrf)
    record = token_record(runtime, form.token)
    if record is None:
        raise refused_login(request, "unknown or revoked token (admin UI sign-in)")
    if record.scope not in (ADMIN, VIEWER):
        raise Forbidden(
            f"token {record.name!r} has the {record.scope} scope: the admin UI takes an admin "
            "or a viewer token"
        )
    expires = int(time.time()) + SESSION_SECONDS
    session = mint_session(server_secret(request), record.id, expires, credential_of(record))
    log.info("admin UI: %s signed in (token %s)", record.name, record.id)
    response: Response[Any] = Redirect(_safe_next(form.next), status_code=303)
    response.cookies.append(_cookie(request, SESSION_COOKIE, session, SESSION_SECONDS))
    response.cookies.append(_cookie(request, PRESESSION_COOKIE, "", 0))
    return response


@post("/sign-out", opt=ui_opts(VIEWER), include_in_schema=False)
async def sign_out(request: UiRequest) -> Response[Any]:
    form: PostForm = await read_form(request, PostForm)
    user = current_user(request)
    check_csrf(request, user.session, form.csrf)
    response: Response[Any] = Redirect("/ui/sign-in", status_code=303)
    response.cookies.append(_cookie(request, SESSION_COOKIE, "", 0))
    return response


@get("/flags", opt=ui_opts(VIEWER), include_in_schema=False)
async def flags_page(
    request: UiRequest,
    admin: Admin,
    q: Annotated[str, QueryParameter(required=False)] = "",
    tag: Annotated[str, QueryParameter(required=False)] = "",
) -> Template:
    """Every flag as a tree, or those matching the filter (``q``: text in the key,
    description or owner; ``tag``) with their ancestors."""
    state = await admin.state()
    shown = matching_flags(state.document.flags, q, tag)
    since, hourly = await admin.hourly_evaluations(SPARK_HOURS, time.time())
    return page(
        "flags.html",
        request,
        tree=flag_tree(shown),
        sparks={key: sparkline(hourly.get(key, {}), since) for key in shown},
        count=len(state.document.flags),
        shown=len(shown),
        q=q[:MAX_FILTER_TEXT],
        tag=tag[:MAX_FILTER_TAG],
        tags=sorted({t for flag in state.document.flags.values() for t in flag.tags}),
        unreadable=state.unreadable_flags,
    )


@post("/flags/{key:str}/disable", opt=ui_opts(ADMIN), include_in_schema=False)
async def kill_switch(key: FromPath[str], request: UiRequest, admin: Admin) -> Redirect:
    """The kill switch: the admin service's disable (validated, audited, propagated)."""
    user = current_user(request)
    form: KillForm = await read_form(request, KillForm)
    check_csrf(request, user.session, form.csrf)
    await admin.disable([key], user.actor, form.reason or None)
    return Redirect(flag_path(key) if form.back == "flag" else f"/ui/{form.back}", status_code=303)


class PlanForm(msgspec.Struct, forbid_unknown_fields=True):
    csrf: Csrf
    reason: Reason | None = None
    #: The page the action was taken on, to go back to.
    back: Literal["deployment-monitor", "rollouts"] = "deployment-monitor"


@get("/rollouts", opt=ui_opts(VIEWER), include_in_schema=False)
async def rollouts_page(request: UiRequest, admin: Admin) -> Template:
    """Every plan: its step, the time to its next, each guard's reading against its
    threshold, pause / resume / abort, and the evidence of each of the driver's actions."""
    return page("rollouts.html", request, view=await rollouts_view(admin))


@post("/rollouts/{key:str}/{action:str}", opt=ui_opts(ADMIN), include_in_schema=False)
async def plan_action(
    key: FromPath[str], action: FromPath[str], request: UiRequest, admin: Admin
) -> Redirect:
    """Pause, resume or abort a plan from the monitor or the rollouts page: the admin API's
    plan service (validated, audited under the token's name, one commit). Abort leaves the
    flag as it is (the kill switch beside it rolls back)."""
    user = current_user(request)
    form: PlanForm = await read_form(request, PlanForm)
    check_csrf(request, user.session, form.csrf)
    if action == "pause":
        await admin.plans.pause(key, user.actor, form.reason)
    elif action == "resume":
        await admin.plans.resume(key, user.actor, form.reason)
    elif action == "abort":
        await admin.plans.abort(key, user.actor, form.reason, rollback=False)
    else:
        raise NotFound(f"no plan action {action[:40]!r}: pause, resume or abort")
    return Redirect(f"/ui/{form.back}", status_code=303)


@get("/deployment-monitor", opt=ui_opts(VIEWER), include_in_schema=False)
async def monitor_page(request: UiRequest, admin: Admin, operations: Operation) -> Template:
    view = await monitor_view(admin, operations)
    return page("monitor.html", request, view=view, heartbeat=MONITOR_HEARTBEAT_S)


@get("/deployment-monitor/events", opt=ui_opts(VIEWER), include_in_schema=False)
async def monitor_events(
    request: UiRequest, admin: Admin, operations: Operation
) -> ServerSentEvent | Response[bytes]:
    """The monitor's body as HTML fragments: one as soon as the served snapshot changes
    (the runtime's change notification, as the change stream's), else one every
    :data:`MONITOR_HEARTBEAT_S` (guard readings move without a change). A monitor is one of
    the worker's open streams (``--max-streams``; ended when the worker is told to stop, or
    a graceful stop would wait for it). The session is checked before each fragment: a
    revoked token ends the stream."""
    runtime: Runtime = request.app.state.runtime
    streams: OpenStreams = request.app.state.open_streams
    slot = streams.open(runtime)
    if slot is None:
        return Response(
            b"too many streams open on this worker; the page retries",
            status_code=503,
            media_type="text/plain",
            headers={"Retry-After": STREAM_RETRY_AFTER},
        )
    queue, release = slot
    engine = request.app.template_engine
    assert engine is not None
    template = engine.get_template("_monitor_body.html")

    async def fragments() -> AsyncIterator[str]:
        try:
            while not streams.stopping:
                try:
                    user = signed_in(request)
                except SignInNeeded:
                    return  # the page's next load signs in again
                try:
                    view = await monitor_view(admin, operations)
                except ServerError as error:  # the store is down: say so, keep the stream
                    yield f'<p class="problem" role="alert">{escape(error.detail)}</p>'
                else:
                    yield template.render(view=view, user=user, path="/ui/deployment-monitor")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.get(), MONITOR_HEARTBEAT_S)
                while not queue.empty():  # a burst of changes is one fragment
                    queue.get_nowait()
        finally:
            release()

    stream = fragments()
    # A client gone before the stream starts leaves a generator never iterated.
    weakref.finalize(stream, release)
    return ServerSentEvent(
        stream, event_type="monitor", headers={"X-Accel-Buffering": "no"}, retry_duration=2000
    )


def _security_headers(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


ui_router = Router(
    path="/ui",
    guards=[ui_guard],
    after_request=_security_headers,
    exception_handlers=UI_EXCEPTION_HANDLERS,
    request_max_body_size=UI_BODY_LIMIT,
    include_in_schema=False,
    route_handlers=[
        ui_home,
        ui_static,
        sign_in_page,
        sign_in,
        sign_out,
        flags_page,
        *FLAG_ROUTES,
        kill_switch,
        rollouts_page,
        plan_action,
        monitor_page,
        monitor_events,
    ],
)


def ui_compression_config() -> CompressionConfig:
    """The UI's pages gzip-compressed for a client that asks (the flag list of 1,000 flags:
    1.3 MB, 81 KB compressed). Only ``/ui/`` pages: never the evaluation surface, the admin
    API or a stream (compressing one would hold its events in the compressor's buffer)."""
    return CompressionConfig(
        backend="gzip",
        gzip_compress_level=6,
        # Named, not "everything but /ui/": Litestar reads a pattern matching "/" as one that
        # disables the middleware (and warns at every start).
        exclude=[
            r"^/(ofrep|v1|admin|metrics|healthz|readyz|schema)\b",
            r"^/ui/deployment-monitor/events",
        ],
    )
