"""The snapshot document and evaluation result models (msgspec Structs).

The snapshot document is the one format for config as code, the admin export and the
in-process SDK feed: a flat mapping by full flag key, the same in JSON and YAML::

    {"bucketing": 1,
     "flags": {"ui-improvements": {"enabled": true, "percentage": 10},
               "ui-improvements.dropdown-fixes": {"enabled": true}},
     "segments": {"beta-companies": {"conditions": [...]}}}

New fields always get defaults so older documents and clients keep working.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

__all__ = [
    "BUCKETING_VERSION",
    "KEY_PATTERN",
    "MAX_KEY_LENGTH",
    "MAX_RULES",
    "MAX_TARGETS",
    "MAX_VALUES",
    "Condition",
    "ErrorCode",
    "EvaluationResult",
    "Flag",
    "Operator",
    "Prerequisite",
    "Reason",
    "Rule",
    "Segment",
    "SnapshotDocument",
]

BUCKETING_VERSION = 1
#: Dot-separated segments of ``[a-z0-9][a-z0-9_-]*``; a dot makes a hierarchy.
#: msgspec applies the pattern with ``re.search``, where ``$`` also matches before a final
#: newline, so ``(?!\n)`` refuses ``"ab\n"``. Not ``\Z``: the pattern goes into the OpenAPI
#: document, and ECMA-262 regexes (JSON Schema's dialect) reject ``\Z`` in unicode mode.
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$(?!\n)"
MAX_KEY_LENGTH = 200
#: Size bounds keep a single document from exhausting memory or CPU on compile.
MAX_VALUES = 1_000  # values in one condition
MAX_RULES = 100  # rules on one flag / conditions in one rule
MAX_TARGETS = 10_000  # targeting keys listed on one flag or segment
MAX_WEIGHT_TOTAL = 2**31 - 1  # keeps PHP's int64 arithmetic exact

Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH)]
Percentage = Annotated[float, msgspec.Meta(ge=0, le=100)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=MAX_WEIGHT_TOTAL)]
VariantName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Attribute = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ConditionValue = str | int | float | bool


class Reason(enum.StrEnum):
    """Why a value was served. Only the first four ever go on the wire (OFREP's enum)."""

    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DISABLED = "DISABLED"
    #: The evaluation failed: ``error_code`` says why and the caller's default is used.
    ERROR = "ERROR"


class ErrorCode(enum.StrEnum):
    """OpenFeature's error codes."""

    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


class Operator(enum.StrEnum):
    """Rule condition operators. A condition matches when the attribute matches *any* of
    its values; the negative operators (``not_in``, ``neq``) match when it matches none."""

    IN = "in"
    NOT_IN = "not_in"
    EQ = "eq"
    NEQ = "neq"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    CONTAINS = "contains"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    SEMVER_EQ = "semver_eq"
    SEMVER_LT = "semver_lt"
    SEMVER_LTE = "semver_lte"
    SEMVER_GT = "semver_gt"
    SEMVER_GTE = "semver_gte"
    BEFORE = "before"
    AFTER = "after"
    IN_SEGMENT = "in_segment"


class Condition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``attribute`` ``op`` any of ``values``.

    ``attribute`` names a context attribute (``targetingKey`` included); the pseudo
    attribute ``$now`` is the evaluation time passed to the engine (for ``before``/``after``
    schedules). ``in_segment`` needs no attribute: its values are segment keys.
    """

    op: Operator
    values: Annotated[list[ConditionValue], msgspec.Meta(min_length=1, max_length=MAX_VALUES)]
    attribute: Attribute | None = None


class Rule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """All ``conditions`` must match. Then the rule serves ``variant``, or splits the matching
    units by ``percentage`` (included units get the flag's on variant, or the rule's
    ``weights``; excluded units get the off variant), bucketed like the flag itself."""

    conditions: Annotated[list[Condition], msgspec.Meta(max_length=MAX_RULES)]
    variant: VariantName | None = None
    percentage: Percentage | None = None
    weights: dict[VariantName, Weight] | None = None
    name: str | None = None


class Prerequisite(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Flag ``key`` must serve ``variant`` (default: that flag's on variant)."""

    key: Key
    variant: VariantName | None = None


def _default_variants() -> dict[str, Any]:
    return {"on": True, "off": False}


class Flag(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One flag, as stored and exported. The key is the mapping key in the document."""

    description: str = ""
    #: The kill switch. A new flag is off.
    enabled: bool = False
    #: Share of units included, in [0, 100] with at most 3 decimals.
    percentage: Percentage = 100.0
    bucket_by: Attribute = "targetingKey"
    salt: str | None = None
    variants: dict[VariantName, Any] = msgspec.field(default_factory=_default_variants)
    on_variant: VariantName = "on"
    off_variant: VariantName = "off"
    weights: dict[VariantName, Weight] | None = None
    targets: dict[VariantName, list[str]] = msgspec.field(default_factory=dict)
    rules: Annotated[list[Rule], msgspec.Meta(max_length=MAX_RULES)] = msgspec.field(
        default_factory=list
    )
    prerequisites: list[Prerequisite] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    owner: str | None = None
    version: int = 0
    created_at: str | None = None
    updated_at: str | None = None


class Segment(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A named, reusable audience: ``included`` targeting keys always match, ``excluded``
    never do; otherwise all ``conditions`` must match (no conditions: no match)."""

    description: str = ""
    included: list[str] = msgspec.field(default_factory=list)
    excluded: list[str] = msgspec.field(default_factory=list)
    conditions: Annotated[list[Condition], msgspec.Meta(max_length=MAX_RULES)] = msgspec.field(
        default_factory=list
    )
    version: int = 0
    updated_at: str | None = None


class SnapshotDocument(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """The whole configuration: what the store holds, what admins export and import, and
    what in-process SDKs fetch (``GET /v1/snapshot``)."""

    bucketing: int = BUCKETING_VERSION
    flags: dict[str, Flag] = msgspec.field(default_factory=dict)
    segments: dict[str, Segment] = msgspec.field(default_factory=dict)
    #: The snapshot version; 0 in hand-written documents.
    version: int = 0


class EvaluationResult(msgspec.Struct, frozen=True, gc=False):
    """What the engine served for one flag and one context.

    On an error ``reason`` is ``ERROR``, ``error_code`` says why, ``value`` and ``variant``
    are ``None`` and every client returns the caller's default instead.
    """

    key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def is_error(self) -> bool:
        return self.error_code is not None
