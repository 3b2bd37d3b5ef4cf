"""OFREP v0.3 on the wire, the one home of its shape (``/ofrep/v1/...``, ``/v1/evaluate``):
the Structs the server encodes its answers with (``flagport_server.wire.ofrep_v1`` imports
them from here), the ones the remote clients decode them with, and the request body a client
sends. See docs/spec.md, the HTTP surface.

Only the reasons of OFREP's enum go on the wire; an engine error becomes an
``evaluationFailure`` (``errorCode`` + ``errorDetails``) instead of a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from flagport.engine import ErrorCode, EvaluationResult

__all__ = [
    "BULK_PATH",
    "SINGLE_PATH",
    "Answer",
    "BulkAnswer",
    "BulkEvaluationItem",
    "BulkEvaluationResponse",
    "ContextSchema",
    "EvaluationFailure",
    "EvaluationRequest",
    "EvaluationSuccess",
    "EventStream",
    "EventStreamEndpoint",
    "RequestFailure",
    "decode_answer",
    "decode_bulk",
    "encode",
    "encoder",
    "failure_from_result",
    "request_context",
    "success_from_result",
]

#: Where OFREP evaluates every flag, and one flag (``SINGLE_PATH + "/" + quoted key``).
BULK_PATH = "/ofrep/v1/evaluate/flags"
SINGLE_PATH = BULK_PATH

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
#: Encodes any of the Structs above (and plain builtins); the server pre-encodes its answers
#: with it once per snapshot, so this is never on its per-request path for known answers.
encode = encoder.encode


# -- what a client reads ---------------------------------------------------------------------


class Answer(msgspec.Struct):
    """Any one answer a client reads: :class:`EvaluationSuccess`, :class:`EvaluationFailure`,
    :class:`RequestFailure` or a :class:`BulkEvaluationItem`: their fields, each optional (a
    failure before the key was known has none). A test checks it holds every field of those."""

    key: str = ""
    value: Any = None
    variant: str | None = None
    reason: str | None = None
    errorCode: str | None = None
    errorDetails: str | None = None
    metadata: dict[str, Any] | None = None


class BulkAnswer(msgspec.Struct):
    """What a client reads of a :class:`BulkEvaluationResponse`: the items."""

    flags: list[Answer]


#: ``bytes -> Answer`` / ``bytes -> BulkAnswer``; raise msgspec's DecodeError or
#: ValidationError on anything else.
decode_answer = msgspec.json.Decoder(Answer).decode
decode_bulk = msgspec.json.Decoder(BulkAnswer).decode


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


def request_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``context`` of a request body. OFREP wants ``targetingKey`` as a string: an integer
    is sent in decimal (it buckets the same), an absent one as ``""`` (no unit: flags that need
    none still evaluate, as in process)."""
    if context is None:
        return {"targetingKey": ""}
    data = context if type(context) is dict else dict(context)
    key = data.get("targetingKey")
    if type(key) is str:
        return data
    data = dict(data)
    if key is None:
        data["targetingKey"] = ""
    elif type(key) is int:
        data["targetingKey"] = str(key)
    return data
