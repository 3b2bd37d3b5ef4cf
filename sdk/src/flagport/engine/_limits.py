"""Size and text limits on what may be committed to a store (docs/spec.md, "Limits").

Limits are checked when something is written (the store's ``commit`` refuses a value over
them, and documents are checked before an import is sent), never when the store is read:
a flag stored under older, looser limits still loads and is served, and ``/readyz`` warns.
Only JSON that cannot be decoded, or unknown fields, make a stored flag unreadable.

Every bound is here, so the store, the admin API and the CLI agree on one rule. The bounds
keep a single flag from exhausting memory or CPU, keep every string printable in a log line
or a terminal table, and keep every value writable by every export format (JSON and YAML).

One bound spans records: a flag's condition values count those of the segments it uses
(:func:`check_condition_values`), so it is checked where the whole configuration is known
(every change the admin API validates, and every document before an import) rather than by
the store's ``commit`` of one record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine.models import (
    MAX_KEY_LENGTH,
    MAX_RULES,
    MAX_TARGETS,
    MAX_VALUES,
    Condition,
    Flag,
    Operator,
    Segment,
    SnapshotDocument,
)

__all__ = [
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_CONDITION_VALUES",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENCODED_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_OWNER_LENGTH",
    "MAX_PREREQUISITES",
    "MAX_REASON_LENGTH",
    "MAX_SALT_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "MAX_TEXT_LENGTH",
    "MAX_VALUE_DEPTH",
    "MAX_VARIANT_NAME_LENGTH",
    "PRINTABLE_PATTERN",
    "check_condition_values",
    "check_document_limits",
    "check_flag_limits",
    "check_new_condition_values",
    "check_segment_limits",
    "check_text",
    "condition_values",
    "has_control_characters",
]

MAX_DESCRIPTION_LENGTH: Final = 2_000
MAX_TAG_LENGTH: Final = 64
MAX_TAGS: Final = 50
MAX_SALT_LENGTH: Final = 200
MAX_OWNER_LENGTH: Final = 200
#: The reason of a change (audit entries), in a body or a query string.
MAX_REASON_LENGTH: Final = 1_000
MAX_VARIANT_NAME_LENGTH: Final = 100
MAX_ATTRIBUTE_LENGTH: Final = 200
#: A rule's name.
MAX_NAME_LENGTH: Final = 200
#: A targeting key, a segment member or a string condition value.
MAX_TEXT_LENGTH: Final = 1_000
MAX_PREREQUISITES: Final = 100
#: Condition values one flag's rules hold, counting those of the segments they use: every
#: one may be compared with the context on an evaluation.
MAX_CONDITION_VALUES: Final = 10_000
#: Nesting of a variant's JSON value. PyYAML's emitter recurses per level: a value nested
#: a few hundred levels deep is accepted by JSON but cannot be exported as YAML.
MAX_VALUE_DEPTH: Final = 32
#: One flag or segment as stored (its JSON encoding).
MAX_ENCODED_BYTES: Final = 1024 * 1024
#: The largest JSON or YAML document read from a file or accepted by an import, in bytes:
#: a realistic configuration of 15,000 flags fits with room to spare.
MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
#: Integers in variant values stay exact in every client (PHP's int is 64-bit).
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1

# C0 controls, DEL and C1 controls (Unicode category Cc): line breaks forge log lines and
# table rows, escapes reach the operator's terminal. No stored text needs them.
_CONTROL_CLASS: Final = r"\x00-\x1f\x7f-\x9f"
_CONTROL: Final = re.compile(f"[{_CONTROL_CLASS}]")
#: The same rule as a msgspec/JSON Schema pattern, for wire fields and query parameters.
#: msgspec applies a pattern with ``re.search``, where ``$`` also matches before a final
#: newline: ``(?!\n)`` refuses it.
PRINTABLE_PATTERN: Final = rf"^[^{_CONTROL_CLASS}]*$(?!\n)"
_encoder = msgspec.json.Encoder()


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (line breaks, tabs, escapes)."""
    return _CONTROL.search(text) is not None


