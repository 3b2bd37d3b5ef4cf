"""ASGI entry point for server runners that start worker processes themselves.

``flags serve`` puts the settings, msgspec-encoded, in ``FLAGPORT_SETTINGS_JSON``; each worker
builds its app from them (``granian --factory flagport_server.asgi:app_from_env``).
"""

from __future__ import annotations

import math
import os

import msgspec
from litestar.types import ASGIApp

from flagport_server.app import create_app
from flagport_server.auth import token_record
from flagport_server.body_deadline import BodyDeadline
from flagport_server.cors import Cors, CorsPolicy
from flagport_server.dispatch import EvaluationDispatch, Front
from flagport_server.host_check import HostCheck
from flagport_server.metrics import Metrics
from flagport_server.rate_limit import RateLimit
from flagport_server.settings import Settings
from flagport_server.stores.base import Store

__all__ = ["SETTINGS_ENV", "app_from_env", "serving_app"]

SETTINGS_ENV = "FLAGPORT_SETTINGS_JSON"


def app_from_env() -> ASGIApp:
    raw = os.environ.get(SETTINGS_ENV)
    settings = msgspec.json.decode(raw, type=Settings) if raw else Settings.from_env()
    return serving_app(settings)


def serving_app(settings: Settings, store: Store | None = None) -> ASGIApp:
    """What a worker serves: the Litestar app behind the evaluation dispatch and the
    wrappers every request passes (``store``: as for :func:`create_app`)."""
    app = create_app(settings, store)
    cors = CorsPolicy(settings.cors_origins) if settings.cors_origins else None
    # The CORS layer (preflights, Litestar's answers) sits in front of Litestar; the dispatch
    # adds the CORS headers to its own answers (docs/adr/0024-cors-where-the-answer-is-made.md).
    framework: ASGIApp = app if cors is None else Cors(app, cors)
    # Request timing and the body deadline wrap the app rather than being Litestar
    # middlewares: Litestar then runs its exception middleware twice per request (measured:
    # +2 us per request).
    deadline = BodyDeadline(framework, settings.body_timeout)
    chain: ASGIApp = deadline
    rate = None
    runtime = app.state.runtime
    if settings.rate_limit is not None:
        burst = settings.rate_burst or max(1, math.ceil(2 * settings.rate_limit))
        # A 429 carries the CORS headers, so a page can read its Retry-After (docs/spec.md
        # section 12).
        chain = rate = RateLimit(
            chain,
            settings.rate_limit,
            burst,
            settings.trusted_proxies,
            cors=cors,
            known_token=lambda secret: token_record(runtime, secret) is not None,
        )
    host = None
    if settings.checks_host:
        chain = host = HostCheck(chain, app.state.runtime, settings.allowed_hosts, cors)
    metrics: Metrics = app.state.metrics
    chain = metrics.latency_middleware(chain)
    # The evaluation routes are served by the dispatch, not by Litestar's pipeline
    # (docs/adr/0021-evaluation-dispatch.md). It is outermost and applies the layers above
    # to its own requests itself, one call each; every other request passes them.
    front = Front(framework, chain, deadline=deadline, timing=metrics, host=host, rate=rate)
    return EvaluationDispatch(app, settings.max_eval_body, cors, front)
