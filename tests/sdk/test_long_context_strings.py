"""No context may cost seconds: conditions read at most 1,024 characters of a context string,
``contains`` finds many values without scanning the string once per value, and the costliest
flag the limits allow, against the costliest context, evaluates within a bound.

The figures (the budgets: 5 ms for one flag, 50 ms for a bulk) are benchmarks/test_engine.py's;
the bound asserted here is ten times that, on this thread's CPU time and the least of a few
tries: a loaded machine only adds time, by taking the core away or by a collection, and a CI
run once took 52 ms of wall-clock time for an evaluation that costs 2.3 ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flagport.engine import (
    CompiledSnapshot,
    check_document_limits,
    compile_snapshot,
    document_from_builtins,
)
from flagport.engine._text import MAX_MATCHED_LENGTH, contains_test
from tests.sdk.test_engine_properties import DERANDOMIZED
from tests.support.worst_case import WORST_FLAGS, hostile_contexts, worst_case_document

# Few letters, so that values are often found; a non-ASCII letter and a lone surrogate.
LETTERS = st.sampled_from(["a", "b", "c", "é", "\ud800"])
# Values are seldom in the filler, so that a value is mostly found where it was put.
VALUES = st.lists(st.text(LETTERS, min_size=1, max_size=6), min_size=1, max_size=8)
FILLERS = st.sampled_from(["x", "xé", "yx\ud800"])
#: Values in no string of these tests.
UNSEEN = contains_test([f"{n:02d}" for n in range(40)])


@st.composite
def texts(draw: st.DrawFn, values: list[str]) -> str:
    """A string holding one of ``values`` at the start, inside, or across the 1,024th
    character, in short and long strings."""
    value = draw(st.sampled_from(values))
    before = draw(
        st.sampled_from([0, 1, 30, 500, MAX_MATCHED_LENGTH - len(value), MAX_MATCHED_LENGTH])
        | st.integers(MAX_MATCHED_LENGTH - 8, MAX_MATCHED_LENGTH + 2)
    )
    after = draw(st.sampled_from([0, 3, 40, 1200]))
    filler = draw(FILLERS)
    return (filler * before)[: max(before, 0)] + value + (filler * after)[:after]


@DERANDOMIZED
@given(data=st.data(), conditions=st.lists(VALUES, min_size=1, max_size=12))
def test_contains_finds_what_a_scan_of_the_first_1024_characters_finds(
    data: st.DataObject, conditions: list[list[str]]
) -> None:
    """Several conditions on each string, so that the string is both scanned and, once
    enough values were looked for, looked up by its windows."""
    compiled = [contains_test(values) for values in conditions]
    every_value = [value for values in conditions for value in values]
    for text in data.draw(st.lists(texts(every_value), min_size=1, max_size=3)):
        read = text[:MAX_MATCHED_LENGTH]
        if data.draw(st.booleans()):
            # Enough values looked for already that a long string is looked up at once.
            assert not UNSEEN(text)
        for _ in range(3):
            for values, needles in zip(conditions, compiled, strict=True):
                assert needles(text) is any(value in read for value in values), (
                    values,
                    text,
                )


def _rule_flag(attribute: str, op: str, *values: Any) -> dict[str, Any]:
    condition = {"attribute": attribute, "op": op, "values": list(values)}
    return {
        "enabled": True,
        "percentage": 0,
        "rules": [{"conditions": [condition], "variant": "on"}],
    }


def _serves_on(flag: dict[str, Any], context: dict[str, Any]) -> bool:
    snapshot = compile_snapshot(document_from_builtins({"flags": {"f": flag}}))
    return snapshot.evaluate("f", context).variant == "on"


def test_a_value_is_found_at_either_end_of_what_is_read() -> None:
    for value in ("bbbb", "bébé", "b\ud800b"):  # 4 bytes or more: found by a window
        needles = contains_test([value, "zzzzzz"])
        last = MAX_MATCHED_LENGTH - len(value)  # the value ends on the 1,024th character
        for before, found in ((0, True), (last, True), (last + 1, False)):
            text = "x" * before + value + "x" * 1200
            assert not UNSEEN(text)  # looked up by its windows from now on
            assert needles(text) is found, (value, before)


def test_an_empty_value_is_in_every_string() -> None:
    for text in ("", "x" * 10, "x" * 2000):
        assert contains_test(["nope", ""])(text)


def test_text_operators_read_at_most_1024_characters() -> None:
    long_value = "x" * (MAX_MATCHED_LENGTH + 1)
    # A value longer than what is read never matches, even when the string holds it.
    assert not _serves_on(_rule_flag("a", "starts_with", long_value), {"a": long_value + "y"})
    assert not _serves_on(_rule_flag("a", "ends_with", long_value), {"a": "y" + long_value})
    assert not _serves_on(_rule_flag("a", "contains", long_value), {"a": long_value})
    # ends_with reads the last 1,024 characters, contains the first.
    assert _serves_on(_rule_flag("a", "ends_with", "@corp.test"), {"a": "x" * 5000 + "@corp.test"})
    found_late = {"a": "x" * MAX_MATCHED_LENGTH + "staff"}
    assert not _serves_on(_rule_flag("a", "contains", "staff", "nope", "also-not"), found_late)
    # Equality compares the whole string.
    assert _serves_on(_rule_flag("a", "not_in", "x" * 1000), {"a": "x" * 2000})


def test_a_date_longer_than_1024_characters_does_not_parse() -> None:
    """Python's ISO-8601 parser takes any number of decimals: the length alone refuses it."""
    flag = _rule_flag("signup", "before", "2025-01-01")
    at_limit = "2024-12-31T00:00:00." + "0" * (MAX_MATCHED_LENGTH - 20)
    assert len(at_limit) == MAX_MATCHED_LENGTH
    assert _serves_on(flag, {"signup": at_limit})
    assert not _serves_on(flag, {"signup": at_limit + "0"})


def _worst() -> CompiledSnapshot:
    document = document_from_builtins(worst_case_document())
    check_document_limits(document)  # the configuration is one the limits allow
    return compile_snapshot(document, strict=True)


TRIES = 3


def _least_cpu_time(work: Callable[[], object]) -> float:
    """The least CPU time of this thread that ``work`` took in a few tries, in seconds."""
    spent = []
    for _ in range(TRIES):
        started = time.thread_time()
        work()
        spent.append(time.thread_time() - started)
    return min(spent)


def test_the_costliest_flags_the_limits_allow_evaluate_within_a_bound() -> None:
    snapshot = _worst()
    contexts = hostile_contexts(4)
    for context in contexts:
        assert len(json.dumps({"context": context})) <= 64 * 1024  # an evaluation body
    for context in contexts:
        for key in WORST_FLAGS:
            result = snapshot.evaluate(key, context)
            assert result.variant == "off", key  # no value matched: every one was compared
            elapsed = _least_cpu_time(partial(snapshot.evaluate, key, context))
            assert elapsed < 0.05, f"{key}: {elapsed * 1000:.1f} ms"
        elapsed = _least_cpu_time(partial(snapshot.evaluate_all, context))
        assert elapsed < 0.5, f"bulk: {elapsed * 1000:.1f} ms"
