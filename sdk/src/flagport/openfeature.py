"""An OpenFeature provider backed by a Flagport client (extra ``flagport[openfeature]``).

::

    from openfeature import api
    from flagport.openfeature import FlagportProvider

    api.set_provider_and_wait(FlagportProvider.local("http://127.0.0.1:8787"))
    api.get_client().get_boolean_value("ui-improvements", False, EvaluationContext("42"))

Either mode: :meth:`FlagportProvider.remote` evaluates over OFREP (:class:`flagport.Client`),
:meth:`FlagportProvider.local` in process (:class:`flagport.LocalClient`). Flagport's reasons
and error codes are OpenFeature's; a value served while the server is unreachable has reason
``STALE``. The client's status becomes provider events: READY -> ``PROVIDER_READY``, STALE ->
``PROVIDER_STALE``, ERROR -> ``PROVIDER_ERROR``, and every new snapshot of a local client ->
``PROVIDER_CONFIGURATION_CHANGED``.

OpenFeature's ``track(name, context, details)`` is the client's ``report(name, **labels)``
(docs/spec.md section 13): the event counts for every plan flag read while serving the current
request. The details' attributes become the labels: strings as they are, booleans as
``true``/``false``, numbers as their decimal text; lists, objects and ``value`` are not
carried. An event the wire shape cannot take is logged (a warning) and not counted: ``track``
never raises into the application.

OpenFeature's async API (``await client.get_boolean_value_async(...)``) never blocks the event
loop. Remote, the provider's ``resolve_*_details_async`` methods await a
:class:`flagport.AsyncClient` that shares the :class:`flagport.Client`'s core (one circuit
breaker, one set of last known values, one status); in process, evaluation is a plain local
call with no I/O and runs inline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from flagport._exceptions import ClientError
from flagport._types import ClientStatus, FlagDetails, details_from_result
from flagport.engine import EvaluationResult

if TYPE_CHECKING:
    from flagport._async_client import AsyncClient
    from flagport._local import LocalClient

__all__ = ["FlagportProvider"]

logger = logging.getLogger("flagport")

_ERROR_CODES = {code.value: code for code in OFErrorCode}
_STALE = OFReason.STALE.value
_READY = ClientStatus.READY


class _Evaluator(Protocol):
    @property
    def status(self) -> ClientStatus: ...

    def details(
        self, key: str, default: Any, context: Mapping[str, Any] | None = None
    ) -> FlagDetails: ...

    def on_status(self, listener: Any) -> None: ...

    def close(self) -> None: ...

    def report(self, event: str, **labels: str) -> int: ...


def _context(context: OFContext | None) -> dict[str, Any]:
    if context is None:
        return {}
    key = context.targeting_key
    if key is None:
        return dict(context.attributes)
    return {**context.attributes, "targetingKey": key}


def _label(value: object) -> str | None:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _labels(details: TrackingEventDetails | None) -> dict[str, str]:
    """A tracking event's attributes as outcome-event labels (see the module docstring)."""
    if details is None:
        return {}
    return {
        name: label
        for name, value in details.attributes.items()
        if (label := _label(value)) is not None
    }


def _resolution(details: FlagDetails) -> FlagResolutionDetails[Any]:
    metadata = details.metadata or {}
    if details.error_code is not None and not details.stale:
        return FlagResolutionDetails(
            value=details.value,
            error_code=_ERROR_CODES.get(details.error_code.value, OFErrorCode.GENERAL),
            error_message=details.error_message,
            reason=OFReason.ERROR,
            flag_metadata=metadata,
        )
    if details.stale and details.error_code is not None and details.variant is None:
        # No value was known: the default, with the error.
        return FlagResolutionDetails(
            value=details.value,
            error_code=_ERROR_CODES.get(details.error_code.value, OFErrorCode.GENERAL),
            error_message=details.error_message,
            reason=OFReason.ERROR,
            flag_metadata=metadata,
        )
    return FlagResolutionDetails(
        value=details.value,
        variant=details.variant,
        reason=_STALE if details.stale else details.reason.value,
        flag_metadata=metadata,
    )


