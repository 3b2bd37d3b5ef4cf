"""OFREP v0.3 wire models and pre-built encoders (``/ofrep/v1/...``, ``/v1/evaluate``): the
shape is the SDK's :mod:`flagport.ofrep`, shared with the remote clients that read it; the
server's routes name it through this module.
"""

from __future__ import annotations

from flagport.ofrep import (
    BulkEvaluationItem,
    BulkEvaluationResponse,
    ContextSchema,
    EvaluationFailure,
    EvaluationRequest,
    EvaluationSuccess,
    EventStream,
    EventStreamEndpoint,
    RequestFailure,
    encode,
    encoder,
    failure_from_result,
    success_from_result,
)

__all__ = [
    "BulkEvaluationItem",
    "BulkEvaluationResponse",
    "ContextSchema",
    "EvaluationFailure",
    "EvaluationRequest",
    "EvaluationSuccess",
    "EventStream",
    "EventStreamEndpoint",
    "RequestFailure",
    "encode",
    "encoder",
    "failure_from_result",
    "success_from_result",
]
