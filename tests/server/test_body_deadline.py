"""The body deadline's per-read bookkeeping (the 408 itself, through a real server, is in
test_serving.py, which also proves the connection is closed after it): nothing stays watched
after a read ends, however it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flagport_server.body_deadline import BodyDeadline
from flagport_server.errors import RequestTimeout

pytestmark = pytest.mark.anyio

SECONDS = 0.05
PART = {"type": "http.request", "body": b"{", "more_body": True}
LAST = {"type": "http.request", "body": b"}", "more_body": False}


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("only bounded() and the per-read methods are used here")


class Reads:
    """A ``receive`` giving ``messages`` in order, then never answering (a client that sent
    part of its body and stopped)."""

    def __init__(self, *messages: Any) -> None:
        self.messages = list(messages)

    def __call__(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.messages:
            future.set_result(self.messages.pop(0))
        return future


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_body_sent_whole_leaves_nothing_watched() -> None:
    deadline = BodyDeadline(_no_app, SECONDS)
    receive = deadline.bounded(Reads(PART, LAST))
    assert await receive() == PART
    assert await receive() == LAST
    assert deadline.watching == 0


async def test_a_stalled_body_is_a_request_timeout_and_nothing_stays_watched() -> None:
    deadline = BodyDeadline(_no_app, SECONDS)
    receive = deadline.bounded(Reads(PART))
    await receive()
    with pytest.raises(RequestTimeout, match=r"not received within 0\.05 seconds"):
        await asyncio.wait_for(receive(), 2)
    assert deadline.watching == 0


async def test_a_read_that_fails_leaves_nothing_watched() -> None:
    deadline = BodyDeadline(_no_app, SECONDS)

    def failing() -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(ConnectionResetError("the client left"))
        return future

    with pytest.raises(ConnectionResetError):
        await deadline.bounded(failing)()
    assert deadline.watching == 0


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    deadline = BodyDeadline(_no_app, 60)
    receive = deadline.bounded(Reads())
    task = asyncio.ensure_future(receive())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadline.watching == 0


async def test_a_deadline_already_started_is_kept_and_a_whole_body_is_not_bounded() -> None:
    deadline = BodyDeadline(_no_app, 60)
    past = deadline.due() - 61  # started by an earlier reader, already over
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(deadline.bounded(Reads(), past)(), 2)
    # Read whole before: later reads (waiting for a disconnect) are never cut.
    after = deadline.bounded(Reads(), past, complete=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(after(), 0.2)
    assert deadline.watching == 0