class FlagportProvider(AbstractProvider):
    """OpenFeature provider over a :class:`flagport.Client` or :class:`flagport.LocalClient`.

    The provider owns the client when built by :meth:`remote` or :meth:`local` (``shutdown``
    closes it); pass ``owns_client=True`` to hand over one you built.

    Remote, the ``*_async`` methods await an :class:`~flagport.AsyncClient` rather than block
    the event loop on the sync client. An httpx async connection pool is bound to the event
    loop it is first used in, so the provider makes one AsyncClient per event loop, on that
    loop's first async evaluation, each sharing the sync client's core (same server, token and
    timeouts; one circuit breaker, one set of last known values, one status). Each is closed
    when its loop ends through ``asyncio.run`` (or any runner that calls
    ``loop.shutdown_asyncgens()``), and by ``shutdown`` (on its own loop, if that loop still
    runs). A loop closed otherwise leaves its pool's sockets to the garbage collector; the
    provider makes a new AsyncClient for the next loop. A :class:`~flagport.Client` built
    with its own ``transport`` has no async counterpart: its async evaluations run the sync
    client in a worker thread (:func:`asyncio.to_thread`), which does not block the loop either.
    """

    def __init__(self, client: _Evaluator, *, owns_client: bool = False) -> None:
        super().__init__()
        self.client = client
        self._owns_client = owns_client
        self._details = client.details
        #: For a LocalClient: id(engine result) -> (result, resolution). The engine shares
        #: one result object per (flag, variant, reason), so each resolution is built once;
        #: the identity check makes a reused id harmless.
        self._resolutions: dict[int, tuple[EvaluationResult, FlagResolutionDetails[Any]]] = {}
        #: The same for boolean flags (their own dict: no type check on the hot path).
        self._bool_resolutions: dict[int, tuple[EvaluationResult, FlagResolutionDetails[Any]]] = {}
        from flagport._local import LocalClient  # the client exists: httpx is loaded

        self._local: LocalClient | None = client if isinstance(client, LocalClient) else None
        #: Remote mode: the flagport.Client (it makes the AsyncClients of the async methods).
        self._remote: Any = client if hasattr(client, "_async_twin") else None
        #: Remote mode, per event loop: its AsyncClient, and the async generator that closes
        #: it when the loop ends (see _close_at_loop_end).
        self._twins: dict[
            asyncio.AbstractEventLoop, tuple[AsyncClient, AsyncGenerator[None, None]]
        ] = {}
        self._twins_lock = threading.Lock()
        #: Whether a local client is READY, kept by _on_status (read on every evaluation).
        self._local_ready = False
        client.on_status(self._on_status)
        self._local_ready = self._local is not None and client.status is _READY
        on_change = getattr(client, "on_change", None)
        if on_change is not None:
            on_change(self._on_change)

    @classmethod
    def remote(cls, url: str, **options: Any) -> FlagportProvider:
        """A provider evaluating over OFREP (options: those of :class:`flagport.Client`)."""
        from flagport._client import Client

        return cls(Client(url, **options), owns_client=True)

    @classmethod
    def local(cls, url: str, **options: Any) -> FlagportProvider:
        """A provider evaluating in process (options: those of :class:`flagport.LocalClient`)."""
        from flagport._local import LocalClient

        return cls(LocalClient(url, **options), owns_client=True)

    # -- lifecycle and events -----------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name="Flagport")

    def initialize(self, evaluation_context: OFContext) -> None:
        """Ready when the client is; STALE (a bootstrap or an old snapshot) is reported just
        after OpenFeature marks the provider ready; nothing to serve raises (ERROR)."""
        wait_ready = getattr(self.client, "wait_ready", None)
        status = self.client.status
        if status is ClientStatus.NOT_READY and wait_ready is not None:
            wait_ready(3.0)
            status = self.client.status
        if status in (ClientStatus.NOT_READY, ClientStatus.ERROR):
            raise ProviderNotReadyError(
                f"Flagport client is {status.value}: "
                f"{getattr(self.client, 'last_error', None) or 'no snapshot yet'}"
            )
        if status is ClientStatus.STALE:
            # OpenFeature emits READY once initialize returns; report STALE right after.
            timer = threading.Timer(0.05, self._reemit)
            timer.daemon = True
            timer.start()

    def _reemit(self) -> None:
        self._on_status(self.client.status)

    def shutdown(self) -> None:
        """Close the AsyncClients of the async methods (each on its own loop; later async
        evaluations get a new one while the sync client is open) and, when the provider owns
        it, the client."""
        with self._twins_lock:
            twins = list(self._twins.items())
            self._twins.clear()
        for loop, (twin, closer) in twins:
            twin._closed = True  # from now on no I/O (last known values or defaults)
            if not loop.is_closed():
                # Thread-safe, and safe from the loop's own thread: the pool is closed on its
                # loop, as asyncio itself finalizes an async generator.
                try:
                    loop.call_soon_threadsafe(loop.create_task, closer.aclose())
                except RuntimeError:  # the loop closed meanwhile
                    pass
        if self._owns_client:
            self.client.close()

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: OFContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """The client's ``report(tracking_event_name, **labels)`` (see the module
        docstring); never raises."""
        try:
            self.client.report(tracking_event_name, **_labels(tracking_event_details))
        except ClientError as error:
            logger.warning("flagport: tracking event not counted: %s", error)

    def _on_status(self, status: ClientStatus) -> None:
        self._local_ready = self._local is not None and status is _READY
        if status is ClientStatus.READY:
            self.emit_provider_ready(ProviderEventDetails(message="Flagport client ready"))
        elif status is ClientStatus.STALE:
            self.emit_provider_stale(
                ProviderEventDetails(message="serving a stale snapshot: server unreachable")
            )
        elif status is ClientStatus.ERROR:
            message = getattr(self.client, "last_error", None) or "server unreachable"
            self.emit_provider_error(
                ProviderEventDetails(message=str(message), error_code=OFErrorCode.GENERAL)
            )

    def _on_change(self, version: int) -> None:
        self._resolutions = {}
        self._bool_resolutions = {}
        self.emit_provider_configuration_changed(
            ProviderEventDetails(message=f"snapshot {version}", metadata={"version": version})
        )

    # -- resolution -----------------------------------------------------------------------

    def _resolve(
        self, key: str, default: Any, evaluation_context: OFContext | None
    ) -> FlagResolutionDetails[Any]:
        context = _context(evaluation_context)
        local = self._local
        if local is not None and self._local_ready:
            # In process and current: the client's counted evaluation, resolved once per
            # shared engine result.
            return self._resolve_result(local.evaluate(key, context), default)
        return _resolution(self._details(key, default, context))

    def _resolve_result(self, result: EvaluationResult, default: Any) -> FlagResolutionDetails[Any]:
        if result.error_code is None and type(result.value) is type(default):
            cache = self._bool_resolutions if type(default) is bool else self._resolutions
            cached = cache.get(id(result))
            if cached is not None and cached[0] is result:
                return cached[1]
            resolution = _resolution(details_from_result(result, default))
            cache[id(result)] = (result, resolution)
            return resolution
        return _resolution(details_from_result(result, default))

    async def _resolve_async(
        self, key: str, default: Any, evaluation_context: OFContext | None
    ) -> FlagResolutionDetails[Any]:
        """Remote: :meth:`_resolve` over this loop's AsyncClient (same core, same mapping)."""
        context = _context(evaluation_context)
        remote = self._remote
        if remote._closed:
            # Closed: the last known value or the default, without I/O or a new AsyncClient.
            return _resolution(self._details(key, default, context))
        loop = asyncio.get_running_loop()
        entry = self._twins.get(loop)
        twin = entry[0] if entry is not None else await self._twin_for(loop)
        if twin is None:
            # A Client with its own transport: no async twin; not on the loop's thread.
            details = await asyncio.to_thread(self._details, key, default, context)
        else:
            details = await twin.details(key, default, context)
        return _resolution(details)

    async def _twin_for(self, loop: asyncio.AbstractEventLoop) -> AsyncClient | None:
        """A new AsyncClient for ``loop`` (the running one), registered to close with it."""
        twin: AsyncClient | None = self._remote._async_twin()
        if twin is None:
            return None
        closer = self._close_at_loop_end(loop, twin)
        with self._twins_lock:
            for old in [other for other in self._twins if other.is_closed()]:
                # Closed without shutdown_asyncgens: nothing can run on that loop any more.
                self._twins.pop(old)[0]._closed = True
            self._twins[loop] = (twin, closer)
        # The first step registers the generator with the running loop (its asyncgen hooks):
        # the loop's shutdown_asyncgens() then closes it, and with it the twin.
        await closer.__anext__()
        return twin

    async def _close_at_loop_end(
        self, loop: asyncio.AbstractEventLoop, twin: AsyncClient
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._twins_lock:
                entry = self._twins.get(loop)
                if entry is not None and entry[0] is twin:
                    del self._twins[loop]
            await twin.aclose()

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[bool]:
        # _resolve inlined: the common case, fewer Python calls.
        local = self._local
        if local is not None and self._local_ready:
            result = local.evaluate(flag_key, _context(evaluation_context))
            cached = self._bool_resolutions.get(id(result))
            if cached is not None and cached[0] is result:
                return cached[1]
            return self._resolve_result(result, default_value)
        return self._resolve(flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context)

    # -- async resolution: remote awaits the AsyncClient; in process, a local call -----------

    async def resolve_boolean_details_async(
        self, flag_key: str, default_value: bool, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[bool]:
        if self._remote is None:
            return self.resolve_boolean_details(flag_key, default_value, evaluation_context)
        return await self._resolve_async(flag_key, default_value, evaluation_context)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[str]:
        if self._remote is None:
            return self._resolve(flag_key, default_value, evaluation_context)
        return await self._resolve_async(flag_key, default_value, evaluation_context)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[int]:
        if self._remote is None:
            return self._resolve(flag_key, default_value, evaluation_context)
        return await self._resolve_async(flag_key, default_value, evaluation_context)

    async def resolve_float_details_async(
        self, flag_key: str, default_value: float, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[float]:
        if self._remote is None:
            return self._resolve(flag_key, default_value, evaluation_context)
        return await self._resolve_async(flag_key, default_value, evaluation_context)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: OFContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        if self._remote is None:
            return self._resolve(flag_key, default_value, evaluation_context)
        return await self._resolve_async(flag_key, default_value, evaluation_context)
