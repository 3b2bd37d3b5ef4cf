"""A deadline on receiving a request's body (pure ASGI, wrapped around the whole app).

Granian bounds the time to read a request's headers but not its body: a client that sends
its headers and then trickles (or never sends) the body holds a connection, and a slot of
the worker's connection budget, for ever. Past the deadline the app's ``receive`` raises
:class:`~flagport_server.errors.RequestTimeout`, which the app's error handlers answer with
408 and ``Connection: close``.

Cheap on the evaluation path: requests of bodiless methods pass through untouched, and a
body read costs two dict operations (the evaluation dispatch calls :meth:`BodyDeadline.watch`
and :meth:`BodyDeadline.settle` around its reads; other requests read through
:meth:`BodyDeadline.bounded`, one coroutine more). A single sweeper task per app
(running only while some body is being read) cancels the reads that passed their deadline,
instead of one timer per request; under a flood of slow bodies it spreads the 408s over a
few seconds past the deadline.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from flagport_server.errors import RequestTimeout

__all__ = ["BodyDeadline"]

_HTTP: str = ScopeType.HTTP
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Marks, in ``BodyDeadline._waiting``, a read the sweeper cancelled.
_EXPIRED = -1.0
#: Seconds between two sweeps, and reads cancelled at most in one: slow bodies all due at once
#: (a flood started together) are answered over a few seconds, not in one burst holding the
#: event loop (each 408 is a full trip through the app's error handling, ~0.1 ms).
_SWEEP_SECONDS = 0.05
_CANCELS_PER_SWEEP = 25


class BodyDeadline:
    """Give every request ``seconds`` to send its whole body, from the app's first read."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        #: The body reads in progress (awaitables with ``cancel``), with their request's
        #: deadline.
        self._waiting: dict[Any, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_every = min(_SWEEP_SECONDS, seconds / 4)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != _HTTP or scope["method"] in _BODILESS:  # type: ignore[typeddict-item]
            await self.app(scope, receive, send)
            return
        await self.app(scope, self.bounded(receive), send)

    def bounded(
        self, receive: Receive, deadline: float | None = None, *, complete: bool = False
    ) -> Receive:
        """``receive`` under the deadline, which starts at its first call, or is ``deadline``
        (a :meth:`due` already started: the evaluation dispatch hands on the body it began
        to read under it). ``complete``: the body was read whole, later reads are not bounded
        (they wait for a disconnect)."""
        due = deadline or 0.0
        done = complete

        async def receive_by_deadline() -> ReceiveMessage:
            nonlocal due, done
            if done:
                return await receive()
            if not due:
                due = self.due()
            read = self.watch(receive(), due)
            try:
                message: ReceiveMessage = await read
            except asyncio.CancelledError:
                if not self.expired(read):
                    raise
                # Made here, never held in a local: an exception in its own frame is a cycle,
                # and the cycle would keep the read (and with it the connection) until the
                # garbage collector's next pass.
                raise RequestTimeout(
                    f"the request body was not received within {self.seconds:g} seconds"
                ) from None
            finally:
                self.settle(read)
            if not message.get("more_body", False):
                done = True
            return message

        return receive_by_deadline

    @property
    def watching(self) -> int:
        """Body reads under the deadline now."""
        return len(self._waiting)

    def due(self) -> float:
        """The deadline of a body whose first read starts now."""
        return monotonic() + self.seconds

    def watch(self, read: Any, deadline: float) -> Any:
        """Put one body read (what ``receive()`` returned) under ``deadline``; await what this
        returns, ask :meth:`expired` if it was cancelled, and :meth:`settle` it in any case.
        The read itself is what the sweeper cancels (granian's ``receive`` returns a
        cancellable future; a coroutine is made a task): cheaper than looking up the current
        task, and nothing but the read is interrupted. The evaluation dispatch calls these
        three inline rather than through :meth:`bounded` (no closure and no coroutine per
        request)."""
        if not hasattr(read, "cancel"):
            read = asyncio.ensure_future(read)
        self._waiting[read] = deadline
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return read

    def settle(self, read: Any) -> None:
        """A watched read is over (answered, failed or cancelled): forget it."""
        self._waiting.pop(read, None)

    def expired(self, read: Any) -> bool:
        """For a watched read that was cancelled: whether the sweeper cancelled it, past its
        deadline (else the cancellation came from elsewhere: re-raise it)."""
        return self._waiting.pop(read, None) == _EXPIRED

    async def _sweep(self) -> None:
        waiting = self._waiting
        try:
            while True:
                await asyncio.sleep(self._sweep_every)
                if not waiting:
                    break  # restarted by the next read: at most once per sweep period
                now = monotonic()
                budget = _CANCELS_PER_SWEEP
                # Only values change (no await in between): iterating the dict itself is safe.
                for read, deadline in waiting.items():
                    if 0 <= deadline <= now:
                        waiting[read] = _EXPIRED
                        read.cancel()
                        budget -= 1
                        if not budget:
                            break
        finally:
            self._sweeper = None
