"""Outside signals the rollout driver reads (health URLs, Prometheus queries), each polled in
a task of its own so that a slow or silent endpoint never holds a decision up: the driver
reads the last result and never waits for one.

:class:`Probes` is the one home of that bookkeeping (when a probe is due, the task under way,
forgetting what no plan uses any more, closing the HTTP client), and :func:`fetch` of how
one answer is read (bounded in time and size); the driver's
:class:`~flagport_server.driver.HealthPolls` and
:class:`~flagport_server.prometheus.PromqlQueries` say what a probe does and what it keeps.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Collection, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_ANSWER_BYTES", "AnswerTooLarge", "Probes", "fetch"]

#: A probe's answer is read up to this size: a health answer or an instant query's is small,
#: and a larger one (a query matching thousands of series) would be decoded every second.
MAX_ANSWER_BYTES: Final = 1 << 20


class AnswerTooLarge(Exception):
    """An answer longer than :data:`MAX_ANSWER_BYTES` (the rest is not read)."""


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    deadline_s: float,
    params: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """``GET url``: its status and body, all of it within ``deadline_s`` (the client's
    timeouts bound each read, so a server trickling its answer a byte at a time would hold
    the probe, and the last result, for ever). :class:`TimeoutError` past the deadline,
    :class:`AnswerTooLarge` past :data:`MAX_ANSWER_BYTES`, httpx's errors otherwise."""
    async with asyncio.timeout(deadline_s):
        async with client.stream("GET", url, params=params) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded: the cap holds a zip bomb
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise AnswerTooLarge(f"an answer over {MAX_ANSWER_BYTES:,} bytes")
            return response.status_code, bytes(body)


K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Probes(Generic[K, R]):
    """The last result per probed thing (``K``), each probed at most once per its interval,
    one probe in flight at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        make_client: Callable[[], httpx.AsyncClient],
    ) -> None:
        self._client = client
        self._make_client = make_client
        self.results: dict[K, R] = {}
        self._next: dict[K, float] = {}
        self._tasks: dict[K, asyncio.Task[Any]] = {}

    def result_of(self, key: K) -> R | None:
        """The last result for ``key`` (None: not probed yet)."""
        return self.results.get(key)

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client the probes share, made on first use."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def start_if_due(
        self, key: K, interval: float, now: float, probe: Callable[[], Coroutine[Any, Any, Any]]
    ) -> None:
        """Start ``probe()`` for ``key`` if ``interval`` has passed since the last start and
        none is under way."""
        if now < self._next.get(key, -math.inf) or key in self._tasks:
            return
        self._next[key] = now + interval
        task = asyncio.get_running_loop().create_task(probe())
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    def forget(self, keep: Collection[K]) -> None:
        """Drop the results of everything not in ``keep`` (no plan uses it any more)."""
        for key in [k for k in self.results if k not in keep]:
            self.results.pop(key, None)
            self._next.pop(key, None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
