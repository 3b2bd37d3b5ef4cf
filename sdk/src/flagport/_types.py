"""Public value types shared by every client: the evaluation context, the details of one
evaluation, the client status, and the check of a served value against the caller's default."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from flagport.engine import ErrorCode, EvaluationResult, Reason

__all__ = ["ClientStatus", "Context", "EvaluationContext", "FlagDetails"]


class ClientStatus(enum.StrEnum):
    """Where a client stands (mapped one to one onto OpenFeature's provider status)."""

    #: No configuration yet; evaluations return the caller's defaults.
    NOT_READY = "NOT_READY"
    #: Up to date with the server.
    READY = "READY"
    #: Serving the last known configuration (or a bootstrap file) while the server is
    #: unreachable.
    STALE = "STALE"
    #: Nothing to serve and the server is unreachable or refuses the token: defaults only.
    ERROR = "ERROR"


class EvaluationContext(Mapping[str, Any]):
    """Who is asking: ``targeting_key`` plus any attributes, kept with their own types.

    It *is* a read-only mapping (``{"targetingKey": ..., **attributes}``), so the engine
    reads it as fast as a plain dict; clients accept either. ::

        EvaluationContext("42", company_id=7, plan="pro")
    """

    __slots__ = ("_data", "attributes", "get", "targeting_key")

    def __init__(
        self,
        targeting_key: str | int | None = None,
        attributes: Mapping[str, Any] | None = None,
        **more: Any,
    ) -> None:
        data: dict[str, Any] = dict(attributes or {})
        data.update(more)
        data.pop("targetingKey", None)
        self.attributes: Mapping[str, Any] = dict(data)
        self.targeting_key = targeting_key
        if targeting_key is not None:
            data["targetingKey"] = targeting_key
        self._data = data
        # The engine calls ``context.get``: the dict's own method, no Python frame.
        self.get = data.get  # type: ignore[method-assign]

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"EvaluationContext({self.targeting_key!r}, {dict(self.attributes)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def as_dict(self) -> dict[str, Any]:
        """A new plain dict (``targetingKey`` plus the attributes)."""
        return dict(self._data)


#: What every evaluation method accepts as a context.
Context = Mapping[str, Any]


class FlagDetails(msgspec.Struct, frozen=True):
    """The outcome of one evaluation, as the application sees it.

    ``value`` is what the caller gets: the served value, or the caller's default on an error
    (then ``reason`` is ``ERROR`` and ``error_code``/``error_message`` say why). While the
    server is unreachable a client serves the last value it knew: ``stale`` is true and
    ``error_code``/``error_message`` name the outage, ``reason`` is the reason of that value.
    """

    key: str
    value: Any
    variant: str | None = None
    reason: Reason = Reason.ERROR
    error_code: ErrorCode | None = None
    error_message: str | None = None
    stale: bool = False
    metadata: dict[str, Any] | None = None

    @property
    def is_error(self) -> bool:
        """True when ``value`` is the caller's default because the evaluation failed."""
        return self.reason is Reason.ERROR


def check_type(value: Any, default: Any) -> tuple[bool, Any]:
    """(ok, value): whether the served ``value`` has the type of the caller's ``default``.

    ``None`` as the default accepts anything; a float default accepts an int (JSON ``1``) and
    returns it as a float; bool and int never mix (``True`` is not an int flag's value).
    """
    if default is None:
        return True, value
    expected = type(default)
    actual = type(value)
    if actual is expected:
        return True, value
    if expected is bool or actual is bool:
        return False, None
    if expected is float and actual is int:
        return True, float(value)
    if isinstance(default, str):
        return isinstance(value, str), value
    if isinstance(default, int) and not isinstance(default, bool):
        return isinstance(value, int), value
    if isinstance(default, Mapping):
        return isinstance(value, Mapping), value
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple), value
    return True, value


def type_mismatch(key: str, value: Any, default: Any, stale: bool = False) -> FlagDetails:
    return FlagDetails(
        key=key,
        value=default,
        reason=Reason.ERROR,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=(
            f"flag {key!r} served a {type(value).__name__}; the default is a "
            f"{type(default).__name__}"
        ),
        stale=stale,
    )


def error_details(
    key: str, default: Any, code: ErrorCode, message: str, metadata: dict[str, Any] | None = None
) -> FlagDetails:
    return FlagDetails(
        key=key,
        value=default,
        reason=Reason.ERROR,
        error_code=code,
        error_message=message,
        metadata=metadata,
    )


def served_on(value: Any, metadata: Mapping[str, Any] | None, default: bool) -> bool:
    """Whether a served answer means its flag is on: it serves anything but its own off
    variant (what gates the flag's children). The answers of flags whose values do not say
    it carry ``metadata.on``; a plain on/off flag's value says it. ``default`` when neither
    does (a value that is not a boolean, from a server that predates ``metadata.on``)."""
    if metadata:
        on = metadata.get("on")
        if on is True or on is False:
            return on
    if value is True or value is False:
        return value
    return default


def details_from_result(result: EvaluationResult, default: Any, stale: bool = False) -> FlagDetails:
    """The engine's result as the caller sees it: the default on an error or a wrong type."""
    if result.error_code is not None:
        return FlagDetails(
            key=result.key,
            value=default,
            reason=Reason.ERROR,
            error_code=result.error_code,
            error_message=result.error_message,
            stale=stale,
            metadata=result.metadata,
        )
    ok, value = check_type(result.value, default)
    if not ok:
        return type_mismatch(result.key, result.value, default, stale)
    return FlagDetails(
        key=result.key,
        value=value,
        variant=result.variant,
        reason=result.reason,
        stale=stale,
        metadata=result.metadata,
    )
