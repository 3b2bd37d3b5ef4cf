"""SDK feeds in the evaluation scope: the snapshot document for in-process clients and the
change stream (SSE) that tells every client to re-fetch when the configuration changes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any, NamedTuple

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import ServerSentEvent, ServerSentEventMessage

from flagport_server.auth import (
    EVALUATE,
    SDK,
    accepts_stream_ticket,
    credential_of,
    requires,
    scope_guard,
    token_by_id,
)
from flagport_server.runtime import Runtime
from flagport_server.stores.base import TokenRecord
from flagport_server.wire.fields import MAX_REQUEST_INT

__all__ = ["OpenStreams", "StreamSlot", "change_stream", "snapshot_feed", "streams_available"]

#: Seconds between keep-alive comments on an idle stream (proxies drop silent connections).
KEEPALIVE_SECONDS = 15.0
#: Seconds a client refused a stream (the worker's ``max_streams`` are open) should wait
#: before it tries again; it polls meanwhile (the SDKs' reconnect backoff is at most 5 s).
STREAM_RETRY_AFTER = "5"
_CLOSE = -1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds between two collections a full worker runs to reclaim abandoned stream slots.
_RECLAIM_INTERVAL = 1.0


class StreamSlot(NamedTuple):
    """One open stream's place among the worker's: the versions applied, and its release."""

    queue: asyncio.Queue[int]
    release: Callable[[], None]


class OpenStreams:
    """The app's open change streams, ended as soon as the worker is told to stop.

    Granian drains open connections *before* it runs the lifespan shutdown (where
    ``Runtime.stop`` ends the streams), so an open stream would hold the shutdown forever.
    The stop signal itself therefore ends them: a Python-level handler is chained in front of
    the existing one. The event loop's own handlers (``add_signal_handler``, woken through the
    wakeup fd, which every signal writes to) keep working unchanged.
    """

    def __init__(self, limit: int) -> None:
        self.queues: set[asyncio.Queue[int]] = set()
        self.stopping = False
        #: At most this many streams per worker: each holds a connection for as long as the
        #: client stays, and connections are the worker's scarcest resource.
        self.limit = limit
        self._reclaimed_at = -math.inf

    @property
    def full(self) -> bool:
        return len(self.queues) >= self.limit

    def full_after_reclaiming(self) -> bool:
        """Whether a new stream must be refused, once the slots of clients that left before
        their stream started are reclaimed. Such a slot is freed when its never-started
        generator is (``weakref.finalize``); when an aborted send left it in a reference
        cycle, that waits for the cyclic collector, which this worker runs rarely (seconds,
        under load). So at the cap the young generations are collected first: at most once
        a second, so that clients knocking at a full worker cannot make it collect more."""
        if not self.full:
            return False
        now = time.monotonic()
        if now - self._reclaimed_at >= _RECLAIM_INTERVAL:
            self._reclaimed_at = now
            gc.collect(1)
        return self.full

    def open(self, runtime: Runtime) -> StreamSlot | None:
        """A slot for a new stream, following ``runtime``'s applied versions: its queue, and
        the release that frees it (to call once the stream ends); ``None`` when the worker's
        streams are at the cap (the caller answers 503 with ``Retry-After``)."""
        if self.full_after_reclaiming():
            return None
        queue: asyncio.Queue[int] = asyncio.Queue()
        unsubscribe = runtime.subscribe(queue.put_nowait)
        self.queues.add(queue)
        if self.stopping:
            queue.put_nowait(_CLOSE)

        def release() -> None:
            self.queues.discard(queue)
            with contextlib.suppress(ValueError):
                unsubscribe()

        return StreamSlot(queue, release)

    def close_all(self) -> None:
        self.stopping = True
        for queue in self.queues:
            queue.put_nowait(_CLOSE)

    def hook_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # in-process test servers: no signals to follow
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # SIG_DFL/SIG_IGN: nobody drains connections gracefully

            def on_stop(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.close_all)
                previous(number, frame)

            signal.signal(signum, on_stop)


def streams_available(streams: OpenStreams) -> bool:
    """Whether this worker takes another change stream (OFREP bulk answers advertise the
    stream only then, so clients over the cap poll instead)."""
    return not streams.full


@get(
    "/v1/snapshot",
    guards=[scope_guard],
    opt=requires(SDK),
    summary="The configuration for in-process SDKs (ETag/304)",
    tags=["feeds"],
)
async def snapshot_feed(request: Request[Any, Any, State]) -> Response[bytes]:
    served = request.app.state.runtime.served
    if served is None:
        return Response(
            b'{"detail":"no snapshot loaded yet"}',
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": "1"},
        )
    etag = f'"{served.version}"'
    headers = {
        "ETag": etag,
        "X-Flagport-Snapshot": str(served.version),
        "X-Flagport-Worker": request.app.state.pid,
    }
    if request.headers.get("if-none-match", "").strip() == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(served.feed_body, media_type="application/json", headers=headers)


def _event(runtime: Runtime, version: int) -> ServerSentEventMessage:
    data = msgspec.json.encode(
        {"type": "refetchEvaluation", "etag": str(version), "lastModified": int(runtime.applied_at)}
    ).decode()
    return ServerSentEventMessage(data=data, id=version)


def _still_valid(runtime: Runtime, token: TokenRecord) -> bool:
    """Whether the token a stream was opened with still opens one: not revoked or expired,
    and its secret not rotated since."""
    now = token_by_id(runtime, token.id)
    return now is not None and credential_of(now) == credential_of(token)


def _last_event_id(header: str) -> int | None:
    """The snapshot version a reconnecting client saw last, or ``None`` when the header is
    absent or no version of ours (treated alike). ``str.isdigit`` alone also accepts "²",
    which ``int`` refuses, and "٣", which it reads as 3."""
    text = header.strip()
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_REQUEST_INT)):
        return int(text)
    return None


@get(
    "/v1/stream",
    guards=[scope_guard],
    opt={**requires(EVALUATE), **accepts_stream_ticket()},
    summary="Change stream (SSE): a refetchEvaluation event after every change",
    tags=["feeds"],
    responses={
        503: ResponseSpec(
            data_container=None,
            description="This worker has as many streams open as it takes: poll, retry later",
        )
    },
)
async def change_stream(request: Request[Any, Any, State]) -> ServerSentEvent | Response[bytes]:
    runtime: Runtime = request.app.state.runtime
    # The token the guard let in (by its header or a stream ticket): once it is revoked or
    # rotated, the stream ends (with the snapshot that carries the change), as every later
    # request with its secret is refused.
    token: TokenRecord | None = getattr(request.state, "token", None)
    last_seen = _last_event_id(request.headers.get("last-event-id", ""))
    streams: OpenStreams = request.app.state.open_streams
    slot = streams.open(runtime)
    if slot is None:
        return Response(
            b'{"detail":"too many change streams open on this worker; poll, and retry later"}',
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": STREAM_RETRY_AFTER},
        )
    queue, release = slot

    # Each stream its own period: streams opened together (a restart, a flood) do not all
    # send their keep-alives in the same instant.
    keepalive = KEEPALIVE_SECONDS * random.uniform(0.75, 1.0)

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
                    version = await asyncio.wait_for(queue.get(), keepalive)
                except TimeoutError:
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                closing = version == _CLOSE
                while not queue.empty():  # coalesce a burst of changes into one event
                    version = queue.get_nowait()
                    closing = closing or version == _CLOSE
                if closing or (token is not None and not _still_valid(runtime, token)):
                    return
                yield _event(runtime, version)
        finally:
            release()

    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Flagport-Worker": request.app.state.pid,
    }
    stream = events()
    # A client that leaves before its stream starts leaves a generator that is never
    # iterated, whose ``finally`` never runs: dropping it must free the slot too.
    weakref.finalize(stream, release)
    return ServerSentEvent(stream, headers=headers)
