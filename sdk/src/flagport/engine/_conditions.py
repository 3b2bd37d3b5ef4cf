"""Rule conditions compiled to small matcher closures.

Each condition becomes ``match(context, now) -> bool`` once per snapshot, so evaluation does
no parsing. Semantics:

- A condition matches when the attribute matches *any* of its values; ``not_in``/``neq``
  match when it matches *none*.
- A missing attribute (absent or ``None``) never matches, not even a negative operator
  (missing data must not put a user into an audience).
- Equality compares canonical strings, so the query-string value ``"7"`` equals ``7`` and
  ``"true"`` equals ``true``.
- Numeric, semver and date operators parse string context values (query strings are strings);
  a value that does not parse does not match.
- ``$now`` is the evaluation time passed to the engine (seconds since the epoch, UTC).

How much of a context string is read (so that no context costs more than a bounded amount
of work per condition value, whatever its size):

- ``starts_with`` and ``contains`` read its first 1,024 characters (``MAX_MATCHED_LENGTH``)
  and ``ends_with`` its last 1,024: a value longer than that never matches, and a value
  found only beyond the first 1,024 characters does not match ``contains``.
- Numeric, semver and date operators do not parse a string longer than 1,024 characters
  (no number, version or date is that long): it matches none of them.
- Equality (``in``, ``not_in``, ``eq``, ``neq``) compares the whole string: a hash lookup
  costs the same whatever the number of values, and a string longer than any stored value
  (1,000 characters at most) equals none of them.
"""

from __future__ import annotations

import datetime
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from flagport._exceptions import InvalidDocumentError
from flagport.engine._text import MAX_MATCHED_LENGTH, contains_test
from flagport.engine.models import Condition, Operator

__all__ = [
    "MAX_MATCHED_LENGTH",
    "NOW_ATTRIBUTE",
    "Matcher",
    "compile_condition",
    "parse_instant",
    "parse_semver",
]

NOW_ATTRIBUTE = "$now"

Matcher = Callable[[Mapping[str, Any], float | None], bool]
SegmentLookup = Callable[[str], Matcher]


def canonical(value: Any) -> str | None:
    """The string form equality compares; ``None`` for values that never compare equal."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int_text(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else None
    return None


def int_text(value: int) -> str | None:
    """The decimal string of ``value``; ``None`` past Python's int-to-str digit limit."""
    try:
        return str(value)
    except ValueError:
        return None


def as_number(value: Any) -> float | None:
    kind = type(value)
    if kind is str and len(value) > MAX_MATCHED_LENGTH:
        return None
    if kind is int or kind is float or kind is str:
        try:
            number = float(value)
        except (ValueError, OverflowError):  # not a number; an int beyond float's range
            return None
        return number if math.isfinite(number) else None
    return None


_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


_SEMVER_CACHE: dict[str, SemverKey | None] = {}
_SEMVER_CACHE_SIZE = 4_096


def parse_semver(text: Any) -> SemverKey | None:
    """A sort key with SemVer 2.0 precedence, or ``None``. ``1.2`` means ``1.2.0``; a
    leading ``v`` is allowed; build metadata is ignored."""
    if type(text) is not str:
        return None
    # Apps send a handful of distinct versions; parsing costs ~20x a dict lookup.
    try:
        return _SEMVER_CACHE[text]
    except KeyError:
        pass
    parsed = _parse_semver(text)
    if len(_SEMVER_CACHE) >= _SEMVER_CACHE_SIZE:
        _SEMVER_CACHE.clear()  # bounded; a cleared cache only costs re-parsing
    _SEMVER_CACHE[text] = parsed
    return parsed


def _parse_semver(text: str) -> SemverKey | None:
    found = _SEMVER.match(text)
    if found is None:
        return None
    major, minor, patch, pre = found.groups()
    if max(len(major), len(minor or ""), len(patch or "")) > 100:
        return None  # int() refuses thousands of digits; no real version is that long
    if pre is None:
        # A release sorts after all of its pre-releases.
        pre_key: tuple[tuple[int, int | str], ...] = ((2, 0),)
    else:
        pre_key = tuple(
            (0, int(part)) if part.isdigit() and len(part) <= 100 else (1, part)
            for part in pre.split(".")
        )
    return (int(major), int(minor or 0), int(patch or 0), pre_key)


