"""Evaluation scope: OFREP single and bulk, and the convenience GET.

These are the hot routes: the PHP portal calls them on every request. The evaluation dispatch
(:mod:`flagport_server.dispatch`, docs/adr/0021-evaluation-dispatch.md) serves them in front of
Litestar with the answer functions here (:func:`gate`, :func:`answer_single`,
:func:`answer_context`, :func:`answer_bulk`); the route declarations below stay the one source
of their paths (with :data:`flagport_server.surface.DISPATCHED`), scopes and OpenAPI entries,
and serve what the dispatch hands on (a body it cannot decode, a query on a POST). They never
touch the store, and they skip the costlier parts of Litestar's pipeline on purpose (measured
in docs/adr/0003-lean-evaluation-path.md):

- the token check is a plain call of :func:`~flagport_server.auth.access_error` with the
  route's declared scope, not a Litestar guard (guards copy the route handler on every
  request);
- answers are pre-encoded :class:`RawResponse` objects, not ``Response`` (no per-request
  header and serialisation pipeline);
- each evaluation item's JSON is encoded once per snapshot and reused, so a bulk answer is a
  join of cached byte strings (:class:`~flagport_server.served.EncodedAnswers`, beside the
  snapshot in the runtime's :class:`~flagport_server.served.Served`);
- the app's objects are read from ``app.state`` (written only by ``create_app`` and the
  lifespan), not through dependency injection, which resolves per request.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from flagport.engine import ErrorCode, Reason
from flagport_server.auth import (
    EVALUATE,
    access,
    access_error,
    credential_of,
    declared_scope,
    requires,
)
from flagport_server.errors import ServerError
from flagport_server.routes.feeds import OpenStreams, streams_available
from flagport_server.runtime import Runtime
from flagport_server.served import Served
from flagport_server.stats import UNKNOWN_RESULT
from flagport_server.stats.counter import EvaluationCounter
from flagport_server.stores.base import TokenRecord
from flagport_server.surface import EVALUATE_GET, OFREP_BULK, OFREP_SINGLE
from flagport_server.tickets import TicketOf, day_of
from flagport_server.wire import ofrep_v1 as wire

__all__ = [
    "RawResponse",
    "answer_bulk",
    "answer_context",
    "answer_single",
    "context_problem",
    "evaluation_routes",
    "gate",
    "query_context",
]

_ERROR = Reason.ERROR
_NOT_FOUND = ErrorCode.FLAG_NOT_FOUND
_NOT_READY = wire.encode(
    wire.RequestFailure(errorCode="GENERAL", errorDetails="no snapshot loaded yet; retry shortly")
)


class RawResponse:
    """A pre-encoded answer sent straight to ASGI. Litestar passes a handler's return value
    through untouched when the handler is annotated to return an ASGI callable, which skips
    its header bookkeeping (a third of a bare request's cost)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.body = body
        self.status = status
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class Answering:
    """What the evaluation answers read on every request, as plain attributes: made once
    by ``create_app`` (the worker's pid is set again in each forked worker's lifespan).
    Litestar's ``State`` reads an attribute through ``__getattr__`` (~0.3 µs a read, several
    a request), so the hot path holds this instead."""

    __slots__ = ("counter", "runtime", "streams", "worker_header")

    def __init__(
        self, runtime: Runtime, counter: EvaluationCounter, streams: OpenStreams, pid: int
    ) -> None:
        self.runtime = runtime
        self.counter = counter
        self.streams = streams
        self.worker_header = worker_header(pid)


def worker_header(pid: int) -> tuple[bytes, bytes]:
    """The ``X-Flagport-Worker`` header of every evaluation answer (docs/spec.md)."""
    return (b"x-flagport-worker", str(pid).encode())


_JSON_TYPE = (b"content-type", b"application/json")


def _answer(
    answering: Answering,
    body: bytes,
    status: int = 200,
    snapshot_header: tuple[bytes, bytes] | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> RawResponse:
    # A tuple of header pairs made once each (the worker's, the snapshot's): an answer's
    # headers are never changed after it is made, so nothing downstream can change them for
    # every later answer. No Content-Length: granian sets it for a body sent whole (one
    # header less to convert per request).
    if snapshot_header is None:
        return RawResponse(body, status, (_JSON_TYPE, answering.worker_header, *extra))
    return RawResponse(body, status, (_JSON_TYPE, answering.worker_header, snapshot_header, *extra))


def gate(answering: Answering, error: ServerError | None) -> RawResponse | None:
    """The answer to send instead of evaluating, if any: the refusal of :func:`access`
    (``error``), or 503 while no snapshot is loaded."""
    if error is not None:
        body = wire.encode(wire.RequestFailure(errorCode="GENERAL", errorDetails=error.detail))
        headers = tuple((k.lower().encode(), v.encode()) for k, v in error.headers.items())
        return _answer(answering, body, error.status_code, extra=headers)
    if answering.runtime.served is None:
        return _answer(answering, _NOT_READY, 503, extra=((b"retry-after", b"1"),))
    return None


def context_problem(context: Any) -> tuple[str, str] | None:
    """OFREP's context rules: a JSON object whose ``targetingKey``, if present, is a string.
    An absent one is an empty one, no unit (docs/spec.md section 4): an anonymous visitor
    gets every flag's own answer, and only a flag that needs a unit answers
    ``TARGETING_KEY_MISSING`` (the published OFREP schema requires the key; the README
    records the deviation)."""
    if not isinstance(context, dict):
        return ErrorCode.INVALID_CONTEXT.value, "context must be a JSON object"
    key = context.get("targetingKey", "")
    if type(key) is not str:
        return ErrorCode.INVALID_CONTEXT.value, "context.targetingKey must be a string"
    return None


def served_after_gate(answering: Answering) -> Served:
    """The snapshot served, once :func:`gate` let the request in (it refuses requests
    before the first one)."""
    served = answering.runtime.served
    assert served is not None, "gate() lets no request in before the first snapshot"
    return served


def answer_single(answering: Answering, served: Served, key: str, context: Any) -> RawResponse:
    """OFREP single's answer for a decoded body's ``context`` (the request let in)."""
    problem = context_problem(context)
    if problem is not None:
        body = wire.encode(
            wire.EvaluationFailure(key=key, errorCode=problem[0], errorDetails=problem[1])
        )
        return _answer(answering, body, 400, served.snapshot_header)
    return answer_context(answering, served, key, context)


def query_context(query_string: bytes) -> dict[str, str]:
    """``GET /v1/evaluate``'s context: the query's parameters, the first value of a repeated
    one, blank values kept (as Litestar's query parser reads them)."""
    context: dict[str, str] = {}
    if query_string:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, separator="&")
        for name, value in pairs:
            context.setdefault(name, value)
    return context


def answer_context(
    answering: Answering, served: Served, key: str, context: dict[str, Any]
) -> RawResponse:
    """One flag's answer for a valid context (``GET /v1/evaluate``'s query is one)."""
    now = time.time()
    result = served.snapshot.evaluate(key, context, now)
    if result.reason is not _ERROR:
        answering.counter.count(result, context)
        cohorts = served.cohorts
        if cohorts is not None and (plan_key := cohorts.plan_of.get(key)) is not None:
            plan_result = (
                result if plan_key == key else served.snapshot.evaluate(plan_key, context, now)
            )
            return _answer(
                answering, cohorts.item(result, plan_result), 200, served.snapshot_header
            )
        return _answer(answering, served.answers.item(result), 200, served.snapshot_header)
    if result.error_code is _NOT_FOUND:
        # Callers choose unknown keys: one label for all of them keeps the metric bounded.
        answering.counter.count(UNKNOWN_RESULT, context)
        status = 404
    else:
        answering.counter.count(result, context)
        status = 500 if result.error_code is ErrorCode.GENERAL else 400
    return _answer(answering, served.answers.item(result), status, served.snapshot_header)


_SINGLE_RESPONSES = {
    200: ResponseSpec(data_container=wire.EvaluationSuccess, description="The flag's value"),
    400: ResponseSpec(
        data_container=wire.EvaluationFailure,
        description="Invalid context, missing targeting key, or a flag that failed to parse",
    ),
    401: ResponseSpec(data_container=wire.RequestFailure, description="Token required"),
    404: ResponseSpec(data_container=wire.EvaluationFailure, description="Flag not found"),
    503: ResponseSpec(data_container=wire.RequestFailure, description="No snapshot loaded yet"),
}


@post(
    OFREP_SINGLE.path,
    status_code=200,
    name=OFREP_SINGLE.name,
    opt=requires(EVALUATE),
    summary="Evaluate one flag (OFREP)",
    tags=["evaluation"],
    responses=_SINGLE_RESPONSES,
)
async def ofrep_single(
    key: FromPath[str], data: JSONBody[wire.EvaluationRequest], request: Request[Any, Any, State]
) -> RawResponse:
    answering: Answering = request.app.state.answering
    refusal = gate(
        answering, access_error(request, declared_scope(request.route_handler) or EVALUATE)
    )
    if refusal is not None:
        return refusal
    return answer_single(answering, served_after_gate(answering), key, data.context)


@get(
    EVALUATE_GET.path,
    name=EVALUATE_GET.name,
    opt=requires(EVALUATE),
    summary="Evaluate one flag from query parameters (values are strings)",
    tags=["evaluation"],
    responses=_SINGLE_RESPONSES,
)
async def evaluate_get(key: FromPath[str], request: Request[Any, Any, State]) -> RawResponse:
    answering: Answering = request.app.state.answering
    refusal = gate(
        answering, access_error(request, declared_scope(request.route_handler) or EVALUATE)
    )
    if refusal is not None:
        return refusal
    context = query_context(request.scope.get("query_string", b""))
    return answer_context(answering, served_after_gate(answering), key, context)


def _check_last_modified(value: str | None) -> str | None:
    """OFREP's ``flagConfigLastModified``: epoch seconds or an ISO-8601 date-time."""
    if value is None or value.isdigit():
        return None
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return (
            f"flagConfigLastModified must be epoch seconds or an ISO-8601 date-time, got {value!r}"
        )
    return None


@post(
    OFREP_BULK.path,
    status_code=200,
    name=OFREP_BULK.name,
    opt=requires(EVALUATE),
    summary="Evaluate every flag (OFREP bulk)",
    tags=["evaluation"],
    responses={
        200: ResponseSpec(
            data_container=wire.BulkEvaluationResponse,
            description="Every flag's value or error; ETag for If-None-Match",
        ),
        304: ResponseSpec(data_container=None, description="Unchanged since the ETag"),
        400: ResponseSpec(data_container=wire.RequestFailure, description="Invalid context"),
        401: ResponseSpec(data_container=wire.RequestFailure, description="Token required"),
        503: ResponseSpec(data_container=wire.RequestFailure, description="No snapshot yet"),
    },
)
async def ofrep_bulk(
    data: JSONBody[wire.EvaluationRequest],
    request: Request[Any, Any, State],
    if_none_match: Annotated[
        str | None, HeaderParameter(name="If-None-Match", required=False)
    ] = None,
    flag_config_etag: Annotated[
        str | None, QueryParameter(name="flagConfigEtag", required=False)
    ] = None,
    flag_config_last_modified: Annotated[
        str | None, QueryParameter(name="flagConfigLastModified", required=False)
    ] = None,
) -> RawResponse:
    answering: Answering = request.app.state.answering
    error, token = access(request, declared_scope(request.route_handler) or EVALUATE)
    refusal = gate(answering, error)
    if refusal is not None:
        return refusal
    return answer_bulk(
        answering,
        served_after_gate(answering),
        data.context,
        token,
        if_none_match.encode() if if_none_match is not None else None,
        flag_config_last_modified,
    )


def answer_bulk(
    answering: Answering,
    served: Served,
    context: Any,
    token: TokenRecord | None,
    if_none_match: bytes | None,
    last_modified: str | None = None,
) -> RawResponse:
    """OFREP bulk's answer for a decoded body's ``context`` (the request let in by ``token``,
    ``None``: it needed none)."""
    snapshot = served.snapshot
    answers = served.answers
    problem = context_problem(context) or (
        ("INVALID_CONTEXT", bad) if (bad := _check_last_modified(last_modified)) else None
    )
    if problem is not None:
        body = wire.encode(wire.RequestFailure(errorCode=problem[0], errorDetails=problem[1]))
        return _answer(answering, body, 400, served.snapshot_header)
    digest = hashlib.blake2b(msgspec.json.encode(context, order="sorted"), digest_size=8)
    now = time.time()
    # A request let in by a token gets a stream URL with a ticket (a browser's EventSource
    # cannot send the token): the ETag then names the token and the day, so a 304 never
    # keeps another token's URL or an expired one (docs/spec.md section 12).
    key = served.ticket_key
    ticket = (
        TicketOf(key, token.id, day_of(now), credential_of(token))
        if token is not None and key is not None
        else None
    )
    if ticket is not None:
        digest.update(ticket.token_id.encode())
    results = None
    if snapshot.clock_keys:
        # A flag reading the clock (a `$now` rule) changes its answer without a new
        # version: its answer is part of the tag, or a 304 would keep the old one.
        results = snapshot.evaluate_all(context, now)
        for clocked in sorted(snapshot.clock_keys):
            if (result := results.get(clocked)) is not None:
                digest.update(f"{clocked}\0{result.variant}\0{result.reason}\0".encode())
    if ticket is not None:
        etag = f'"{snapshot.version}-{ticket.day}-{digest.hexdigest()}"'.encode()
    else:
        etag = f'"{snapshot.version}-{digest.hexdigest()}"'.encode()
    if if_none_match is not None and if_none_match.strip() == etag:
        headers = ((b"etag", etag), served.snapshot_header, answering.worker_header)
        return RawResponse(b"", 304, headers)
    if results is None:
        results = snapshot.evaluate_all(context, now)
    answering.counter.count_many(results, context, snapshot.bucket_attributes)
    item = answers.item
    if not streams_available(answering.streams):
        tail = answers.polling_tail
    elif ticket is not None:
        tail = answers.ticketed_tail(ticket)
    else:
        tail = answers.bulk_tail
    cohorts = served.cohorts
    if cohorts is None:
        items = [item(r) for r in results.values()]
    else:
        # Flags under a running plan (or gated by one) carry the unit's cohort of it.
        plan_of = cohorts.plan_of.get
        items = [
            item(r) if (plan := plan_of(k)) is None else cohorts.item(r, results[plan])
            for k, r in results.items()
        ]
    body = b'{"flags":[' + b",".join(items) + tail
    return _answer(answering, body, 200, served.snapshot_header, ((b"etag", etag),))


evaluation_routes = [ofrep_single, ofrep_bulk, evaluate_get]
