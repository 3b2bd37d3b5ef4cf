"""The Litestar application factory: it builds the app's objects once and wires them to the
routes (errors: :mod:`flagport_server.http_errors`; what is served:
:mod:`flagport_server.runtime`; stats: :mod:`flagport_server.stats`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide

from flagport_server.approvals import ApprovalService
from flagport_server.auth import EVALUATE, SDK, FailedLogins, expiry_warning, openapi_security
from flagport_server.bodies import FlagportRequest
from flagport_server.driver import Driver
from flagport_server.http_errors import EXCEPTION_HANDLERS
from flagport_server.metrics import Metrics
from flagport_server.openapi import correct_openapi, openapi_config
from flagport_server.operations import Operations
from flagport_server.outcomes import OutcomeBuffer, OutcomeService
from flagport_server.routes.admin import admin_router
from flagport_server.routes.approvals import approvals_router
from flagport_server.routes.evaluation import Answering, evaluation_routes, worker_header
from flagport_server.routes.feeds import OpenStreams, change_stream, snapshot_feed
from flagport_server.routes.operations import operations_routes
from flagport_server.routes.outcomes import outcomes
from flagport_server.routes.rollouts import rollouts_router
from flagport_server.routes.stats import exposures, stats_router
from flagport_server.routes.webhooks import webhooks_router
from flagport_server.runtime import Runtime
from flagport_server.services import AdminService
from flagport_server.settings import Settings
from flagport_server.stats import Stats, StatsPump
from flagport_server.stats.reports import StatsService
from flagport_server.stores import open_store
from flagport_server.stores.base import Store
from flagport_server.ui.routes import ui_compression_config, ui_router, ui_template_config
from flagport_server.webhooks.delivery import WebhookDeliverer
from flagport_server.webhooks.service import WebhookService, dashboard_url

__all__ = ["create_app", "stats_pump"]

#: Allocations (net of frees) between two collections of the youngest GC generation
#: (CPython's default: 700).
_GC_YOUNG_THRESHOLD = 50_000


def _provide(value: Any) -> Provide:
    """A dependency that is always ``value`` (built once, here)."""
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def create_app(settings: Settings, store: Store | None = None) -> Litestar:
    """Build the app. ``store`` defaults to ``open_store(settings.store_url)``."""
    store = store if store is not None else open_store(settings.store_url)
    runtime = Runtime(settings, store)
    metrics = Metrics()
    runtime.on_apply.append(metrics.record_apply)
    stats = Stats(settings, runtime, metrics)
    deliverer = WebhookDeliverer(
        store,
        settings,
        version=lambda: runtime.version,
        dashboard=dashboard_url(settings),
        on_attempt=lambda result: metrics.webhook_attempts.labels(result).inc(),
    )
    driver = Driver(
        store,
        enabled=settings.driver,
        after_commit=lambda version: runtime.reload(at_least=version),
        served_plans=lambda: runtime.served.plans if runtime.served is not None else {},
        webhooks=deliverer,
    )
    admin = AdminService(runtime, health=driver.health.failures_of, promql=driver.promql.reading_of)
    stats_service = StatsService(admin, metrics, stats.recorder)
    # The daily check for newly stale flags runs where webhooks are delivered.
    deliverer.stale_check = lambda: stats_service.write_stale_notices(settings.stale_days)
    # Every applied snapshot version is a commit, hence audit entries: with webhooks, the
    # lease holder delivers them at once rather than at its next round.
    runtime.subscribe(lambda _version: driver.wake() if deliverer.active else None)
    # Outcome signals go to the store at every drain (interval 0: each time the pump drains,
    # every DRAIN_INTERVAL, with or without --no-stats) and at a graceful stop; the driver
    # re-judges the guards right after each write.
    outcome_buffer = OutcomeBuffer(store, on_recorded=driver.wake)
    stats.pump.add_periodic_sink(
        "outcome signals to the store", 0.0, outcome_buffer.drain, at_stop=True
    )
    operations = Operations(runtime, metrics, stats.pump, driver)
    streams = OpenStreams(settings.max_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pid = str(os.getpid())
        answering.worker_header = worker_header(os.getpid())
        runtime.pid = os.getpid()
        correct_openapi(app)
        streams.hook_stop_signals()
        await runtime.start()
        if settings.seed_file and runtime.store_ok:
            await admin.seed(settings.seed_file)
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
        stats.pump.start()
        driving = asyncio.get_running_loop().create_task(driver.run())
        try:
            yield
        finally:
            driving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driving  # gives the lease up: another worker takes over at once
            # Nothing counted is lost on a graceful stop: the last counts go to the store
            # before it is closed.
            await stats.pump.stop()
            await runtime.stop()

    answering = Answering(runtime, stats.counter, streams, os.getpid())
    # Written here and in the lifespan only: the routes read it.
    state = State(
        {
            "runtime": runtime,
            "metrics": metrics,
            "counter": stats.counter,
            "pump": stats.pump,
            "open_streams": streams,
            "failed_logins": FailedLogins(),
            "pid": str(os.getpid()),
            "answering": answering,
            "evaluation_open": settings.evaluation_open,
        }
    )
    return Litestar(
        route_handlers=[
            # The OpenAPI document says which routes need a token on this bind.
            Router(
                path="/",
                route_handlers=[*evaluation_routes, change_stream],
                request_max_body_size=settings.max_eval_body,
                security=openapi_security(EVALUATE, settings.open_scope),
            ),
            Router(
                path="/",
                route_handlers=[snapshot_feed, exposures, outcomes],
                request_max_body_size=settings.max_eval_body,
                security=openapi_security(SDK, settings.open_scope),
            ),
            admin_router,
            rollouts_router,
            approvals_router,
            webhooks_router,
            stats_router,
            *operations_routes,
            *([ui_router] if settings.ui else []),
        ],
        dependencies={
            "admin": _provide(admin),
            "stats": _provide(stats_service),
            "webhooks": _provide(WebhookService(admin)),
            "operations": _provide(operations),
            "plans": _provide(admin.plans),
            "approvals": _provide(ApprovalService(admin)),
            "outcome_signals": _provide(OutcomeService(runtime, outcome_buffer, metrics)),
        },
        state=state,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        # A token near its expiry is named in the answer (the evaluation dispatch answers in
        # front of the app: the hot path never runs it).
        before_send=[expiry_warning],
        openapi_config=openapi_config(),
        template_config=ui_template_config() if settings.ui else None,
        compression_config=ui_compression_config() if settings.ui else None,
        request_max_body_size=settings.max_admin_body,
        request_class=FlagportRequest,
        debug=False,
        # Logging stays as the process set it up (flags serve: flagport_server.logs, whose
        # formatter escapes untrusted text); Litestar's default would replace the handler.
        logging_config=None,
    )


def stats_pump(app: Litestar) -> StatsPump:
    """The app's stats pump, where other features register their sinks
    (:meth:`StatsPump.add_drained_sink`: called every half second with what was counted,
    with or without ``--no-stats``)."""
    pump: StatsPump = app.state.pump
    return pump
