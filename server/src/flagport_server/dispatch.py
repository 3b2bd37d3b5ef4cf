"""The evaluation dispatch: OFREP single and bulk and ``GET /v1/evaluate`` served in front of
Litestar, on the same listener, without the framework's routing, parameter and exception
layers (docs/adr/0021-evaluation-dispatch.md).

It serves what the framework would answer the same way, with the same functions:

- which requests: :func:`~flagport_server.surface.dispatched_route` (the table the Litestar
  route declarations name their paths from); every other request, and every request it does
  not take to the end, goes to the Litestar app unchanged;
- who may: the scope each route declares (read from the Litestar declaration once, here) and
  :func:`~flagport_server.auth.access`;
- what is answered: :mod:`flagport_server.routes.evaluation`'s answer functions, which the
  Litestar handlers call too;
- CORS: the ``Origin`` is read in the dispatch's own header scan and looked up in the
  worker's :class:`~flagport_server.cors.CorsPolicy`; the headers are added to the answer.
  The :class:`~flagport_server.cors.Cors` layer (preflights, Litestar's answers) sits behind
  the dispatch, in front of Litestar, so a dispatched request never passes it.

A request it cannot read, it never answers itself: a ``Content-Type`` other than
``application/json``, a body over the route's limit or that does not decode as an OFREP
request, a body read that failed (the deadline, a disconnect), a query string on a POST
(``flagConfigLastModified``...). Those go to Litestar with the body it has read so far
replayed, so their errors keep the one shape :mod:`flagport_server.http_errors` gives them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

import msgspec
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from flagport_server.auth import RouteScope, access, declared_scope, needs_token
from flagport_server.body_deadline import BodyDeadline
from flagport_server.cors import Cors, CorsHeaders, CorsPolicy
from flagport_server.host_check import HostCheck
from flagport_server.metrics import Metrics, StatusNote, route_label
from flagport_server.rate_limit import RateLimit
from flagport_server.routes.evaluation import (
    Answering,
    RawResponse,
    answer_bulk,
    answer_context,
    answer_single,
    gate,
    query_context,
    served_after_gate,
)
from flagport_server.surface import (
    DISPATCHED,
    EVALUATE_GET,
    OFREP_BULK,
    dispatched_route,
)
from flagport_server.wire import ofrep_v1 as wire

__all__ = ["EvaluationDispatch", "Front"]

_decode_request: Final = msgspec.json.Decoder(wire.EvaluationRequest).decode
_JSON: Final = b"application/json"
_HTTP: str = ScopeType.HTTP


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive`` that first gives back what the dispatch already read."""
    pending = list(messages)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


@dataclass(frozen=True)
class Front:
    """What stands between a request and the framework. ``chain`` is every layer as ASGI
    wrappers around ``framework`` (request timing, the ``Host`` check, the rate limit, the
    body deadline): every request the dispatch does not take passes it. The dispatch
    applies the same objects to its own requests with one call each, in the same order,
    instead of passing through the layers (measured: 5 µs of server CPU per OFREP POST,
    docs/adr/0021-evaluation-dispatch.md). A layer that is off is None."""

    #: The Litestar app behind the CORS layer (when there is a policy).
    framework: ASGIApp
    chain: ASGIApp
    deadline: BodyDeadline | None = None
    timing: Metrics | None = None
    host: HostCheck | None = None
    rate: RateLimit | None = None


