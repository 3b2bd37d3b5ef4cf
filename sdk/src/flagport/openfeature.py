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
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata

from flagport._types import ClientStatus, FlagDetails, details_from_result

__all__ = ["FlagportProvider"]

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


def _context(context: OFContext | None) -> dict[str, Any]:
    if context is None:
        return {}
    key = context.targeting_key
    if key is None:
        return dict(context.attributes)
    return {**context.attributes, "targetingKey": key}


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
    """

    def __init__(self, client: _Evaluator, *, owns_client: bool = False) -> None:
        super().__init__()
        self.client = client
        self._owns_client = owns_client
        self._details = client.details
        #: For a LocalClient: id(engine result) -> (result, resolution). The engine shares
        #: one result object per (flag, variant, reason), so each resolution is built once;
        #: the identity check makes a reused id harmless.
        self._resolutions: dict[int, tuple[Any, FlagResolutionDetails[Any]]] = {}
        #: The same for boolean flags (their own dict: no type check on the hot path).
        self._bool_resolutions: dict[int, tuple[Any, FlagResolutionDetails[Any]]] = {}
        self._local: Any = client if hasattr(client, "_flags") else None
        client.on_status(self._on_status)
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
        if self._owns_client:
            self.client.close()

    def _on_status(self, status: ClientStatus) -> None:
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
        if local is not None and local._status is _READY:
            # In process and current: the engine's shared result, resolved once.
            flag = local._flags.get(key)
            if flag is not None:
                result = flag.evaluate(context)
                if result.error_code is None and type(result.value) is type(default):
                    cache = self._bool_resolutions if type(default) is bool else self._resolutions
                    cached = cache.get(id(result))
                    if cached is not None and cached[0] is result:
                        return cached[1]
                    resolution = _resolution(details_from_result(result, default))
                    cache[id(result)] = (result, resolution)
                    return resolution
        return _resolution(self._details(key, default, context))

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: OFContext | None = None
    ) -> FlagResolutionDetails[bool]:
        # _resolve inlined: the common case, one Python call less.
        local = self._local
        if local is not None and local._status is _READY:
            flag = local._flags.get(flag_key)
            if flag is not None:
                result = flag.evaluate(_context(evaluation_context))
                cached = self._bool_resolutions.get(id(result))
                if cached is not None and cached[0] is result:
                    return cached[1]
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
