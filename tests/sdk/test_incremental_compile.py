"""Compiling only what changed (``compile_snapshot(previous=...)``, :class:`SnapshotBuild`)
gives the snapshot a full compile gives: the same flags in the same order, the same facts,
the same problems in the same order, and the same results as the reference evaluator, on
random configurations and random edits (docs/adr/0020-incremental-compile.md).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagport import InvalidDocumentError
from flagport.engine import (
    CompiledFlag,
    CompiledSnapshot,
    SnapshotBuild,
    compile_snapshot,
    document_from_builtins,
)
from tests.sdk.test_engine_properties import CONDITIONS, CONTEXTS, DERANDOMIZED, KEYS, documents
from tests.sdk.test_engine_properties import flags as flag_bodies

#: Times on either side of the schedules the random conditions use (2026-01-01).
TIMES = (None, 1.7e9, 1.8e9)


@st.composite
def edits(draw: st.DrawFn, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` after one random edit of the kinds a store sees: a flag changed, disabled,
    added or removed, a segment changed or removed, a record that cannot be read."""
    edited = copy.deepcopy(raw)
    edited.setdefault("unreadable_flags", {})
    edited.setdefault("unreadable_segments", {})
    flags: dict[str, Any] = edited["flags"]
    present = sorted(flags)
    absent = [key for key in KEYS if key not in flags and key not in edited["unreadable_flags"]]
    kinds = ["change", "toggle", "segment", "drop segment", "unreadable segment", "same"]
    if absent:
        kinds += ["add", "unreadable flag"]
    if present:
        kinds += ["remove"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("change", "toggle") and present:
        key = draw(st.sampled_from(present))
        if kind == "change":
            flags[key] = draw(flag_bodies(sorted({*present, key})))
        else:
            flags[key]["enabled"] = not flags[key].get("enabled", False)
    elif kind == "add":
        key = draw(st.sampled_from(absent))
        flags[key] = draw(flag_bodies(sorted({*present, key})))
    elif kind == "remove":
        del flags[draw(st.sampled_from(present))]
    elif kind == "segment":
        edited["segments"]["beta"] = {
            "included": draw(st.lists(st.sampled_from(["user-1", "user-2", "7"]), max_size=2)),
            "conditions": draw(st.lists(CONDITIONS, max_size=2)),
        }
    elif kind == "drop segment":
        edited["segments"].pop("beta", None)
    elif kind == "unreadable segment":
        edited["segments"].pop("beta", None)
        edited["unreadable_segments"]["beta"] = "bad JSON"
    elif kind == "unreadable flag":
        edited["unreadable_flags"][draw(st.sampled_from(absent))] = "bad JSON"
    return edited


def _compile(raw: dict[str, Any], **options: Any) -> CompiledSnapshot:
    body = {k: v for k, v in raw.items() if not k.startswith("unreadable")}
    return compile_snapshot(
        document_from_builtins(body),
        unreadable_flags=raw.get("unreadable_flags"),
        unreadable_segments=raw.get("unreadable_segments"),
        **options,
    )


def _chunked(raw: dict[str, Any], previous: CompiledSnapshot, chunk_size: int) -> CompiledSnapshot:
    body = {k: v for k, v in raw.items() if not k.startswith("unreadable")}
    build = SnapshotBuild(
        document_from_builtins(body),
        unreadable_flags=raw.get("unreadable_flags"),
        unreadable_segments=raw.get("unreadable_segments"),
        previous=previous,
        chunk_size=chunk_size,
    )
    pauses = sum(1 for _ in build.steps())
    # One flag per chunk: at least one pause per flag compiled afresh.
    assert chunk_size > 1 or pauses >= len(build.compiled)
    return build.snapshot


def _facts(flag: CompiledFlag) -> tuple[Any, ...]:
    """What compiling learnt about ``flag``, comparable between two snapshots."""

    def gates(chosen: list[Any]) -> list[tuple[str, str, str | None]]:
        return [(gate.flag.key, gate.kind, gate.variant) for gate in chosen]

    return (
        flag.key,
        flag.flag,
        None if flag.broken is None else (flag.broken.path, flag.broken.problem),
        flag.constant,
        flag.serves_everyone,
        flag.reads_clock,
        flag.follows,
        gates(flag.gates),
        gates(flag.declared_gates),
    )


def _contents(snapshot: CompiledSnapshot) -> tuple[Any, ...]:
    return (
        snapshot.version,
        list(snapshot),
        [(problem.path, problem.problem) for problem in snapshot.problems],
        sorted(snapshot.clock_keys),
        [_facts(snapshot.flag(key)) for key in snapshot],  # type: ignore[arg-type]
        sorted(snapshot.segments),
        snapshot.unreadable_segments,
    )


def _assert_same(
    incremental: CompiledSnapshot, full: CompiledSnapshot, contexts: list[dict[str, Any]]
) -> None:
    assert _contents(incremental) == _contents(full)
    for context in contexts:
        for now in TIMES:
            every = incremental.evaluate_all(context, now)
            assert list(every.items()) == list(full.evaluate_all(context, now).items())
            for key in full:
                expected = full.flag(key).evaluate_reference(context, now)  # type: ignore[union-attr]
                assert incremental.evaluate(key, context, now) == expected, key
                assert every[key] == expected, key


def _strict_outcome(raw: dict[str, Any], **options: Any) -> tuple[str, str] | None:
    try:
        _compile(raw, strict=True, **options)
    except InvalidDocumentError as problem:
        return (problem.path, problem.problem)
    return None


@DERANDOMIZED
@given(data=st.data(), contexts=st.lists(CONTEXTS, min_size=1, max_size=3))
def test_incremental_compile_equals_a_full_compile(
    data: st.DataObject, contexts: list[dict[str, Any]]
) -> None:
    raw = data.draw(documents())
    previous = _compile(raw)
    before = [previous.evaluate_all(context, 1.7e9) for context in contexts]
    # A few edits in a row, each compiled from the snapshot the previous edit gave.
    for _ in range(data.draw(st.integers(1, 3))):
        edited = data.draw(edits(raw))
        edited["version"] = previous.version + 1
        full = _compile(edited)
        incremental = _compile(edited, previous=previous)
        _assert_same(incremental, full, contexts)
        chunk_size = data.draw(st.sampled_from([1, 2, 100]))
        _assert_same(_chunked(edited, previous, chunk_size), full, contexts)
        assert _strict_outcome(edited, previous=previous) == _strict_outcome(edited)
        raw, previous = edited, incremental
    # Compiling from a snapshot never changes it: it is served until the new one is ready.
    first = _compile(data.draw(documents()))
    served = [first.evaluate_all(context, 1.7e9) for context in contexts]
    _compile(raw, previous=first)
    assert [first.evaluate_all(context, 1.7e9) for context in contexts] == served
    assert before  # evaluated before the edits: they did not raise


def _many_flags(count: int) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for index in range(count // 4):
        flags[f"team-{index}"] = {"enabled": True, "percentage": 50}
        flags[f"team-{index}.child"] = {"enabled": True}
        flags[f"team-{index}.guarded"] = {
            "enabled": True,
            "prerequisites": [{"key": f"team-{index}"}],
        }
        flags[f"team-{index}.vip"] = {
            "enabled": True,
            "percentage": 0,
            "rules": [{"conditions": [{"op": "in_segment", "values": ["vip"]}], "variant": "on"}],
        }
    return {
        "flags": flags,
        "segments": {"vip": {"included": ["user-1"]}, "other": {"included": ["user-2"]}},
        "version": 1,
    }


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # Disabling a flag compiles it and the flags gated by it (its children, the flags
        # that name it as a prerequisite), nothing else.
        (
            lambda raw: raw["flags"]["team-7"].update(enabled=False),
            {"team-7", "team-7.child", "team-7.guarded", "team-7.vip"},
        ),
        (lambda raw: raw["flags"]["team-7.child"].update(percentage=10), {"team-7.child"}),
        # A new flag between a flag and its parent becomes the parent.
        (lambda raw: raw["flags"].update({"team-3.child.x": {}}), {"team-3.child.x"}),
        (
            lambda raw: raw["flags"].update({"team-3": {"enabled": False}}),
            {"team-3", "team-3.child", "team-3.guarded", "team-3.vip"},
        ),
        # A segment change compiles the flags that use it.
        (
            lambda raw: raw["segments"]["vip"].update(included=["user-9"]),
            {f"team-{index}.vip" for index in range(500)},
        ),
        (lambda raw: raw["segments"]["other"].update(included=["user-9"]), set()),
    ],
)
def test_a_change_compiles_only_the_flags_it_touches(edit: Any, expected: set[str]) -> None:
    raw = _many_flags(2000)
    previous = _compile(raw)
    edited = copy.deepcopy(raw)
    edit(edited)
    edited["version"] = 2
    body = document_from_builtins(edited)
    build = SnapshotBuild(body, previous=previous)
    pauses = sum(1 for _ in build.steps())
    assert build.compiled == expected
    untouched = next(key for key in body.flags if key not in expected)
    assert build.snapshot.flag(untouched) is previous.flag(untouched)
    assert _contents(build.snapshot) == _contents(compile_snapshot(body))
    # Two pauses per 100 flags compiled (compiling, then folding and specialising), and
    # two or four for each light pass over all 2,000 (1,000 flags a pause, reused flags
    # counting a tenth): a full compile pauses over 40 times.
    assert pauses <= 2 * (len(expected) // 100) + 14


def test_a_full_compile_in_chunks_pauses_every_hundred_flags() -> None:
    body = document_from_builtins(_many_flags(2000))
    build = SnapshotBuild(body)
    pauses = sum(1 for _ in build.steps())
    # Compile and fold/specialise, 100 flags each (40), and the light passes, 1,000 each.
    assert 40 <= pauses <= 60, pauses
    assert _contents(build.snapshot) == _contents(compile_snapshot(body))


def test_the_snapshot_is_not_there_before_the_build_ends() -> None:
    build = SnapshotBuild(document_from_builtins(_many_flags(400)))
    steps = build.steps()
    next(steps)
    with pytest.raises(RuntimeError, match="not built yet"):
        _ = build.snapshot
    with pytest.raises(ValueError, match="chunk_size"):
        SnapshotBuild(document_from_builtins(_many_flags(4)), chunk_size=0)


def test_dismantling_a_candidate_leaves_the_snapshot_it_reused_whole() -> None:
    raw = _many_flags(400)
    served = _compile(raw)
    context = {"targetingKey": "user-1"}
    before = served.evaluate_all(context)
    edited = copy.deepcopy(raw)
    edited["flags"]["team-1"]["enabled"] = False
    candidate = _compile(edited, previous=served)
    pauses = sum(1 for _ in candidate.dismantle(chunk_size=50))
    assert pauses == 8
    assert len(candidate) == 0
    assert candidate.evaluate("team-2", context).error_code == "FLAG_NOT_FOUND"
    assert served.evaluate_all(context) == before
