"""The one place where errors become HTTP answers.

Errors are raised where the problem is found, as the precise :mod:`flagport_server.errors`
class (which carries its status); the engine's refusal of a document becomes
:class:`~flagport_server.errors.InvalidInput`; Litestar's own errors (validation, routing,
sizes) and anything unexpected are answered here too. Admin and operations routes answer an
RFC 9457 problem document; the evaluation routes answer OFREP's error shape.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from flagport import InvalidDocumentError
from flagport.rollout import PlanTransitionError, RolloutError
from flagport_server.bodies import EMPTY_BODY
from flagport_server.errors import (
    Conflict,
    InvalidInput,
    ServerError,
    SignInNeeded,
    StoreError,
    UnsupportedMediaType,
)
from flagport_server.ui.policy import SECURITY_HEADERS
from flagport_server.ui.session import PRESESSION_COOKIE, csrf_token
from flagport_server.wire import ofrep_v1
from flagport_server.wire.admin_v1 import Problem
from flagport_server.wire.fields import validation_problem

__all__ = ["EXCEPTION_HANDLERS", "UI_EXCEPTION_HANDLERS"]

log = logging.getLogger("flagport.server")
_EVALUATION_PREFIXES = ("/ofrep/", "/v1/evaluate")
_OFREP_SINGLE = "/ofrep/v1/evaluate/flags/"


def _is_evaluation(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith(_EVALUATION_PREFIXES)


def _ofrep_error(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    path = request.url.path
    key = path[len(_OFREP_SINGLE) :] if path.startswith(_OFREP_SINGLE) else None
    if key is not None and status != 404:
        body = ofrep_v1.encode(
            ofrep_v1.EvaluationFailure(key=key, errorCode=code, errorDetails=detail)
        )
    else:
        body = ofrep_v1.encode(
            ofrep_v1.RequestFailure(errorCode=code, errorDetails=detail, key=key)
        )
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", "1")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _problem(status: int, title: str, detail: str, field: str | None = None) -> Response[Problem]:
    return Response(
        Problem(title=title, status=status, detail=detail, field=field),
        status_code=status,
        media_type="application/problem+json",
    )


def _handle_domain(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    assert isinstance(error, ServerError)
    status = error.status_code
    if isinstance(error, StoreError):
        log.error("store error on %s %s: %s", request.method, request.url.path, error)
    headers = dict(error.headers)
    if _is_evaluation(request):
        if isinstance(error, InvalidInput | UnsupportedMediaType):
            # OFREP answers a request it cannot read with 400 INVALID_CONTEXT, whatever the
            # reason (a body that is not JSON included).
            return _ofrep_error(request, 400, "INVALID_CONTEXT", error.detail, headers)
        return _ofrep_error(request, status, "GENERAL", error.detail, headers)
    field = error.path if isinstance(error, InvalidInput) else None
    response = _problem(status, error.title, error.detail, field)
    if headers:
        response.headers.update(headers)
    return response


def _handle_invalid_document(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    assert isinstance(error, InvalidDocumentError)
    return _handle_domain(request, InvalidInput.from_document(error))


def _handle_rollout(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """The rollout core's refusals: a transition the plan's state does not allow is a
    conflict (409); bad options, guards or schedules are invalid input (400)."""
    assert isinstance(error, RolloutError)
    if isinstance(error, PlanTransitionError):
        return _handle_domain(request, Conflict(str(error)))
    return _handle_domain(request, InvalidInput(str(error)))


def _validation_detail(error: ValidationException) -> tuple[str, str | None]:
    extra = error.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
        message = str(first.get("message", error.detail))
        key = first.get("key")
        if first.get("source") == "body":
            # Litestar names the whole body "data"; the JSON document's root is "$".
            if key == "data" and message == "'data'":  # no body at all
                return EMPTY_BODY, None
            field = "$" if key == "data" else f"$.{key}" if key else None
        else:
            field = key  # a query, path or header parameter: its name
        detail, within = validation_problem(message)
        return detail, within or field
    return str(error.detail), None


def _handle_http(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    assert isinstance(error, HTTPException)
    status = error.status_code
    if isinstance(error, ValidationException):
        detail, field = _validation_detail(error)
    elif isinstance(error.__cause__, SerializationException):
        # msgspec's own words ("Input data was truncated") do not say what was wrong.
        detail, field = f"request body is not valid JSON: {error.detail}", None
    else:
        detail, field = str(error.detail), None
    if status >= 500:
        log.error("error on %s %s: %s", request.method, request.url.path, error)
    if _is_evaluation(request):
        if isinstance(error, NotFoundException):
            path = request.url.path
            key = (
                path[len(_OFREP_SINGLE) :]
                if path.startswith(_OFREP_SINGLE)
                else path.rsplit("/", 1)[-1]
            )
            return _ofrep_error(
                request, 404, "FLAG_NOT_FOUND", f"no flag {key!r}: not a valid flag key"
            )
        code = "INVALID_CONTEXT" if status == 400 else "GENERAL"
        if field:
            detail = f"{detail} (at {field})"
        # Keep the exception's headers: a 405 must list the allowed methods in ``Allow``.
        return _ofrep_error(request, status, code, detail, dict(error.headers or {}))
    title = {
        400: "Invalid input",
        404: "Not found",
        405: "Method not allowed",
        413: "Request too large",
    }.get(status, "Error")
    response = _problem(status, title, detail, field)
    if error.headers:
        response.headers.update(error.headers)
    return response


def _handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, RecursionError):
        if _is_evaluation(request):
            return _ofrep_error(
                request, 400, "INVALID_CONTEXT", "request body is nested too deeply"
            )
        return _problem(400, "Invalid input", "request body is nested too deeply")
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    if _is_evaluation(request):
        return _ofrep_error(request, 500, "GENERAL", "internal error")
    return _problem(500, "Internal error", "internal error; see the server log")


#: The app's exception handlers (Litestar picks the most specific class).
EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ServerError: _handle_domain,
    InvalidDocumentError: _handle_invalid_document,
    RolloutError: _handle_rollout,
    HTTPException: _handle_http,
    Exception: _handle_unexpected,
}


# -- the admin UI: pages, not problem documents ---------------------------------------------


def _ui_page(
    request: Request[Any, Any, Any], status: int, title: str, detail: str
) -> Response[Any]:
    """An error as an HTML page of the UI (the sign-in page for a failed sign-in), with the
    UI's security headers; the detail is escaped like every other text on the page."""
    signing_in = request.url.path == "/ui/sign-in"
    csrf = ""
    if signing_in:  # the form again, ready for the next try
        served = request.app.state.runtime.served
        nonce = request.cookies.get(PRESESSION_COOKIE)
        if served is not None and served.ticket_key is not None and nonce:
            csrf = csrf_token(served.ticket_key, nonce)
    return Template(
        template_name="sign_in.html" if signing_in else "error.html",
        context={
            "user": getattr(request.state, "ui_user", None),
            "path": request.url.path,
            "title": title,
            "problem": detail,
            "status": status,
            "csrf": csrf,
            "next": "/ui/flags",
        },
        status_code=status,
        headers={**SECURITY_HEADERS},
    )


def _handle_ui(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, SignInNeeded):
        target = "/ui/sign-in?" + urlencode({"next": error.next_path})
        return Redirect(target, status_code=303, headers={**SECURITY_HEADERS})
    if isinstance(error, ServerError):
        response = _ui_page(request, error.status_code, error.title, error.detail)
        response.headers.update(error.headers)
        return response
    if isinstance(error, HTTPException):
        return _ui_page(request, error.status_code, "Refused", str(error.detail))
    log.exception("unexpected error in the admin UI at %s", request.url.path)
    return _ui_page(request, 500, "Internal error", "see the server log")


#: Every class the API's handlers answer, so none of them wins over the UI's on a UI route.
UI_EXCEPTION_HANDLERS: ExceptionHandlersMap = dict.fromkeys(
    [*EXCEPTION_HANDLERS, Exception], _handle_ui
)
