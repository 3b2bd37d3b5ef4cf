"""The pure core of the remote clients (httpx's ``BaseClient`` pattern): URL handling, request
bodies, response parsing, the last known values and the fallbacks. :class:`~flagport.Client`
and :class:`~flagport.AsyncClient` add only the I/O, so both behave identically.

Nothing here does I/O or raises into the application.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import msgspec

from flagport._breaker import CircuitBreaker
from flagport._types import (
    ClientStatus,
    FlagDetails,
    check_type,
    details_from_result,
    error_details,
    type_mismatch,
)
from flagport.engine import ErrorCode, Reason
from flagport.ofrep import (
    BULK_PATH,
    SINGLE_PATH,
    Answer,
    decode_answer,
    decode_bulk,
    encode,
    request_context,
)
from flagport.overrides import Overrides
from flagport.reporting import note_read

__all__ = ["RemoteCore"]

logger = logging.getLogger("flagport")
_GENERAL = ErrorCode.GENERAL
_ERROR = Reason.ERROR
#: Last known values kept per (flag, context); the oldest go first beyond this.
MAX_REMEMBERED = 10_000


_EMPTY: Mapping[str, Any] = {}
_REASONS = {reason.value: reason for reason in Reason}
_CODES = {code.value: code for code in ErrorCode}


def _raw(answer: Answer, key: str) -> FlagDetails:
    """The answer as details with the *served* value (type not yet checked)."""
    if answer.errorCode is not None:
        return FlagDetails(
            key=answer.key or key,
            value=None,
            reason=_ERROR,
            error_code=_CODES.get(answer.errorCode, _GENERAL),
            error_message=answer.errorDetails or answer.errorCode,
            metadata=answer.metadata or None,
        )
    reason = _REASONS.get(answer.reason or "")
    if reason is None or reason is _ERROR:
        # OFREP's UNKNOWN, or a reason from a newer server: the value stands.
        reason = Reason.TARGETING_MATCH
    return FlagDetails(
        key=answer.key or key,
        value=answer.value,
        variant=answer.variant,
        reason=reason,
        metadata=answer.metadata or None,
    )


class RemoteCore:
    """Request building, response parsing and fallbacks for one remote client."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.last_known: dict[tuple[str, bytes], FlagDetails] = {}
        self.bulk_cache: dict[bytes, tuple[str, dict[str, FlagDetails]]] = {}
        self.status = ClientStatus.READY
        self.listeners: list[Callable[[ClientStatus], None]] = []
        #: A developer's local overrides (``FLAGPORT_OVERRIDES``): answered here, not asked.
        self.overrides: Overrides | None = None

    # -- local overrides --------------------------------------------------------------

    def overridden(
        self, key: str, context: Mapping[str, Any] | None, default: Any
    ) -> FlagDetails | None:
        """The overridden answer for ``key``, None when no override names it."""
        overrides = self.overrides
        if overrides is None or key not in overrides:
            return None
        return details_from_result(overrides.result(key, context or _EMPTY), default)

    def with_overrides(
        self, answers: dict[str, FlagDetails], context: Mapping[str, Any] | None
    ) -> dict[str, FlagDetails]:
        """The bulk ``answers`` with the overridden keys answered by the overrides."""
        overrides = self.overrides
        if overrides is None:
            return answers
        merged = dict(answers)
        for key, result in overrides.results(context or _EMPTY).items():
            merged[key] = details_from_result(result, None)
        return merged

    # -- requests ---------------------------------------------------------------------

    @staticmethod
    def single_path(key: str) -> str:
        return SINGLE_PATH + "/" + quote(key, safe="")

    #: Where every flag is evaluated (``flagport.ofrep.BULK_PATH``).
    BULK_PATH = BULK_PATH

    @staticmethod
    def body(context: Mapping[str, Any] | None) -> bytes | None:
        """The request body, or None when the context cannot be encoded (INVALID_CONTEXT)."""
        try:
            return encode({"context": request_context(context)})
        except (TypeError, ValueError, OverflowError):
            return None

    def bulk_etag(self, body: bytes) -> str | None:
        cached = self.bulk_cache.get(body)
        return cached[0] if cached else None

    # -- responses --------------------------------------------------------------------

    def parse_single(self, key: str, body: bytes, status: int, content: bytes) -> FlagDetails | str:
        """The raw details of an OFREP answer, or the failure (a string) that counts
        against the circuit breaker: unreachable, refused token, overload, garbage."""
        if status in (200, 400, 404, 500):
            try:
                answer = decode_answer(content)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return f"unreadable answer from the server (HTTP {status})"
            if status == 200 and answer.errorCode is None and answer.variant is None:
                return "unreadable answer from the server (a 200 without a variant)"
            if status != 200 and answer.errorCode is None:
                return f"unreadable answer from the server (HTTP {status})"
            raw = _raw(answer, key)
            if raw.error_code is None:
                self._remember((key, body), raw)
            return raw
        if status in (401, 403):
            return f"the server refused the token (HTTP {status})"
        return f"the server answered HTTP {status}"

    def parse_bulk(
        self, body: bytes, status: int, content: bytes, etag: str | None
    ) -> dict[str, FlagDetails] | str:
        if status == 304:
            cached = self.bulk_cache.get(body)
            if cached is not None:
                return cached[1]
            return "HTTP 304 for an answer this client does not have"
        if status == 200:
            try:
                bulk = decode_bulk(content)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return "unreadable bulk answer from the server"
            results = {answer.key: _raw(answer, answer.key) for answer in bulk.flags}
            if etag:
                if len(self.bulk_cache) >= 1_000:
                    del self.bulk_cache[next(iter(self.bulk_cache))]
                self.bulk_cache[body] = (etag, results)
            return results
        if status in (401, 403):
            return f"the server refused the token (HTTP {status})"
        if status == 400:
            try:
                answer = decode_answer(content)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return "unreadable answer from the server (HTTP 400)"
            return _raw(answer, "").error_message or "bad request"
        return f"the server answered HTTP {status}"

    def _remember(self, where: tuple[str, bytes], raw: FlagDetails) -> None:
        remembered = self.last_known
        if where not in remembered and len(remembered) >= MAX_REMEMBERED:
            del remembered[next(iter(remembered))]
        remembered[where] = raw

    # -- outcomes ---------------------------------------------------------------------

    def answered(self) -> None:
        self.breaker.success()
        if self.status is not ClientStatus.READY:
            self._set_status(ClientStatus.READY)

    def _set_status(self, status: ClientStatus) -> None:
        self.status = status
        for listener in list(self.listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("flagport: a status listener failed")

    def finish(self, raw: FlagDetails, default: Any) -> FlagDetails:
        """The caller's view: the default on an error or a value of the wrong type. A
        served answer's plan cohort is noted for the request being served (whatever the
        caller's type: the unit was served it)."""
        if raw.error_code is not None:
            return msgspec.structs.replace(raw, value=default)
        if raw.metadata is not None:
            note_read(raw.metadata)
        ok, value = check_type(raw.value, default)
        if not ok:
            return type_mismatch(raw.key, raw.value, default, raw.stale)
        if value is not raw.value:
            return msgspec.structs.replace(raw, value=value)
        return raw

    def failed(self, error: str) -> None:
        self.breaker.failure(error)
        if self.breaker.is_open and self.status is not ClientStatus.ERROR:
            self._set_status(ClientStatus.ERROR)

    def fallback(self, key: str, body: bytes | None, default: Any, error: str) -> FlagDetails:
        """The last known value for this flag and context (stale), else the default."""
        if body is not None:
            known = self.last_known.get((key, body))
            if known is not None:
                stale = msgspec.structs.replace(
                    known, stale=True, error_code=_GENERAL, error_message=error
                )
                return self.finish_stale(stale, default)
        return error_details(key, default, _GENERAL, error)

    def finish_stale(self, stale: FlagDetails, default: Any) -> FlagDetails:
        if stale.metadata is not None:
            note_read(stale.metadata)
        ok, value = check_type(stale.value, default)
        if not ok:
            return type_mismatch(stale.key, stale.value, default, stale=True)
        return msgspec.structs.replace(stale, value=value)

    def bulk_fallback(self, body: bytes | None, error: str) -> dict[str, FlagDetails]:
        cached = self.bulk_cache.get(body) if body is not None else None
        if cached is None:
            return {}
        return {
            key: msgspec.structs.replace(d, stale=True, error_code=_GENERAL, error_message=error)
            if d.error_code is None
            else d
            for key, d in cached[1].items()
        }

    def open_circuit_error(self) -> str:
        return f"circuit open after: {self.breaker.last_error}"

    @staticmethod
    def bad_context(key: str, default: Any) -> FlagDetails:
        return error_details(
            key, default, ErrorCode.INVALID_CONTEXT, "the context cannot be encoded as JSON"
        )