def check_text(
    value: Any, path: str, max_length: int, *, what: str = "text", required: bool = False
) -> None:
    """A single-line string of at most ``max_length`` characters, encodable as UTF-8 (and
    not empty if ``required``)."""
    if type(value) is not str:
        raise InvalidDocumentError(f"{what} must be a string", path)
    if required and not value:
        raise InvalidDocumentError(f"{what} must not be empty", path)
    if len(value) > max_length:
        raise InvalidDocumentError(
            f"{what} is {len(value)} characters long; the limit is {max_length}", path
        )
    if _CONTROL.search(value) is not None:
        raise InvalidDocumentError(
            f"{what} must not contain control characters (line breaks, tabs, escapes)", path
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidDocumentError(
                f"{what} is not valid Unicode text (a lone surrogate)", path
            ) from None


def _check_texts(values: Iterable[Any], path: str, max_length: int, what: str) -> None:
    for index, value in enumerate(values):
        check_text(value, f"{path}[{index}]", max_length, what=what)


def _check_count(items: Any, limit: int, path: str, what: str) -> None:
    if len(items) > limit:
        raise InvalidDocumentError(f"at most {limit} {what}, got {len(items)}", path)


def _check_value(value: Any, path: str, depth: int = 0) -> None:
    """A variant value: JSON types only, finite numbers, 64-bit integers, bounded nesting."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise InvalidDocumentError(
                    "variant values must be valid Unicode text (a lone surrogate)", path
                ) from None
        return
    if kind is bool or value is None:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidDocumentError("integers in variant values must fit in 64 bits", path)
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidDocumentError("numbers in variant values must be finite", path)
        return
    if depth >= MAX_VALUE_DEPTH:
        raise InvalidDocumentError(
            f"variant values may be nested at most {MAX_VALUE_DEPTH} levels deep", path
        )
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise InvalidDocumentError("object keys in variant values must be strings", path)
            _check_value(item, f"{path}[{name!r}]", depth + 1)
        return
    if kind is list:
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
        return
    raise InvalidDocumentError(f"variant values must be JSON, got {kind.__name__}", path)


def _check_conditions(conditions: list[Condition], path: str) -> None:
    _check_count(conditions, MAX_RULES, path, "conditions")
    for index, condition in enumerate(conditions):
        where = f"{path}[{index}]"
        if condition.attribute is not None:
            check_text(
                condition.attribute, f"{where}.attribute", MAX_ATTRIBUTE_LENGTH, required=True
            )
        if not condition.values:
            raise InvalidDocumentError("a condition needs at least one value", f"{where}.values")
        _check_count(condition.values, MAX_VALUES, f"{where}.values", "values")
        for position, value in enumerate(condition.values):
            if type(value) is str:
                check_text(value, f"{where}.values[{position}]", MAX_TEXT_LENGTH)


def _check_encoded_size(value: Flag | Segment, path: str) -> None:
    size = len(_encoder.encode(value))
    if size > MAX_ENCODED_BYTES:
        raise InvalidDocumentError(
            f"encoded as JSON it takes {size} bytes; the limit is {MAX_ENCODED_BYTES}", path
        )


def check_flag_limits(key: str, flag: Flag) -> None:
    """Raise :class:`InvalidDocumentError` (naming the field) if ``flag`` is over a limit."""
    path = f'$.flags["{key}"]'
    # Counts first: the cheap checks bound the work of the ones that walk every item.
    _check_count(flag.rules, MAX_RULES, f"{path}.rules", "rules")
    _check_count(flag.prerequisites, MAX_PREREQUISITES, f"{path}.prerequisites", "prerequisites")
    _check_count(flag.tags, MAX_TAGS, f"{path}.tags", "tags")
    # Values before the encoded size: the encoder must never meet an int beyond 64 bits or
    # a nesting deeper than it can recurse.
    for name, value in flag.variants.items():
        _check_value(value, f'{path}.variants["{name}"]')
    _check_encoded_size(flag, path)
    check_text(flag.description, f"{path}.description", MAX_DESCRIPTION_LENGTH)
    check_text(flag.bucket_by, f"{path}.bucket_by", MAX_ATTRIBUTE_LENGTH, required=True)
    if flag.salt is not None:
        check_text(flag.salt, f"{path}.salt", MAX_SALT_LENGTH, required=True)
    if flag.owner is not None:
        check_text(flag.owner, f"{path}.owner", MAX_OWNER_LENGTH)
    _check_texts(flag.tags, f"{path}.tags", MAX_TAG_LENGTH, "a tag")
    for name in flag.variants:
        check_text(
            name, f"{path}.variants", MAX_VARIANT_NAME_LENGTH, what="a variant name", required=True
        )
    check_text(flag.on_variant, f"{path}.on_variant", MAX_VARIANT_NAME_LENGTH)
    check_text(flag.off_variant, f"{path}.off_variant", MAX_VARIANT_NAME_LENGTH)
    listed = 0
    for variant, units in flag.targets.items():
        where = f'{path}.targets["{variant}"]'
        check_text(variant, f"{path}.targets", MAX_VARIANT_NAME_LENGTH, what="a variant name")
        listed += len(units)
        if listed > MAX_TARGETS:
            raise InvalidDocumentError(f"at most {MAX_TARGETS} targeting keys per flag", where)
        _check_texts(units, where, MAX_TEXT_LENGTH, "a targeting key")
    for index, rule in enumerate(flag.rules):
        where = f"{path}.rules[{index}]"
        if rule.name is not None:
            check_text(rule.name, f"{where}.name", MAX_NAME_LENGTH)
        if rule.variant is not None:
            check_text(rule.variant, f"{where}.variant", MAX_VARIANT_NAME_LENGTH)
        _check_conditions(rule.conditions, f"{where}.conditions")
    for index, prerequisite in enumerate(flag.prerequisites):
        where = f"{path}.prerequisites[{index}]"
        check_text(prerequisite.key, f"{where}.key", MAX_KEY_LENGTH)
        if prerequisite.variant is not None:
            check_text(prerequisite.variant, f"{where}.variant", MAX_VARIANT_NAME_LENGTH)


def check_segment_limits(key: str, segment: Segment) -> None:
    """Raise :class:`InvalidDocumentError` (naming the field) if ``segment`` is over a limit."""
    path = f'$.segments["{key}"]'
    _check_count(segment.included, MAX_TARGETS, f"{path}.included", "targeting keys")
    _check_count(segment.excluded, MAX_TARGETS, f"{path}.excluded", "targeting keys")
    _check_encoded_size(segment, path)
    check_text(segment.description, f"{path}.description", MAX_DESCRIPTION_LENGTH)
    _check_texts(segment.included, f"{path}.included", MAX_TEXT_LENGTH, "a targeting key")
    _check_texts(segment.excluded, f"{path}.excluded", MAX_TEXT_LENGTH, "a targeting key")
    _check_conditions(segment.conditions, f"{path}.conditions")


def segments_used(flag: Flag) -> set[str]:
    """The keys of the segments ``flag``'s rules name (``in_segment`` values)."""
    return {
        name
        for rule in flag.rules
        for condition in rule.conditions
        if condition.op is Operator.IN_SEGMENT
        for name in condition.values
        if type(name) is str
    }


def condition_values(flag: Flag, segments: Mapping[str, Segment]) -> int:
    """How many condition values an evaluation of ``flag`` may compare with the context:
    those of its rules, and for each ``in_segment`` value those of that segment's
    conditions (a segment used twice is counted twice, as it may be evaluated twice)."""
    total = 0
    for rule in flag.rules:
        for condition in rule.conditions:
            total += len(condition.values)
            if condition.op is Operator.IN_SEGMENT:
                for name in condition.values:
                    segment = segments.get(name) if type(name) is str else None
                    if segment is not None:
                        total += sum(len(inner.values) for inner in segment.conditions)
    return total


def check_condition_values(key: str, flag: Flag, segments: Mapping[str, Segment]) -> None:
    """Raise :class:`InvalidDocumentError` if ``flag``, with ``segments`` (those of its
    configuration), holds more than :data:`MAX_CONDITION_VALUES` condition values."""
    count = condition_values(flag, segments)
    if count > MAX_CONDITION_VALUES:
        raise InvalidDocumentError(_too_many_values(key, count), f'$.flags["{key}"].rules')


def check_new_condition_values(document: SnapshotDocument, stored: SnapshotDocument) -> None:
    """:func:`check_condition_values` for a change from ``stored`` to ``document``: only a
    flag the change takes over the limit, or further over it, is refused (a flag stored
    under older limits must not block other writes, least of all one that trims it). A
    segment's change counts for every flag that uses it."""
    for key, flag in document.flags.items():
        count = condition_values(flag, document.segments)
        if count <= MAX_CONDITION_VALUES:
            continue
        previous = stored.flags.get(key)
        if previous is not None and count <= condition_values(previous, stored.segments):
            continue
        raise InvalidDocumentError(_too_many_values(key, count), f'$.flags["{key}"].rules')


def _too_many_values(key: str, count: int) -> str:
    return (
        f"flag {key!r} holds {count} condition values, counting those of the segments its "
        f"rules use; the limit is {MAX_CONDITION_VALUES}"
    )


def check_document_limits(document: SnapshotDocument) -> None:
    """Every flag and segment of ``document`` within the limits (the first problem raises)."""
    for key, segment in document.segments.items():
        check_segment_limits(key, segment)
    for key, flag in document.flags.items():
        check_flag_limits(key, flag)
        check_condition_values(key, flag, document.segments)