def parse_instant(value: Any) -> float | None:
    """Seconds since the epoch from an ISO-8601 string (naive means UTC) or a number."""
    kind = type(value)
    if kind is int or kind is float:
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if kind is not str:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _within_limit(value: Any) -> Any:
    """``value``, or ``None`` for a string too long to parse as a number, version or date."""
    return None if type(value) is str and len(value) > MAX_MATCHED_LENGTH else value


def _reader(attribute: str) -> Callable[[Mapping[str, Any], float | None], Any]:
    if attribute == NOW_ATTRIBUTE:
        # Only the caller's clock: a context attribute "$now" (sent by a client) must not
        # move a schedule.
        return lambda context, now: now
    return lambda context, now: context.get(attribute)


def compile_condition(condition: Condition, path: str, segments: SegmentLookup) -> Matcher:
    """Compile one condition; raise :class:`InvalidDocumentError` naming ``path`` if it is
    invalid (wrong value types, unknown segment, missing attribute)."""
    op = condition.op
    values = condition.values

    if op is Operator.IN_SEGMENT:
        for index, name in enumerate(values):
            if type(name) is not str:
                raise InvalidDocumentError(
                    "in_segment values must be segment keys", f"{path}.values[{index}]"
                )
        matchers = [segments(str(name)) for name in values]
        return lambda context, now: any(m(context, now) for m in matchers)

    if condition.attribute is None:
        raise InvalidDocumentError(f"operator {op.value!r} needs an attribute", f"{path}.attribute")
    read = _reader(condition.attribute)

    if op in (Operator.IN, Operator.NOT_IN, Operator.EQ, Operator.NEQ):
        accepted = set()
        for index, value in enumerate(values):
            text = canonical(value)
            if text is None:
                raise InvalidDocumentError(
                    "values must be strings, numbers or booleans", f"{path}.values[{index}]"
                )
            accepted.add(text)
        negative = op in (Operator.NOT_IN, Operator.NEQ)
        if condition.attribute == NOW_ATTRIBUTE:

            def match_now(context: Mapping[str, Any], now: float | None) -> bool:
                text = None if now is None else canonical(now)
                return text is not None and (text in accepted) is not negative

            return match_now
        return _equality(condition.attribute, frozenset(accepted), negative)

    if op in (Operator.STARTS_WITH, Operator.ENDS_WITH, Operator.CONTAINS):
        needles: list[str] = []
        for index, value in enumerate(values):
            if type(value) is not str:
                raise InvalidDocumentError(
                    f"{op.value} values must be strings", f"{path}.values[{index}]"
                )
            needles.append(value)
        # A longer value cannot be within the characters that are read.
        affixes = tuple(needle for needle in needles if len(needle) <= MAX_MATCHED_LENGTH)

        if op is Operator.STARTS_WITH:
            test: Callable[[str], bool] = lambda text: text.startswith(affixes)  # noqa: E731
        elif op is Operator.ENDS_WITH:
            test = lambda text: text.endswith(affixes)  # noqa: E731
        else:
            test = contains_test(needles)
        if condition.attribute == NOW_ATTRIBUTE:
            return lambda context, now: (t := canonical(now)) is not None and test(t)
        return _text_test(condition.attribute, op, affixes, test)

    if op in (Operator.LT, Operator.LTE, Operator.GT, Operator.GTE):
        bounds = []
        for index, value in enumerate(values):
            number = as_number(value) if type(value) in (int, float) else None
            if number is None:
                raise InvalidDocumentError(
                    f"{op.value} values must be finite numbers", f"{path}.values[{index}]"
                )
            bounds.append(number)
        compare = _ORDERING[op]
        # "Any of the bounds" is the loosest one: the max for lt/lte, the min for gt/gte.
        bound = max(bounds) if op in (Operator.LT, Operator.LTE) else min(bounds)
        attribute = condition.attribute

        if attribute == NOW_ATTRIBUTE:
            return lambda context, now: (n := as_number(now)) is not None and compare(n, bound)

        def match_number(context: Mapping[str, Any], now: float | None) -> bool:
            actual: Any = context.get(attribute)
            kind = type(actual)
            if kind is int:  # exact, even beyond float's range
                return compare(actual, bound)
            if kind is float:
                return math.isfinite(actual) and compare(actual, bound)
            number = as_number(actual)
            return number is not None and compare(number, bound)

        return match_number

    if op in _SEMVER_OPS:
        versions = []
        for index, value in enumerate(values):
            parsed = parse_semver(value)
            if parsed is None:
                raise InvalidDocumentError(
                    f"{value!r} is not a semantic version", f"{path}.values[{index}]"
                )
            versions.append(parsed)
        compare_versions = _SEMVER_OPS[op]
        if len(versions) == 1 and condition.attribute != NOW_ATTRIBUTE:
            return _semver(condition.attribute, compare_versions, versions[0])

        def match_semver(context: Mapping[str, Any], now: float | None) -> bool:
            actual = parse_semver(_within_limit(read(context, now)))
            return actual is not None and any(compare_versions(actual, v) for v in versions)

        return match_semver

    if op in (Operator.BEFORE, Operator.AFTER):
        instants = []
        for index, value in enumerate(values):
            instant = parse_instant(value) if type(value) is str else None
            if instant is None:
                raise InvalidDocumentError(
                    f"{value!r} is not an ISO-8601 date-time", f"{path}.values[{index}]"
                )
            instants.append(instant)
        before = op is Operator.BEFORE

        def match_instant(context: Mapping[str, Any], now: float | None) -> bool:
            actual = parse_instant(_within_limit(read(context, now)))
            if actual is None:
                return False
            if before:
                return any(actual < i for i in instants)
            return any(actual > i for i in instants)

        return match_instant

    raise InvalidDocumentError(f"unknown operator {op!r}", f"{path}.op")  # pragma: no cover


