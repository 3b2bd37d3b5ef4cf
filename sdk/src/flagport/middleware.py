"""ASGI and WSGI middleware reporting each request's outcome for the plan flags it read
(docs/spec.md section 13, "Outcome signals").

::

    flags = flagport.Client("unix:///run/flagport.sock")
    app = OutcomeMiddleware(app, flags)            # ASGI (Starlette, FastAPI, Litestar...)
    app = WSGIOutcomeMiddleware(app, flags)        # WSGI (Flask, Django...)

Per request the middleware opens a set of plan reads (:data:`flagport.reporting.PLAN_READS`);
every evaluation the client makes while serving it adds the plan cohort its answer names (a
plan flag read directly, or through a flag it gates). At the end the request's duration,
and whether it failed (a status >= 500, or an exception escaping the app, which is re-raised),
go to the client's reporter for each plan cohort read. A request that read no plan flag is
not counted: it costs a context variable set and reset and two clock reads.

The duration runs from the call to the last byte handed to the server (the app's return, for
ASGI; the body iterable's close, for WSGI). WSGI reads are collected while the app is called,
not while a streamed body is iterated.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, Protocol

from flagport.reporting import PLAN_READS, OutcomeReporter, Read

__all__ = ["OutcomeMiddleware", "WSGIOutcomeMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_clock = time.perf_counter


class _Reporting(Protocol):
    @property
    def outcomes(self) -> OutcomeReporter: ...


def _reporter(client: _Reporting | OutcomeReporter) -> OutcomeReporter:
    return client if isinstance(client, OutcomeReporter) else client.outcomes


class OutcomeMiddleware:
    """ASGI middleware: each HTTP request's status and duration, reported for every plan
    flag read while serving it, through ``client`` (a :class:`~flagport.Client`,
    :class:`~flagport.AsyncClient` or :class:`~flagport.LocalClient`; its reporter posts in
    the background). Other scopes (websocket, lifespan) pass through untouched."""

    def __init__(self, app: ASGIApp, client: _Reporting | OutcomeReporter) -> None:
        self.app = app
        self._record = _reporter(client).record_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reads: set[Read] = set()
        token = PLAN_READS.set(reads)
        status = 0

        def send_status(message: Message) -> Awaitable[None]:
            # A plain function handing back send's own awaitable: no extra coroutine.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        started = _clock()
        try:
            await self.app(scope, receive, send_status)
        except Exception:
            if reads:
                self._record(reads, True, _clock() - started)
            raise
        finally:
            PLAN_READS.reset(token)
        if reads:
            # No response started: the server answers 500.
            self._record(reads, status >= 500 or status == 0, _clock() - started)


class WSGIOutcomeMiddleware:
    """WSGI middleware: as :class:`OutcomeMiddleware`, for WSGI apps. The status is the one
    the app passed to ``start_response`` last; an exception raised by the app or while its
    body is iterated is a failure (and re-raised)."""

    def __init__(self, app: WSGIApp, client: _Reporting | OutcomeReporter) -> None:
        self.app = app
        self._record = _reporter(client).record_request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reads: set[Read] = set()
        token = PLAN_READS.set(reads)
        status = [""]

        def start_status(line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = line  # read only if the request read a plan flag
            return start_response(line, headers, exc_info)

        started = _clock()
        try:
            body = self.app(environ, start_status)
        except Exception:
            if reads:
                self._record(reads, True, _clock() - started)
            raise
        finally:
            PLAN_READS.reset(token)
        if not reads:
            return body
        return _Body(body, self._record, reads, status, started)


class _Body:
    """A WSGI body that reports its request when the server closes it."""

    __slots__ = ("_body", "_done", "_failed", "_reads", "_record", "_started", "_status")

    def __init__(
        self,
        body: Iterable[bytes],
        record: Callable[[Iterable[Read], bool, float], None],
        reads: set[Read],
        status: list[str],
        started: float,
    ) -> None:
        self._body = body
        self._record = record
        self._reads = reads
        self._status = status
        self._started = started
        self._failed = False
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception:
            self._failed = True
            raise

    def __len__(self) -> int:
        # A server sets Content-Length from a sized body (a TypeError: it does not).
        return len(self._body)  # type: ignore[arg-type]

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        except Exception:
            self._failed = True
            raise
        finally:
            if not self._done:
                self._done = True
                code = self._status[0][:3]
                failed = self._failed or not code.isdigit() or int(code) >= 500
                self._record(self._reads, failed, _clock() - self._started)
