"""The costliest flags the limits allow and the contexts that make them cost the most, for
the engine's evaluation budget (one flag at most 5 ms, a bulk at most 50 ms).

Every flag holds the most condition values a flag may (``MAX_CONDITION_VALUES``, segments
included), at most 1,000 per condition, and none of them matches, so that every value is
compared with the context. The hostile contexts fill an evaluation body (64 KiB) with
strings longer than the 1,024 characters conditions read, in the two shapes that cost the
most: one character repeated (a plain substring search cannot skip ahead) and the values'
own 4-character pieces (every lookup of a piece finds values to check).
"""

from __future__ import annotations

import random
from typing import Any

from flagport.engine import MAX_CONDITION_VALUES
from flagport.engine.models import MAX_RULES, MAX_VALUES

__all__ = ["WORST_FLAGS", "hostile_contexts", "worst_case_document"]

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-"
#: Attributes the many-attribute flag reads, one per rule.
_ATTRIBUTES = [f"text-{n}" for n in range(MAX_RULES)]


def _values(count: int, seed: int) -> list[str]:
    """``count`` distinct values of 8 to 40 characters, like domains or keywords."""
    chooser = random.Random(seed)
    values: dict[str, None] = {}
    while len(values) < count:
        length = chooser.randint(8, 40)
        values["".join(chooser.choice(_ALPHABET) for _ in range(length))] = None
    return list(values)


def _rules(conditions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"conditions": rule, "variant": "on"} for rule in conditions]


def _flag(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"enabled": True, "percentage": 0, "rules": rules}


def _by_condition(op: str, attribute: str, values: list[Any]) -> list[list[dict[str, Any]]]:
    """One rule per condition of at most ``MAX_VALUES`` values."""
    return [
        [{"attribute": attribute, "op": op, "values": values[start : start + MAX_VALUES]}]
        for start in range(0, len(values), MAX_VALUES)
    ]


CONTAINS_VALUES = _values(MAX_CONDITION_VALUES, seed=1)


def worst_case_document() -> dict[str, Any]:
    """A snapshot document of the flags named in :data:`WORST_FLAGS`."""
    per_attribute = MAX_CONDITION_VALUES // len(_ATTRIBUTES)
    versions = [f"{9 + n // 1000}.{n % 1000}.0" for n in range(MAX_CONDITION_VALUES)]
    dates = [f"{2100 + n // 60}-01-01T00:00:{n % 60:02d}Z" for n in range(MAX_CONDITION_VALUES)]
    numbers = list(range(10**6, 10**6 + MAX_CONDITION_VALUES))
    segment_values = _values(MAX_VALUES, seed=2)
    segments = {
        f"worst-{n}": {
            "conditions": [
                {
                    "attribute": "text",
                    "op": "contains",
                    "values": segment_values[n * 100 :] + segment_values[: n * 100],
                }
            ]
        }
        for n in range(3)
    }
    names = list(segments)
    flags = {
        # The attack at the limits: many contains values on one long attribute.
        "worst-contains": _flag(_rules(_by_condition("contains", "text", CONTAINS_VALUES))),
        # As many attributes as rules, each long: no piece of one serves another.
        "worst-contains-attributes": _flag(
            _rules(
                [
                    [
                        {
                            "attribute": attribute,
                            "op": "contains",
                            "values": CONTAINS_VALUES[n * per_attribute : (n + 1) * per_attribute],
                        }
                    ]
                    for n, attribute in enumerate(_ATTRIBUTES)
                ]
            )
        ),
        # Every condition of a rule but the last matches, so all 10,000 are evaluated.
        "worst-contains-conditions": _flag(
            _rules(
                [
                    [
                        {"attribute": "text", "op": "contains", "values": [value]}
                        for value in ([_HOSTILE_PIECE] * (MAX_RULES - 1) + [CONTAINS_VALUES[n]])
                    ]
                    for n in range(MAX_RULES)
                ]
            )
        ),
        # A segment use costs its values and the in_segment value itself.
        "worst-segments": _flag(
            _rules(
                [
                    [{"op": "in_segment", "values": [names[n % len(names)]]}]
                    for n in range(MAX_CONDITION_VALUES // (MAX_VALUES + 1))
                ]
            )
        ),
        "worst-starts-with": _flag(_rules(_by_condition("starts_with", "text", CONTAINS_VALUES))),
        "worst-ends-with": _flag(_rules(_by_condition("ends_with", "text", CONTAINS_VALUES))),
        "worst-semver": _flag(_rules(_by_condition("semver_gte", "version", versions))),
        "worst-dates": _flag(_rules(_by_condition("after", "date", dates))),
        "worst-numbers": _flag(_rules(_by_condition("gt", "number", numbers))),
        "worst-equality": _flag(_rules(_by_condition("in", "text", CONTAINS_VALUES))),
    }
    return {"bucketing": 1, "flags": flags, "segments": segments}


#: Every worst-case flag.
WORST_FLAGS = [
    "worst-contains",
    "worst-contains-attributes",
    "worst-contains-conditions",
    "worst-segments",
    "worst-starts-with",
    "worst-ends-with",
    "worst-semver",
    "worst-dates",
    "worst-numbers",
    "worst-equality",
]

#: In every hostile string, so that the many-conditions flag evaluates all its conditions.
_HOSTILE_PIECE = "e-e"
#: Characters of each attribute the many-attribute flag reads: with the others, an
#: evaluation body of at most 64 KiB.
_EACH = 580
_LONG = 60 * 1024


def hostile_contexts(count: int) -> list[dict[str, Any]]:
    """``count`` distinct contexts (no two share a string, so nothing one evaluation learnt
    about a string helps the next), each an evaluation body of at most 64 KiB. They cycle
    through four shapes: one character repeated or the values' pieces, in one attribute
    of 60 KiB (the attack that cost seconds) or in every attribute the many-attribute flag
    reads."""
    pieces = "~".join(
        value[at : at + 4]
        for value in CONTAINS_VALUES
        for at in (0, (len(value) - 4) // 2, len(value) - 4)
    )
    contexts = []
    for n in range(count):
        tag = f"{n:06d}"
        source = "e" * _LONG if n % 2 == 0 else pieces[n * 7 :]
        context: dict[str, Any] = {
            "targetingKey": f"user-{n}",
            "version": "0.0.1+" + tag + "b" * 1000,
            "date": f"2000-01-01T00:00:00.{n % 1_000_000:06d}Z",
            "number": "0" * 1000 + tag,
        }
        if n % 4 < 2:
            context["text"] = (tag + _HOSTILE_PIECE + source)[:_LONG]
        else:
            context["text"] = (tag + _HOSTILE_PIECE + source)[:2040]
            for attribute in _ATTRIBUTES:
                context[attribute] = (tag + attribute + source)[:_EACH]
        contexts.append(context)
    return contexts
