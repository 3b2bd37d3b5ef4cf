"""The pure evaluation engine shared by the server and the SDK.

It imports only msgspec, mmh3 and a few stdlib modules (an import-linter contract), never
reads the clock, the network or the disk, and never raises during evaluation.
"""

from flagport.engine._bucketing import BUCKETS, bucket, bucket_of_hash, hash_unit, point_of_hash
from flagport.engine._common import check_percentage, unit_text, validate_key
from flagport.engine._compile import DEFAULT_CHUNK_SIZE, SnapshotBuild, compile_snapshot
from flagport.engine._explain import explain
from flagport.engine._flag import CompiledFlag
from flagport.engine._from_builtins import (
    document_from_builtins,
    flag_from_builtins,
    split_validation_message,
)
from flagport.engine._limits import (
    MAX_CONDITION_VALUES,
    MAX_DOCUMENT_BYTES,
    MAX_REASON_LENGTH,
    MAX_TAG_LENGTH,
    PRINTABLE_PATTERN,
    check_condition_values,
    check_document_limits,
    check_flag_limits,
    check_new_condition_values,
    check_segment_limits,
    check_text,
    segments_used,
)
from flagport.engine._snapshot import CompiledSegment, CompiledSnapshot
from flagport.engine._tolerant import TolerantDecoder
from flagport.engine.models import (
    BUCKETING_VERSION,
    Condition,
    ErrorCode,
    EvaluationResult,
    Flag,
    Operator,
    Prerequisite,
    Reason,
    Rule,
    Segment,
    SnapshotDocument,
)

__all__ = [
    "BUCKETING_VERSION",
    "BUCKETS",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CONDITION_VALUES",
    "MAX_DOCUMENT_BYTES",
    "MAX_REASON_LENGTH",
    "MAX_TAG_LENGTH",
    "PRINTABLE_PATTERN",
    "CompiledFlag",
    "CompiledSegment",
    "CompiledSnapshot",
    "Condition",
    "ErrorCode",
    "EvaluationResult",
    "Flag",
    "Operator",
    "Prerequisite",
    "Reason",
    "Rule",
    "Segment",
    "SnapshotBuild",
    "SnapshotDocument",
    "TolerantDecoder",
    "bucket",
    "bucket_of_hash",
    "check_condition_values",
    "check_document_limits",
    "check_flag_limits",
    "check_new_condition_values",
    "check_percentage",
    "check_segment_limits",
    "check_text",
    "compile_snapshot",
    "document_from_builtins",
    "explain",
    "flag_from_builtins",
    "hash_unit",
    "point_of_hash",
    "segments_used",
    "split_validation_message",
    "unit_text",
    "validate_key",
]
