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
from typing import Any

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

# The types say only what a stored flag must be to be read at all. Sizes, text and value
# bounds are checked when something is committed (``engine/_limits.py``), never when the
# store is read: a flag stored under older, looser limits still loads.
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
    values: list[ConditionValue]
    attribute: str | None = None


class Rule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """All ``conditions`` must match. Then the rule serves ``variant``, or splits the matching
    units by ``percentage`` (included units get the flag's on variant, or the rule's
    ``weights``; excluded units get the off variant), bucketed like the flag itself."""

    conditions: list[Condition]
    variant: str | None = None
    percentage: float | None = None
    weights: dict[str, int] | None = None
    name: str | None = None


class Prerequisite(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Flag ``key`` must serve ``variant`` (default: that flag's on variant)."""

    key: str
    variant: str | None = None


def _default_variants() -> dict[str, Any]:
    return {"on": True, "off": False}


class Flag(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One flag, as stored and exported. The key is the mapping key in the document."""

    description: str = ""
    #: The kill switch. A new flag is off.
    enabled: bool = False
    #: Share of units included, in [0, 100] with at most 3 decimals.
    percentage: float = 100.0
    bucket_by: str = "targetingKey"
    salt: str | None = None
    variants: dict[str, Any] = msgspec.field(default_factory=_default_variants)
    on_variant: str = "on"
    off_variant: str = "off"
    weights: dict[str, int] | None = None
    targets: dict[str, list[str]] = msgspec.field(default_factory=dict)
    rules: list[Rule] = msgspec.field(default_factory=list)
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
    conditions: list[Condition] = msgspec.field(default_factory=list)
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
