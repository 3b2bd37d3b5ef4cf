"""PromQL guards against a Prometheus HTTP API (docs/spec.md, "Guarded rollouts",
Prometheus; docs/adr/0025-prometheus-guards.md): the driver's queries, each in a task of
its own so a slow or dead Prometheus never holds up a decision (and never an evaluation:
nothing here runs on a request's path), and the one check at plan start that refuses a
query Prometheus rejects. The substitution and the reading of an answer are the pure
core's (:mod:`flagport.rollout.promql`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from flagport.rollout.errors import PrometheusError
from flagport.rollout.promql import PromqlReading, query_url, read_answer
from flagport_server.probes import AnswerTooLarge, Probes, fetch

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
        status, body = await fetch(client, query_url(base), QUERY_TIMEOUT, {"query": query})
    except (httpx.TimeoutException, TimeoutError):
        raise PrometheusError(
            f"Prometheus at {base} did not answer within {QUERY_TIMEOUT:g} s"
        ) from None
    except AnswerTooLarge as error:
        raise PrometheusError(
            f"Prometheus at {base} sent {error}: make the query aggregate to one series"
        ) from None
    except (httpx.HTTPError, OSError) as error:
        raise PrometheusError(f"Prometheus at {base} is unreachable: {error}") from None
    return read_answer(status, body)


async def check_queries(base: str, queries: Iterable[str]) -> None:
    """At plan start: every (substituted) query is evaluated once; the first one
    Prometheus refuses, or Prometheus unreachable, raises :class:`PrometheusError` (the
    plan is not made). No data is fine: the series may appear once the flag is on."""
    async with _client() as client:
        # Together, so a plan with many guards waits one timeout at most, not one each.
        await asyncio.gather(*(ask(client, base, query) for query in queries))


class PromqlQueries(Probes[tuple[str, str], PromqlReading]):
    """The last reading of each (Prometheus URL, substituted query), each queried in a task
    of its own every :data:`QUERY_EVERY` seconds at most, one in flight at a time. An error
    or a timeout is a reading without a value, its reason in the note."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(client, _client)

    @property
    def readings(self) -> dict[tuple[str, str], PromqlReading]:
        return self.results

    def reading_of(self, base: str, query: str) -> PromqlReading | None:
        """The last reading of ``query`` (None: this worker has not queried it yet)."""
        return self.result_of((base, query))

    def due(self, base: str, query: str, now: float) -> None:
        """Start a query if its interval has passed and none is under way."""
        self.start_if_due((base, query), QUERY_EVERY, now, lambda: self.query(base, query))

    async def query(self, base: str, query: str) -> PromqlReading:
        """Query once and keep the reading."""
        try:
            reading = await ask(self.client, base, query)
        except PrometheusError as error:
            reading = PromqlReading(None, str(error))
        self.results[(base, query)] = reading
        return reading
