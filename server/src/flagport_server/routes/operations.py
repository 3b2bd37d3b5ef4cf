"""Operations routes: liveness, readiness and Prometheus metrics (no token)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency

from flagport_server.auth import PUBLIC, requires
from flagport_server.metrics import CONTENT_TYPE_LATEST
from flagport_server.operations import Operations

__all__ = ["operations_routes"]

#: The app's Operations, injected by name (``create_app``'s dependencies).
Operation = NamedDependency[Operations]


@get("/healthz", summary="Liveness", tags=["operations"], opt=requires(PUBLIC))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    summary="Readiness: 200 while a snapshot is loaded, 503 before",
    tags=["operations"],
    opt=requires(PUBLIC),
)
async def readyz(operations: Operation) -> Response[dict[str, Any]]:
    body, status = operations.readiness()
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response(body, status_code=status, headers=headers)


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    media_type=CONTENT_TYPE_LATEST,
    opt=requires(PUBLIC),
)
async def metrics_route(operations: Operation) -> Response[bytes]:
    return Response(operations.metrics_exposition(), media_type=CONTENT_TYPE_LATEST)


operations_routes = [healthz, readyz, metrics_route]
