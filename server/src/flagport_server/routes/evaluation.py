"""Evaluation scope: OFREP single and bulk, and the convenience GET.

These are the hot routes: the PHP portal calls them on every request. Handlers do a
dict lookup, call the engine and encode pre-shaped Structs; they never touch the store.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from typing import Any

import msgspec
from flagport.engine import CompiledSnapshot, ErrorCode, EvaluationResult, Reason
from flagport_server.auth import evaluation_guard
from flagport_server.wire import ofrep_v1 as wire
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.params import Parameter

__all__ = ["evaluation_routes"]

_ERROR = Reason.ERROR
#: The ``flag`` label of evaluations of unknown keys (not a valid key, so no clash).
UNKNOWN_FLAG_LABEL = "(unknown)"
_JSON = MediaType.JSON
_NOT_READY = wire.encode(
    wire.RequestFailure(errorCode="GENERAL", errorDetails="no snapshot loaded yet; retry shortly")
)


def _headers(state: State, snapshot: CompiledSnapshot) -> dict[str, str]:
    return {"X-Flagport-Snapshot": str(snapshot.version), "X-Flagport-Worker": state.pid}


def _not_ready(state: State) -> Response[bytes]:
    return Response(
        _NOT_READY,
        status_code=503,
        media_type=_JSON,
        headers={"Retry-After": "1", "X-Flagport-Worker": state.pid},
    )


def context_problem(context: Any) -> tuple[str, str] | None:
    """OFREP's context rules: ``targetingKey`` present and a string ("" means no unit)."""
    if not isinstance(context, dict):
        return ErrorCode.INVALID_CONTEXT.value, "context must be a JSON object"
    key = context.get("targetingKey", _ABSENT)
    if key is _ABSENT:
        return ErrorCode.TARGETING_KEY_MISSING.value, "context has no targetingKey"
    if type(key) is not str:
        return ErrorCode.INVALID_CONTEXT.value, "context.targetingKey must be a string"
    return None


_ABSENT = object()


def _single(state: State, snapshot: CompiledSnapshot, result: EvaluationResult) -> Response[bytes]:
    headers = _headers(state, snapshot)
    if result.reason is not _ERROR:
        state.metrics.count(result)
        return Response(
            wire.encode(wire.success_from_result(result)), media_type=_JSON, headers=headers
        )
    if result.error_code is ErrorCode.FLAG_NOT_FOUND:
        # Callers choose unknown keys: one label for all of them keeps the metric bounded.
        state.metrics.count(msgspec.structs.replace(result, key=UNKNOWN_FLAG_LABEL))
        status = 404
    else:
        state.metrics.count(result)
        status = 500 if result.error_code is ErrorCode.GENERAL else 400
    return Response(
        wire.encode(wire.failure_from_result(result)),
        status_code=status,
        media_type=_JSON,
        headers=headers,
    )


@post(
    "/ofrep/v1/evaluate/flags/{key:str}",
    guards=[evaluation_guard],
    status_code=200,
    name="ofrep-single",
    summary="Evaluate one flag (OFREP)",
    tags=["evaluation"],
)
async def ofrep_single(
    key: str, data: wire.EvaluationRequest, request: Request[Any, Any, State]
) -> Response[bytes]:
    state = request.app.state
    snapshot = state.runtime.snapshot
    if snapshot is None:
        return _not_ready(state)
    problem = context_problem(data.context)
    if problem is not None:
        body = wire.encode(
            wire.EvaluationFailure(key=key, errorCode=problem[0], errorDetails=problem[1])
        )
        return Response(body, status_code=400, media_type=_JSON, headers=_headers(state, snapshot))
    return _single(state, snapshot, snapshot.evaluate(key, data.context, time.time()))


@get(
    "/v1/evaluate/{key:str}",
    guards=[evaluation_guard],
    name="evaluate-get",
    summary="Evaluate one flag from query parameters (values are strings)",
    tags=["evaluation"],
)
async def evaluate_get(key: str, request: Request[Any, Any, State]) -> Response[bytes]:
    state = request.app.state
    snapshot = state.runtime.snapshot
    if snapshot is None:
        return _not_ready(state)
    context = dict(request.query_params)
    return _single(state, snapshot, snapshot.evaluate(key, context, time.time()))


def _check_last_modified(value: str | None) -> str | None:
    """OFREP's ``flagConfigLastModified``: epoch seconds or an ISO-8601 date-time."""
    if value is None:
        return None
    if value.isdigit():
        return None
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return (
            f"flagConfigLastModified must be epoch seconds or an ISO-8601 date-time, got {value!r}"
        )
    return None


@post(
    "/ofrep/v1/evaluate/flags",
    guards=[evaluation_guard],
    status_code=200,
    name="ofrep-bulk",
    summary="Evaluate every flag (OFREP bulk)",
    tags=["evaluation"],
)
async def ofrep_bulk(
    data: wire.EvaluationRequest,
    request: Request[Any, Any, State],
    if_none_match: str | None = Parameter(header="If-None-Match", default=None, required=False),
    flag_config_etag: str | None = Parameter(query="flagConfigEtag", default=None, required=False),
    flag_config_last_modified: str | None = Parameter(
        query="flagConfigLastModified", default=None, required=False
    ),
) -> Response[bytes]:
    state = request.app.state
    snapshot = state.runtime.snapshot
    if snapshot is None:
        return _not_ready(state)
    headers = _headers(state, snapshot)
    problem = context_problem(data.context) or (
        ("INVALID_CONTEXT", bad)
        if (bad := _check_last_modified(flag_config_last_modified))
        else None
    )
    if problem is not None:
        body = wire.encode(wire.RequestFailure(errorCode=problem[0], errorDetails=problem[1]))
        return Response(body, status_code=400, media_type=_JSON, headers=headers)
    context = data.context
    digest = hashlib.blake2b(
        msgspec.json.encode(context, order="sorted"), digest_size=8
    ).hexdigest()
    etag = f'"{snapshot.version}-{digest}"'
    headers["ETag"] = etag
    if if_none_match is not None and if_none_match.strip() == etag:
        return Response(b"", status_code=304, headers=headers)
    results = snapshot.evaluate_all(context, time.time())
    state.metrics.count_many(results.values())
    items: list[wire.EvaluationSuccess | wire.EvaluationFailure] = [
        wire.failure_from_result(r) if r.reason is _ERROR else wire.success_from_result(r)
        for r in results.values()
    ]
    answer = wire.BulkEvaluationResponse(
        flags=items,
        eventStreams=[state.event_stream],
        metadata={"snapshotVersion": snapshot.version},
    )
    return Response(wire.encode(answer), media_type=_JSON, headers=headers)


evaluation_routes = [ofrep_single, ofrep_bulk, evaluate_get]
