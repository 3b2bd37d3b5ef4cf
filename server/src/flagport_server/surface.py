"""The evaluation surface: the routes a browser, or anyone holding an ``evaluate`` token, may
call (docs/spec.md sections 5 and 12). One list, read by CORS, the rate limits and the
evaluation dispatch; all are ASGI layers outside the Litestar app, so they match paths rather
than Litestar routes, and answer some requests themselves (:func:`send_answer`).

:data:`DISPATCHED` is the table of the routes the evaluation dispatch serves
(docs/adr/0021-evaluation-dispatch.md): each names its Litestar route declaration, which stays
the one source of the OpenAPI document and of the route's scope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Send

__all__ = [
    "DISPATCHED",
    "EVALUATE_GET",
    "OFREP_BULK",
    "OFREP_SINGLE",
    "DispatchedRoute",
    "dispatched_route",
    "evaluation_surface_method",
    "send_answer",
    "send_with",
]

_OFREP_BULK: Final = "/ofrep/v1/evaluate/flags"
_OFREP_SINGLE: Final = "/ofrep/v1/evaluate/flags/"
_GET_EVALUATE: Final = "/v1/evaluate/"
_STREAM: Final = "/v1/stream"


def evaluation_surface_method(path: str) -> str | None:
    """The method a route of the evaluation surface takes, or None: not on the surface.

    OFREP single and bulk (POST), ``GET /v1/evaluate/{key}`` and the change stream (GET).
    """
    if path == _OFREP_BULK or (path.startswith(_OFREP_SINGLE) and len(path) > len(_OFREP_SINGLE)):
        return "POST"
    if (path.startswith(_GET_EVALUATE) and len(path) > len(_GET_EVALUATE)) or path == _STREAM:
        return "GET"
    return None


class DispatchedRoute(NamedTuple):
    """A route the evaluation dispatch serves without the framework."""

    #: The Litestar route declaration's ``name`` (its path, OpenAPI entry and scope).
    name: str
    method: str
    #: The declaration's path, as Litestar names it.
    path: str


OFREP_SINGLE: Final = DispatchedRoute("ofrep-single", "POST", _OFREP_SINGLE + "{key:str}")
OFREP_BULK: Final = DispatchedRoute("ofrep-bulk", "POST", _OFREP_BULK)
EVALUATE_GET: Final = DispatchedRoute("evaluate-get", "GET", _GET_EVALUATE + "{key:str}")
#: Every route the dispatch serves (the change stream stays with Litestar: it is long-lived,
#: so the framework's cost per request does not matter there).
DISPATCHED: Final = (OFREP_SINGLE, OFREP_BULK, EVALUATE_GET)


def dispatched_route(path: str, method: str) -> tuple[DispatchedRoute, str] | None:
    """The dispatched route a request goes to, with its flag key (``""`` for bulk), or None:
    the framework's (another path or method, or a key Litestar's ``{key:str}`` would not
    take: empty or with a ``/``)."""
    if method == "POST":
        if path == _OFREP_BULK:
            return OFREP_BULK, ""
        if path.startswith(_OFREP_SINGLE):
            key = path[len(_OFREP_SINGLE) :]
            return (OFREP_SINGLE, key) if key and "/" not in key else None
    elif method == "GET" and path.startswith(_GET_EVALUATE):
        key = path[len(_GET_EVALUATE) :]
        return (EVALUATE_GET, key) if key and "/" not in key else None
    return None


def send_with(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send``, adding ``headers`` to the answer's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *headers]
        await send(message)

    return sending


async def send_answer(
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    cors: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole answer from a wrapper, before the app (``Content-Length`` added, then the
    ``cors`` headers: :meth:`~flagport_server.cors.CorsPolicy.headers_for`)."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            *headers,
            (b"content-length", str(len(body)).encode()),
            *cors,
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