def _equality(attribute: str, accepted: frozenset[str], negative: bool) -> Matcher:
    """``in``/``eq`` (or ``not_in``/``neq``) on a context attribute: the hot path of rules,
    so strings skip :func:`canonical`."""
    if negative:

        def match_none(context: Mapping[str, Any], now: float | None) -> bool:
            actual = context.get(attribute)
            if type(actual) is not str:
                actual = None if actual is None else canonical(actual)
                if actual is None:
                    return False
            return actual not in accepted

        return match_none

    def match_any(context: Mapping[str, Any], now: float | None) -> bool:
        actual = context.get(attribute)
        if type(actual) is not str:
            actual = None if actual is None else canonical(actual)
            if actual is None:
                return False
        return actual in accepted

    return match_any


def _text_test(
    attribute: str, op: Operator, affixes: tuple[str, ...], test: Callable[[str], bool]
) -> Matcher:
    """``starts_with``/``ends_with``/``contains`` on a context attribute."""
    if op is Operator.STARTS_WITH:

        def match_start(context: Mapping[str, Any], now: float | None) -> bool:
            actual = context.get(attribute)
            if type(actual) is not str:
                actual = None if actual is None else canonical(actual)
                if actual is None:
                    return False
            return actual.startswith(affixes)

        return match_start
    if op is Operator.ENDS_WITH:

        def match_end(context: Mapping[str, Any], now: float | None) -> bool:
            actual = context.get(attribute)
            if type(actual) is not str:
                actual = None if actual is None else canonical(actual)
                if actual is None:
                    return False
            return actual.endswith(affixes)

        return match_end

    def match_test(context: Mapping[str, Any], now: float | None) -> bool:
        actual = context.get(attribute)
        if type(actual) is not str:
            actual = None if actual is None else canonical(actual)
            if actual is None:
                return False
        return test(actual)

    return match_test


def _semver(attribute: str, compare: Callable[[Any, Any], bool], version: SemverKey) -> Matcher:
    """A semver operator with one version on a context attribute; parsed context values
    come from the bounded cache."""
    cache = _SEMVER_CACHE

    def match_semver(context: Mapping[str, Any], now: float | None) -> bool:
        actual = context.get(attribute)
        if type(actual) is not str:
            return False
        parsed = cache.get(actual)
        if parsed is None:
            if len(actual) > MAX_MATCHED_LENGTH:
                return False
            parsed = parse_semver(actual)
            if parsed is None:
                return False
        return compare(parsed, version)

    return match_semver


_ORDERING: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.LT: operator.lt,
    Operator.LTE: operator.le,
    Operator.GT: operator.gt,
    Operator.GTE: operator.ge,
}
_SEMVER_OPS: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.SEMVER_EQ: operator.eq,
    Operator.SEMVER_LT: operator.lt,
    Operator.SEMVER_LTE: operator.le,
    Operator.SEMVER_GT: operator.gt,
    Operator.SEMVER_GTE: operator.ge,
}