class EvaluationDispatch:
    """Serve the dispatched evaluation routes of ``app``; hand everything else to
    ``front.chain`` (default: ``app`` behind the CORS layer, no other layer)."""

    def __init__(
        self,
        app: Litestar,
        max_body: int,
        cors: CorsPolicy | None = None,
        front: Front | None = None,
    ) -> None:
        if front is None:
            framework: ASGIApp = app if cors is None else Cors(app, cors)
            front = Front(framework=framework, chain=framework)
        #: Where a dispatched request it cannot read goes, its layers already applied.
        self.framework = front.framework
        #: Where every other request goes.
        self.chain = front.chain
        self.deadline = front.deadline
        self.timing = front.timing
        self.host = front.host
        self.rate = front.rate
        self.cors = cors
        self.litestar = app
        self.answering: Answering = app.state.answering
        self.runtime = self.answering.runtime
        self.max_body = max_body
        #: Route name -> the scope its Litestar declaration needs (declared once, there).
        self.scopes: dict[str, RouteScope] = {}
        for route in DISPATCHED:
            handler = app.get_handler_index_by_name(route.name)
            if handler is None or route.path not in handler["paths"]:
                raise RuntimeError(f"the app declares no route {route.name!r} at {route.path}")
            scope = declared_scope(handler["handler"])
            if scope is None:
                raise RuntimeError(f"route {route.name!r} declares no scope")
            self.scopes[route.name] = scope
        #: Route name -> whether it needs a token on this bind (the settings fix it).
        self.token_needed = {
            name: needs_token(self.runtime, required) for name, required in self.scopes.items()
        }
        #: Route name -> its latency label (as the timing layer labels its path).
        self.labels = {route.name: route_label(route.path) for route in DISPATCHED}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == _HTTP:
            found = dispatched_route(scope["path"], scope["method"])  # type: ignore[typeddict-item]
            if found is not None:
                timing = self.timing
                if timing is None:
                    await self._serve(scope, receive, send, *found)
                    return
                started = perf_counter()
                status = 500
                try:
                    status = await self._serve(scope, receive, send, *found)
                finally:
                    timing.note_latency(
                        self.labels[found[0].name], status, perf_counter() - started
                    )
                return
        await self.chain(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, route: Any, key: str) -> int:
        """Serve one dispatched request; the status answered."""
        content_type = None
        if_none_match = None
        origin = None
        host = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"if-none-match":
                if_none_match = value
            elif name == b"origin":
                origin = value
            elif name == b"host" and host is None:
                host = value
        # The layers' checks, in the chain's order: Host, then the rate limit.
        if self.host is not None and not self.host.allows(scope, host):
            await self.host.refuse(scope, send, host)
            return 421
        if self.rate is not None and (wait := self.rate.admit(scope)) is not None:
            await self.rate.refuse(scope, send, wait)
            return 429
        cors = None
        if origin is not None and self.cors is not None:
            cors = self.cors.answer_headers(origin)
        if route is EVALUATE_GET:
            return await self._send(send, self._answer_get(scope, key), cors)
        deadline = self.deadline
        if content_type != _JSON or scope["query_string"]:
            return await self._hand_on(scope, self._rest(receive, 0.0, False), send, [])
        # The body deadline is applied inline (no wrapper per request): it starts now; what
        # the dispatch hands on reads on under the same one.
        due = 0.0 if deadline is None else deadline.due()
        messages: list[ReceiveMessage] = []
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            read: Any = receive()
            failed = False
            try:
                if deadline is None:
                    message = await read
                else:
                    read = deadline.watch(read, due)
                    try:
                        message = await read
                    except asyncio.CancelledError:
                        if not deadline.expired(read):
                            raise
                        failed = True
                    finally:
                        deadline.settle(read)
            except Exception:  # a failed read
                failed = True
            if failed:
                # Litestar reads on from where the dispatch stopped and meets the same failure
                # (the same past deadline, at once): the framework answers it.
                return await self._hand_on(scope, self._rest(receive, due, False), send, messages)
            messages.append(message)
            if message["type"] != "http.request":
                return await self._hand_on(scope, self._rest(receive, due, False), send, messages)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._hand_on(scope, self._rest(receive, due, False), send, messages)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            context = _decode_request(body).context
        except (msgspec.DecodeError, RecursionError):
            return await self._hand_on(scope, self._rest(receive, due, True), send, messages)
        error, token = self._access(scope, route.name)
        answer = gate(self.answering, error)
        if answer is None:
            served = served_after_gate(self.answering)
            if route is OFREP_BULK:
                answer = answer_bulk(self.answering, served, context, token, if_none_match)
            else:
                answer = answer_single(self.answering, served, key, context)
        return await self._send(send, answer, cors)

    def _answer_get(self, scope: Scope, key: str) -> RawResponse:
        error, _ = self._access(scope, EVALUATE_GET.name)
        answer = gate(self.answering, error)
        if answer is not None:
            return answer
        context = query_context(scope["query_string"])
        return answer_context(self.answering, served_after_gate(self.answering), key, context)

    def _access(self, scope: Scope, route: str) -> tuple[Any, Any]:
        if not self.token_needed[route]:
            return None, None
        # What Litestar sets on entry: the connection reads the app's state from it.
        scope["litestar_app"] = self.litestar
        return access(ASGIConnection(scope), self.scopes[route])

    async def _send(self, send: Send, answer: RawResponse, cors: CorsHeaders | None) -> int:
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [*answer.headers, *cors] if cors else answer.headers,
        }
        await send(start)
        end: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": answer.body,
            "more_body": False,
        }
        await send(end)
        return answer.status

    def _rest(self, receive: Receive, due: float, complete: bool) -> Receive:
        """``receive`` for what the framework reads after the dispatch: under the deadline the
        dispatch started (``due``; 0: from the framework's first read), unbounded once the
        body was read whole (``complete``)."""
        if self.deadline is None:
            return receive
        return self.deadline.bounded(receive, due, complete=complete)

    async def _hand_on(
        self, scope: Scope, receive: Receive, send: Send, messages: list[ReceiveMessage]
    ) -> int:
        """Litestar answers (behind the CORS layer), reading the body from where the dispatch
        stopped; the status it answered."""
        if messages:
            receive = _replaying(messages, receive)
        noted = StatusNote(send)
        await self.framework(scope, receive, noted)
        return noted.status
