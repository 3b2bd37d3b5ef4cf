"""``flagport.AsyncClient``: :class:`~flagport.Client` for asyncio, on the same pure core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from flagport._breaker import CircuitBreaker
from flagport._connection import (
    DEFAULT_TIMEOUT,
    KEEPALIVE_EXPIRY,
    auth_headers,
    background_client,
    split_url,
)
from flagport._exceptions import ClientError
from flagport._remote import RemoteCore
from flagport._types import ClientStatus, FlagDetails, served_on
from flagport.overrides import overrides_from_environment
from flagport.reporting import ReportsOutcomes

__all__ = ["AsyncClient"]


class AsyncClient(ReportsOutcomes):
    """Evaluate flags on a Flagport server over OFREP, from asyncio code.

    ::

        async with flagport.AsyncClient("unix:///run/flagport.sock") as flags:
            on = await flags.is_enabled("ui-improvements", {"targetingKey": "42"})

    Same behaviour as :class:`~flagport.Client` (never raises, last known values while the
    server is unreachable, circuit breaker), with ``await``. :meth:`report` is a plain call
    (no I/O); outcomes are posted from a thread over a small synchronous pool of their own.
    ``local_overrides`` as for :class:`~flagport.Client`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        failure_threshold: int = 2,
        cooldown: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        local_overrides: bool = True,
    ) -> None:
        base_url, uds = split_url(url)
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                uds=uds,
                # No TLS on http:// or a socket: no CA bundle to load (some 100 ms).
                verify=not base_url.startswith("http://"),
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=20,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
            )
        self.url = url
        self._token = token
        self._background: httpx.Client | None = None
        self._core = RemoteCore(CircuitBreaker(failure_threshold, cooldown))
        if local_overrides:
            self._core.overrides = overrides_from_environment()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=auth_headers(token),
            timeout=timeout,
            transport=transport,
            verify=not base_url.startswith("http://"),
        )
        self._closed = False

    async def details(
        self, key: str, default: Any, context: Mapping[str, Any] | None = None
    ) -> FlagDetails:
        """Evaluate ``key``: value (or ``default``), variant, reason, error code, staleness."""
        core = self._core
        overridden = core.overridden(key, context, default)
        if overridden is not None:
            return overridden
        body = core.body(context)
        if body is None:
            return core.bad_context(key, default)
        if self._closed:
            return core.fallback(key, body, default, "the client is closed")
        if not core.breaker.allow():
            return core.fallback(key, body, default, core.open_circuit_error())
        try:
            response = await self._http.post(
                core.single_path(key),
                content=body,
                headers={"Content-Type": "application/json"},
            )
            outcome = core.parse_single(key, body, response.status_code, response.content)
        except httpx.HTTPError as error:
            outcome = f"cannot reach {self.url}: {type(error).__name__}: {error}"
        except Exception as error:  # never raise into the app
            outcome = f"unexpected error talking to {self.url}: {error!r}"
        if isinstance(outcome, str):
            core.failed(outcome)
            return core.fallback(key, body, default, outcome)
        core.answered()
        return core.finish(outcome, default)

    async def value(self, key: str, default: Any, context: Mapping[str, Any] | None = None) -> Any:
        """The flag's value for ``context``, or ``default`` (also when the types differ)."""
        return (await self.details(key, default, context)).value

    async def is_enabled(
        self, key: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> bool:
        """Whether ``key`` is on for ``context``: a plain on/off flag's value; any other flag
        is on unless it serves its off variant. ``default`` on any error."""
        details = await self.details(key, None, context)
        return default if details.is_error else served_on(details.value, details.metadata, default)

    async def all(self, context: Mapping[str, Any] | None = None) -> dict[str, FlagDetails]:
        """Every flag for ``context`` in one request (OFREP bulk, revalidated by ETag);
        overridden keys as the overrides answer."""
        return self._core.with_overrides(await self._all(context), context)

    async def _all(self, context: Mapping[str, Any] | None) -> dict[str, FlagDetails]:
        core = self._core
        body = core.body(context)
        if body is None:
            return {}
        if self._closed:
            return core.bulk_fallback(body, "the client is closed")
        if not core.breaker.allow():
            return core.bulk_fallback(body, core.open_circuit_error())
        headers = {"Content-Type": "application/json"}
        etag = core.bulk_etag(body)
        if etag:
            headers["If-None-Match"] = etag
        try:
            response = await self._http.post(core.BULK_PATH, content=body, headers=headers)
            outcome = core.parse_bulk(
                body, response.status_code, response.content, response.headers.get("etag")
            )
        except httpx.HTTPError as error:
            outcome = f"cannot reach {self.url}: {type(error).__name__}: {error}"
        except Exception as error:  # never raise into the app
            outcome = f"unexpected error talking to {self.url}: {error!r}"
        if isinstance(outcome, str):
            core.failed(outcome)
            return core.bulk_fallback(body, outcome)
        core.answered()
        return outcome

    def _outcomes_http(self) -> httpx.Client:
        self._background = background_client(self.url, self._token)
        return self._background

    @property
    def status(self) -> ClientStatus:
        """READY, or ERROR while the circuit is open."""
        return self._core.status

    def on_status(self, listener: Callable[[ClientStatus], None]) -> None:
        """Call ``listener(status)`` when the status changes (circuit opened or closed)."""
        self._core.listeners.append(listener)

    async def aclose(self) -> None:
        """Post the outcomes counted so far and close the connection pools. Later
        evaluations return defaults."""
        self._closed = True
        if self._outcomes is not None:
            await asyncio.to_thread(self._close_outcomes)
        if self._background is not None:
            self._background.close()
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncClient:
        if self._closed:
            raise ClientError("the client is closed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
