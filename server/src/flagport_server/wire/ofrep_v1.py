"""OFREP v0.3 wire models and pre-built encoders (``/ofrep/v1/...``, ``/v1/evaluate``).

Only the reasons of OFREP's enum go on the wire; an engine error becomes an
``evaluationFailure`` (``errorCode`` + ``errorDetails``) instead of a value.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from flagport.engine import ErrorCode, EvaluationResult

__all__ = [
    "BulkEvaluationResponse",
    "EvaluationFailure",
    "EvaluationRequest",
    "EvaluationSuccess",
    "EventStream",
    "encode",
    "failure_from_result",
    "success_from_result",
]

ContextSchema = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="Evaluation context: `targetingKey` (a string) plus any attributes.",
        extra_json_schema={
            "required": ["targetingKey"],
            "properties": {"targetingKey": {"type": "string"}},
            "additionalProperties": True,
        },
    ),
]


class EvaluationRequest(msgspec.Struct):
    """Body of OFREP single and bulk evaluation requests."""

    context: ContextSchema


class EvaluationSuccess(msgspec.Struct, omit_defaults=True):
    key: str
    reason: str
    variant: str
    value: Any
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class EvaluationFailure(msgspec.Struct, omit_defaults=True):
    key: str
    errorCode: str
    errorDetails: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class EventStreamEndpoint(msgspec.Struct):
    requestUri: str


class EventStream(msgspec.Struct, omit_defaults=True):
    """Where clients listen for changes: an absolute ``url`` when the server knows its public
    URL, else an ``endpoint`` relative to the OFREP base URL."""

    type: str
    url: str | None = None
    endpoint: EventStreamEndpoint | None = None
    inactivityDelaySec: int = 120


class BulkEvaluationItem(msgspec.Struct, omit_defaults=True):
    """One bulk item: a success (``reason``, ``variant``, ``value``) or a failure
    (``errorCode``, ``errorDetails``). The server encodes items from the two Structs above;
    this merged shape documents them (msgspec unions of untagged Structs cannot)."""

    key: str
    reason: str | None = None
    variant: str | None = None
    value: Any = None
    errorCode: str | None = None
    errorDetails: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class BulkEvaluationResponse(msgspec.Struct, omit_defaults=True):
    flags: list[BulkEvaluationItem]
    eventStreams: list[EventStream] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class RequestFailure(msgspec.Struct, omit_defaults=True):
    """A whole request failed (400 on bulk, or before a key was known)."""

    errorCode: str
    errorDetails: str
    key: str | None = None


encoder = msgspec.json.Encoder()
encode = encoder.encode


def success_from_result(result: EvaluationResult) -> EvaluationSuccess:
    return EvaluationSuccess(
        key=result.key,
        reason=result.reason.value,
        variant=result.variant or "",
        value=result.value,
        metadata=result.metadata or {},
    )


def failure_from_result(result: EvaluationResult) -> EvaluationFailure:
    return EvaluationFailure(
        key=result.key,
        errorCode=(result.error_code or ErrorCode.GENERAL).value,
        errorDetails=result.error_message or "evaluation failed",
        metadata=result.metadata or {},
    )
