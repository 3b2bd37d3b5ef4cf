"""``flagport.Client``: remote evaluation over OFREP with a long-lived connection pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from flagport._breaker import CircuitBreaker
from flagport._connection import DEFAULT_TIMEOUT, KEEPALIVE_EXPIRY, auth_headers, split_url
from flagport._exceptions import ClientError
from flagport._remote import RemoteCore
from flagport._types import ClientStatus, FlagDetails, served_on
from flagport.overrides import overrides_from_environment
from flagport.reporting import ReportsOutcomes

if TYPE_CHECKING:
    from flagport._async_client import AsyncClient

__all__ = ["Client"]


class Client(ReportsOutcomes):
    """Evaluate flags on a Flagport server over OFREP.

    ::

        with flagport.Client("http://127.0.0.1:8787", token="fpe_...") as flags:
            if flags.is_enabled("ui-improvements", {"targetingKey": "42"}):
                ...

    Evaluations never raise: on any failure they return the caller's default (or the last
    value known for that flag and context, marked ``stale``), and ``details`` says why. After
    ``failure_threshold`` consecutive failures the circuit opens for ``cooldown`` seconds:
    calls then return at once, without touching the network. Thread-safe.

    ``local_overrides`` (default true) reads a developer's ``FLAGPORT_OVERRIDES``
    (:mod:`flagport.overrides`; ignored under ``FLAGPORT_ENV=production``): the keys it names
    are answered from it, without a request. A setting that cannot be parsed raises
    :class:`~flagport.InvalidDocumentError` here.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        failure_threshold: int = 2,
        cooldown: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 100,
        local_overrides: bool = True,
    ) -> None:
        base_url, uds = split_url(url)
        #: What an AsyncClient twin needs to talk to the same server (see _async_twin).
        self._twin_options: dict[str, Any] | None = None
        if transport is None:
            # No TLS on http:// or a socket: no CA bundle to load (some 100 ms); over https,
            # one SSL context, shared with the async twins.
            verify = False if base_url.startswith("http://") else httpx.create_ssl_context()
            limits = httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=20,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            transport = httpx.HTTPTransport(uds=uds, verify=verify, limits=limits)
            self._twin_options = {
                "token": token,
                "timeout": timeout,
                "uds": uds,
                "verify": verify,
                "limits": limits,
            }
        self.url = url
        self._core = RemoteCore(CircuitBreaker(failure_threshold, cooldown))
        if local_overrides:
            self._core.overrides = overrides_from_environment()
        self._http = httpx.Client(
            base_url=base_url,
            headers=auth_headers(token),
            timeout=timeout,
            transport=transport,
            # No TLS on http:// or a socket: skip loading the CA bundle.
            verify=not base_url.startswith("http://"),
        )
        self._closed = False

    # -- evaluations ------------------------------------------------------------------

    def details(
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
            response = self._http.post(
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

    def value(self, key: str, default: Any, context: Mapping[str, Any] | None = None) -> Any:
        """The flag's value for ``context``, or ``default`` (also when the types differ)."""
        return self.details(key, default, context).value

    def is_enabled(
        self, key: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> bool:
        """Whether ``key`` is on for ``context``: a plain on/off flag's value; any other flag
        is on unless it serves its off variant. ``default`` on any error."""
        details = self.details(key, None, context)
        return default if details.is_error else served_on(details.value, details.metadata, default)

    def all(self, context: Mapping[str, Any] | None = None) -> dict[str, FlagDetails]:
        """Every flag for ``context`` in one request (OFREP bulk, revalidated by ETag).
        Errors are per flag; when the server cannot be reached, the last answer for this
        context marked stale, else an empty dict. Overridden keys as the overrides answer."""
        return self._core.with_overrides(self._all(context), context)

    def _all(self, context: Mapping[str, Any] | None) -> dict[str, FlagDetails]:
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
            response = self._http.post(core.BULK_PATH, content=body, headers=headers)
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

    def _async_twin(self) -> AsyncClient | None:
        """A new :class:`~flagport.AsyncClient` for the same server, token and timeouts that
        shares this client's core: one circuit breaker, one set of last known values, one
        status (and its listeners). For callers that evaluate from both sync and async code
        (the OpenFeature provider). Its connection pool is bound to the event loop it is first
        used in: one twin per loop, closed by the caller.

        None when this client is closed, or was given its own ``transport`` (an async
        transport cannot be derived from it).
        """
        options = self._twin_options
        if self._closed or options is None:
            return None
        from flagport._async_client import AsyncClient

        transport = httpx.AsyncHTTPTransport(
            uds=options["uds"], verify=options["verify"], limits=options["limits"]
        )
        twin = AsyncClient(
            self.url,
            token=options["token"],
            timeout=options["timeout"],
            transport=transport,
            local_overrides=False,  # the shared core carries them
        )
        # Before any use: the twin's own fresh core is replaced by this client's.
        twin._core = self._core
        return twin

    def _outcomes_http(self) -> httpx.Client:
        return self._http

    # -- lifecycle --------------------------------------------------------------------

    @property
    def status(self) -> ClientStatus:
        """READY, or ERROR while the circuit is open."""
        return self._core.status

    def on_status(self, listener: Callable[[ClientStatus], None]) -> None:
        """Call ``listener(status)`` when the status changes (circuit opened or closed)."""
        self._core.listeners.append(listener)

    def close(self) -> None:
        """Post the outcomes counted so far and close the connection pool. Later
        evaluations return defaults."""
        self._closed = True
        self._close_outcomes()
        self._http.close()

    def __enter__(self) -> Client:
        if self._closed:
            raise ClientError("the client is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
