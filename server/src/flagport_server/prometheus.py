"""PromQL guards against a Prometheus HTTP API (docs/spec.md, "Guarded rollouts",
Prometheus; docs/adr/0025-prometheus-guards.md): the driver's queries, each in a task of
its own so a slow or dead Prometheus never holds up a decision (and never an evaluation:
nothing here runs on a request's path), and the one check at plan start that refuses a
query Prometheus rejects. The substitution and the reading of an answer are the pure
core's (:mod:`flagport.rollout.promql`)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from flagport.rollout.errors import PrometheusError
from flagport.rollout.promql import PromqlReading, query_url, read_answer

if TYPE_CHECKING:  # httpx takes a while to import: only a worker that queries loads it
    import httpx

__all__ = ["QUERY_EVERY", "QUERY_TIMEOUT", "PromqlQueries", "ask", "check_queries"]

#: As a health poll's.
QUERY_TIMEOUT: Final = 5.0
#: A query is re-sent at most this often (and never while one is in flight): the driver
#: judges every 0.5 s, Prometheus scrapes every 15 s or so by default.
QUERY_EVERY: Final = 1.0


def _client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=QUERY_TIMEOUT, follow_redirects=False)


async def ask(client: httpx.AsyncClient, base: str, query: str) -> PromqlReading:
    """One instant query of ``query`` (already substituted) at ``base``: its reading, or
    :class:`PrometheusError` when Prometheus refuses it or cannot be reached in time."""
    import httpx

    try:
        response = await client.get(query_url(base), params={"query": query})
    except httpx.TimeoutException:
        raise PrometheusError(
            f"Prometheus at {base} did not answer within {QUERY_TIMEOUT:g} s"
        ) from None
    except (httpx.HTTPError, OSError) as error:
        raise PrometheusError(f"Prometheus at {base} is unreachable: {error}") from None
    return read_answer(response.status_code, response.content)


async def check_queries(base: str, queries: Iterable[str]) -> None:
    """At plan start: every (substituted) query is evaluated once; the first one
    Prometheus refuses, or Prometheus unreachable, raises :class:`PrometheusError` (the
    plan is not made). No data is fine: the series may appear once the flag is on."""
    async with _client() as client:
        # Together, so a plan with many guards waits one timeout at most, not one each.
        await asyncio.gather(*(ask(client, base, query) for query in queries))


class PromqlQueries:
    """The last reading of each (Prometheus URL, substituted query), each queried in a task
    of its own every :data:`QUERY_EVERY` seconds at most, one in flight at a time. An error
    or a timeout is a reading without a value, its reason in the note."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self.readings: dict[tuple[str, str], PromqlReading] = {}
        self._next: dict[tuple[str, str], float] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[PromqlReading]] = {}

    def reading_of(self, base: str, query: str) -> PromqlReading | None:
        """The last reading of ``query`` (None: this worker has not queried it yet)."""
        return self.readings.get((base, query))

    def due(self, base: str, query: str, now: float) -> None:
        """Start a query if its interval has passed and none is under way."""
        key = (base, query)
        if now < self._next.get(key, -math.inf) or key in self._tasks:
            return
        self._next[key] = now + QUERY_EVERY
        task = asyncio.get_running_loop().create_task(self.query(base, query))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def query(self, base: str, query: str) -> PromqlReading:
        """Query once and keep the reading."""
        if self._client is None:
            self._client = _client()
        try:
            reading = await ask(self._client, base, query)
        except PrometheusError as error:
            reading = PromqlReading(None, str(error))
        self.readings[(base, query)] = reading
        return reading

    def forget(self, keep: set[tuple[str, str]]) -> None:
        for key in [k for k in self.readings if k not in keep]:
            self.readings.pop(key, None)
            self._next.pop(key, None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
