"""SDK feeds in the evaluation scope: the snapshot document for in-process clients and the
change stream (SSE) that tells every client to re-fetch when the configuration changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from flagport_server.auth import evaluation_guard
from flagport_server.state import Runtime
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.response import ServerSentEvent, ServerSentEventMessage

__all__ = ["feed_routes"]

#: Seconds between keep-alive comments on an idle stream (proxies drop silent connections).
KEEPALIVE_SECONDS = 15.0
_CLOSE = -1


def _snapshot_body(runtime: Runtime) -> bytes:
    """The compiled-from document, encoded once per applied version."""
    snapshot = runtime.snapshot
    assert snapshot is not None
    cached = runtime.cache.get("snapshot-body")
    if cached is None or cached[0] != snapshot.version:
        cached = (snapshot.version, msgspec.json.encode(snapshot.document))
        runtime.cache["snapshot-body"] = cached
    return cached[1]


@get(
    "/v1/snapshot",
    guards=[evaluation_guard],
    summary="The configuration for in-process SDKs (ETag/304)",
    tags=["feeds"],
)
async def snapshot_feed(request: Request[Any, Any, State]) -> Response[bytes]:
    runtime: Runtime = request.app.state.runtime
    if runtime.snapshot is None:
        return Response(
            b'{"detail":"no snapshot loaded yet"}',
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": "1"},
        )
    etag = f'"{runtime.version}"'
    headers = {
        "ETag": etag,
        "X-Flagport-Snapshot": str(runtime.version),
        "X-Flagport-Worker": request.app.state.pid,
    }
    if request.headers.get("if-none-match", "").strip() == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(_snapshot_body(runtime), media_type="application/json", headers=headers)


def _event(runtime: Runtime, version: int) -> ServerSentEventMessage:
    data = msgspec.json.encode(
        {"type": "refetchEvaluation", "etag": str(version), "lastModified": int(runtime.applied_at)}
    ).decode()
    return ServerSentEventMessage(data=data, id=version)


@get(
    "/v1/stream",
    guards=[evaluation_guard],
    summary="Change stream (SSE): a refetchEvaluation event after every change",
    tags=["feeds"],
)
async def change_stream(request: Request[Any, Any, State]) -> ServerSentEvent:
    runtime: Runtime = request.app.state.runtime
    last_event = request.headers.get("last-event-id", "").strip()
    last_seen = int(last_event) if last_event.isdigit() else None
    queue: asyncio.Queue[int] = asyncio.Queue()
    unsubscribe = runtime.subscribe(queue.put_nowait)

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        try:
            yield ServerSentEventMessage(
                data=None, comment=f"flagport snapshot {runtime.version}", retry=1000
            )
            if (
                last_seen is not None
                and runtime.snapshot is not None
                and last_seen < runtime.version
            ):
                yield _event(runtime, runtime.version)  # missed while disconnected
            while True:
                try:
                    version = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                while not queue.empty():  # coalesce a burst of changes into one event
                    version = queue.get_nowait()
                if version == _CLOSE:
                    return
                yield _event(runtime, version)
        finally:
            with contextlib.suppress(ValueError):
                unsubscribe()

    return ServerSentEvent(
        events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


feed_routes = [snapshot_feed, change_stream]
