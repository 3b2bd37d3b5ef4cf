"""The Litestar application factory and the one place where errors become HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)

from flagport import InvalidDocumentError
from flagport.engine import SnapshotDocument
from flagport_server.auth import (
    PUBLIC,
    SECURITY_SCHEMES,
    SEED_ACTOR,
    TOKEN_OPTIONAL,
    TOKEN_REQUIRED,
    requires,
)
from flagport_server.bodies import EMPTY_BODY, FlagportRequest
from flagport_server.errors import (
    InvalidInput,
    ServerError,
    StoreError,
    UnsupportedMediaType,
    VersionConflict,
)
from flagport_server.metrics import CONTENT_TYPE_LATEST, Metrics
from flagport_server.routes.admin import admin_router
from flagport_server.routes.evaluation import evaluation_routes
from flagport_server.routes.feeds import feed_routes
from flagport_server.routes.stats import exposures, stats_router
from flagport_server.services import AdminService, utc_now
from flagport_server.settings import Settings
from flagport_server.state import Runtime
from flagport_server.stats import MAX_PENDING_UNITS, EvaluationCounter, StatsRecorder, hour_of
from flagport_server.stores import open_store
from flagport_server.stores.base import AuditEntry, Mutation, Store
from flagport_server.wire import ofrep_v1
from flagport_server.wire.admin_v1 import Problem
from flagport_server.wire.fields import explain_constraint

__all__ = ["create_app"]

log = logging.getLogger("flagport.server")
_EVALUATION_PREFIXES = ("/ofrep/", "/v1/evaluate")
_OFREP_SINGLE = "/ofrep/v1/evaluate/flags/"
#: Allocations (net of frees) between two collections of the youngest GC generation
#: (CPython's default: 700).
_GC_YOUNG_THRESHOLD = 50_000


# -- operations routes --------------------------------------------------------------------


@get("/healthz", summary="Liveness", tags=["operations"], opt=requires(PUBLIC))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    summary="Readiness: 200 while a snapshot is loaded, 503 before",
    tags=["operations"],
    opt=requires(PUBLIC),
)
async def readyz(request: Request[Any, Any, State]) -> Response[dict[str, Any]]:
    runtime: Runtime = request.app.state.runtime
    if runtime.snapshot is None:
        body: dict[str, Any] = {
            "status": "not_ready",
            "store": {"ok": False, "problem": runtime.store_problem},
        }
        return Response(body, status_code=503, headers={"Retry-After": "1"})
    warnings = list(runtime.warnings)
    if runtime.store_problem:
        warnings.insert(0, runtime.store_problem)
    warnings += runtime.settings.exposure_warnings
    degraded = bool(runtime.store_problem)
    body = {
        "status": "degraded" if degraded else "ok",
        "store": {
            "kind": runtime.store.kind,
            "ok": runtime.store_ok,
            "problem": runtime.store_problem,
            "regressed": runtime.regression is not None,
        },
        "snapshot": {
            "version": runtime.version,
            "age_s": round(runtime.snapshot_age, 3),
            "flags": len(runtime.snapshot),
            "store_id": runtime.store_id,
        },
        "instance": runtime.settings.instance_id,
        "worker": runtime.pid,
        "warnings": warnings,
        "unreadable": {
            "flags": sorted(runtime.unreadable_flags),
            "segments": sorted(runtime.unreadable_segments),
        },
    }
    return Response(body, status_code=200)


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    media_type=CONTENT_TYPE_LATEST,
    opt=requires(PUBLIC),
)
async def metrics_route(request: Request[Any, Any, State]) -> Response[bytes]:
    state = request.app.state
    runtime: Runtime = state.runtime
    state.metrics.observe_worker(
        runtime.version, runtime.snapshot_age, runtime.store_ok, runtime.regression is not None
    )
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- errors -------------------------------------------------------------------------------


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
    if isinstance(error, VersionConflict) and request.method == "PUT":
        status = 412  # If-Match did not match
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
    return _problem(400, "Invalid input", error.problem, error.path)


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
        if " - at `" in message:
            message, _, where = message.partition(" - at `")
            field = where.rstrip("`")
        return explain_constraint(message), field
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


# -- lifespan -----------------------------------------------------------------------------


async def _seed(runtime: Runtime, path: str) -> None:
    """Load the seed document into an empty store (``make run``'s portal flags)."""
    from flagport.document import load_document, read_document_file

    snapshot = runtime.snapshot
    if snapshot is None or len(snapshot) or snapshot.document.segments or snapshot.version > 0:
        return
    document = load_document(read_document_file(path))
    now = utc_now()
    mutations: list[Mutation] = []
    for key, segment in document.segments.items():
        mutations.append(
            Mutation(
                "segment",
                key,
                "put",
                msgspec.structs.replace(segment, version=1, updated_at=now),
                None,
            )
        )
    for key, flag in document.flags.items():
        stamped = msgspec.structs.replace(flag, version=1, created_at=now, updated_at=now)
        mutations.append(Mutation("flag", key, "put", stamped, None))
    entry = AuditEntry(
        actor=SEED_ACTOR,
        action="import",
        key="*",
        at=now,
        kind="snapshot",
        reason=f"seeded from {path}",
    )
    try:
        result = await runtime.store.commit(mutations, [entry])
    except VersionConflict:
        return  # another worker seeded first
    log.info("seeded %d flags from %s", len(document.flags), path)
    await runtime.reload(at_least=result.snapshot_version)


#: Routes whose JSON body may be left out (Litestar documents every body as required).
_OPTIONAL_BODIES = ("/admin/v1/flags/{key}/enable", "/admin/v1/flags/{key}/disable")
#: The import reads its body itself (JSON or YAML), so Litestar cannot document it.
_IMPORT_PATH = "/admin/v1/snapshot"


def _optional_bodies(app: Litestar) -> None:
    """Correct the OpenAPI document before it is first served."""
    paths = app.openapi_schema.paths or {}
    for path in _OPTIONAL_BODIES:
        item = paths.get(path)
        operation = item.post if item is not None else None
        if operation is not None and operation.request_body is not None:
            operation.request_body.required = False  # type: ignore[union-attr]
    item = paths.get(_IMPORT_PATH)
    if item is not None and item.post is not None:
        document = Schema(
            type=OpenAPIType.OBJECT,
            description="The whole configuration, as GET /admin/v1/snapshot exports it",
        )
        item.post.request_body = RequestBody(
            content={
                media: OpenAPIMediaType(schema=document)
                for media in ("application/json", "application/yaml")
            },
            required=True,
        )


def _last_change(document: SnapshotDocument) -> float:
    stamps = [f.updated_at for f in document.flags.values() if f.updated_at]
    stamps += [g.updated_at for g in document.segments.values() if g.updated_at]
    if not stamps:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(max(stamps)).timestamp()
    except ValueError:
        return 0.0


async def _metrics_loop(state: State) -> None:
    while True:
        # Every second, and just after each minute boundary: the drained counts are stamped
        # with the minute their period started in, so a period never spans two minutes.
        await asyncio.sleep(min(1.0, 60.0 - time.time() % 60.0 + 0.001))
        runtime: Runtime = state.runtime
        state.metrics.flush()
        state.metrics.observe_worker(
            runtime.version, runtime.snapshot_age, runtime.store_ok, runtime.regression is not None
        )


async def _stats_loop(state: State) -> None:
    runtime: Runtime = state.runtime
    recorder: StatsRecorder = state.stats
    interval = runtime.settings.stats_flush_interval
    gauges_due = time.monotonic() + min(10.0, runtime.settings.stats_gauge_interval)
    waited = 0.0
    while True:
        await asyncio.sleep(0.25)
        waited += 0.25
        if waited >= interval or recorder.pending_units > MAX_PENDING_UNITS:
            waited = 0.0
            await recorder.flush()
        if time.monotonic() >= gauges_due:
            gauges_due = time.monotonic() + runtime.settings.stats_gauge_interval
            try:
                await _refresh_gauges(state)
            except Exception as error:  # the store may be down: try again next time
                log.debug("unique-unit gauges not refreshed: %s", error)


async def _refresh_gauges(state: State) -> None:
    """``flagport_unique_units{flag,variant}`` over the last 24 hours, from the store."""
    runtime: Runtime = state.runtime
    snapshot = runtime.snapshot
    if snapshot is None:
        return
    now = time.time()
    until = hour_of(now) + 3600
    for key in snapshot:
        view = await runtime.store.stats(key, until - 25 * 3600, until)
        for variant, units in view.unique_units.items():
            state.metrics.unique_units.labels(key, variant).set(units)


def create_app(settings: Settings, store: Store | None = None) -> Litestar:
    """Build the app. ``store`` defaults to ``open_store(settings.store_url)``."""
    store = store if store is not None else open_store(settings.store_url)
    runtime = Runtime(settings, store)

    def bucket_by(key: str) -> str | None:
        snapshot = runtime.snapshot
        compiled = snapshot.flag(key) if snapshot is not None else None
        return compiled.bucket_by if compiled is not None else None

    counter = EvaluationCounter(bucket_by, collect_units=settings.stats)
    metrics = Metrics(counter)
    recorder = StatsRecorder(store)
    if settings.stats:
        metrics.sink = recorder.add_drained
    event_stream = (
        ofrep_v1.EventStream(type="sse", url=settings.public_url.rstrip("/") + "/v1/stream")
        if settings.public_url
        else ofrep_v1.EventStream(
            type="sse", endpoint=ofrep_v1.EventStreamEndpoint(requestUri="/v1/stream")
        )
    )

    last_change = [0.0]

    def record_apply(snapshot: Any, applied_at: float) -> None:
        pid = str(os.getpid())
        metrics.snapshot_version.labels(pid).set(snapshot.version)
        # The newest updated_at is when the last flag/segment change was committed (by the
        # committing host's clock); its distance to now is how long this worker took.
        changed = _last_change(snapshot.document)
        if changed > last_change[0]:
            if last_change[0]:
                metrics.apply_lag.labels(pid).set(max(0.0, applied_at - changed))
            last_change[0] = changed

    runtime.on_apply.append(record_apply)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pid = str(os.getpid())
        app.state.pid_header = app.state.pid.encode()
        runtime.pid = os.getpid()
        _optional_bodies(app)
        await runtime.start()
        if settings.seed_file and runtime.store_ok:
            await _seed(runtime, settings.seed_file)
        # Everything made at start-up (the app, the first snapshot) lives for the process:
        # keep it out of every GC pass. Measured: p99 latency 27 ms -> 6 ms at 64 connections.
        gc.collect()
        gc.freeze()
        # Open streams and slow requests keep thousands of objects alive for seconds, and a
        # full collection walks them all: at the default thresholds a worker holding 1,000
        # streams paused 50-110 ms every few seconds (evaluation p99 93 ms under the
        # connection soak, 8.5 ms with this; benchmarks/RESULTS.md). Collect young objects
        # 70x less often.
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        tasks = [asyncio.create_task(_metrics_loop(app.state))]
        if settings.stats:
            tasks.append(asyncio.create_task(_stats_loop(app.state)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Nothing counted is lost on a graceful stop: the last counts go to the store
            # before it is closed.
            metrics.flush()
            if settings.stats:
                await recorder.flush()
            await runtime.stop()

    state = State(
        {
            "runtime": runtime,
            "service": AdminService(runtime),
            "metrics": metrics,
            "counter": counter,
            "stats": recorder,
            "event_stream": event_stream,
            "pid": str(os.getpid()),
            "pid_header": str(os.getpid()).encode(),
            "evaluation_open": settings.evaluation_open,
            "wire_cache": None,
            "started": time.time(),
        }
    )
    return Litestar(
        route_handlers=[
            Router(
                path="/",
                route_handlers=[*evaluation_routes, *feed_routes, exposures],
                request_max_body_size=settings.max_eval_body,
                security=TOKEN_OPTIONAL if settings.evaluation_open else TOKEN_REQUIRED,
            ),
            admin_router,
            stats_router,
            healthz,
            readyz,
            metrics_route,
        ],
        state=state,
        lifespan=[lifespan],
        exception_handlers={
            ServerError: _handle_domain,
            InvalidDocumentError: _handle_invalid_document,
            HTTPException: _handle_http,
            Exception: _handle_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="Flagport",
            version="1",
            description="Feature flags: OFREP evaluation, SDK feeds and the admin API.",
            openapi_router=Router(
                "/schema", route_handlers=[], include_in_schema=False, opt=requires(PUBLIC)
            ),
            render_plugins=[JsonRenderPlugin()],
            components=Components(security_schemes=SECURITY_SCHEMES),
        ),
        request_max_body_size=settings.max_admin_body,
        request_class=FlagportRequest,
        debug=False,
        # Logging stays as the process set it up (flags serve: flagport_server.logs, whose
        # formatter escapes untrusted text); Litestar's default would replace the handler.
        logging_config=None,
    )
