"""Fixed evaluation cases (``tests/spec/evaluation/*.json``) for docs/spec.md section 2.

Each file holds a snapshot document and cases ``{name, key, context, now?, expected}``; the
expectations were derived from the spec by ``make_evaluation_cases.py`` (which never imports
the engine). ``evaluate`` and ``evaluate_all`` must both produce them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flagport import InvalidDocumentError
from flagport.engine import (
    CompiledSnapshot,
    EvaluationResult,
    compile_snapshot,
    document_from_builtins,
)
from tests.spec import make_evaluation_cases as generator

CASES_DIR = Path(__file__).with_name("evaluation")
FILES = sorted(CASES_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _snapshot(path: Path) -> CompiledSnapshot:
    return compile_snapshot(document_from_builtins(_load(path)["document"]))


def _params() -> list[Any]:
    params = []
    for path in FILES:
        for index, item in enumerate(_load(path)["cases"]):
            params.append(pytest.param(path, index, id=f"{path.stem}[{index}] {item['name']}"))
    return params


def _same(actual: Any, expected: Any) -> bool:
    """Equal with the same JSON types (1 is not 1.0 is not true)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _same(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(map(_same, actual, expected))
    return bool(actual == expected)


def _as_wire(result: EvaluationResult) -> dict[str, Any]:
    return {
        "value": result.value,
        "variant": result.variant,
        "reason": result.reason.value,
        "errorCode": None if result.error_code is None else result.error_code.value,
        "metadata": result.metadata,
    }


_SNAPSHOTS: dict[Path, CompiledSnapshot] = {}


@pytest.mark.parametrize(("path", "index"), _params())
def test_case(path: Path, index: int) -> None:
    snapshot = _SNAPSHOTS.get(path) or _SNAPSHOTS.setdefault(path, _snapshot(path))
    item = _load(path)["cases"][index]
    now = item.get("now")
    single = snapshot.evaluate(item["key"], item["context"], now)
    assert single.key == item["key"]
    got = _as_wire(single)
    expected = item["expected"]
    wrong = {
        field: (got[field], want) for field, want in expected.items() if not _same(got[field], want)
    }
    assert not wrong, f"{item['name']}: (got, expected) {wrong}"
    if item["key"] in snapshot:
        bulk = snapshot.evaluate_all(item["context"], now)
        assert bulk[item["key"]] == single, "evaluate_all disagrees with evaluate"
    else:
        assert item["key"] not in snapshot.evaluate_all(item["context"], now)


def test_cases_exist_for_every_topic() -> None:
    assert {p.stem for p in FILES} >= set(generator.FILES)
    assert sum(len(_load(p)["cases"]) for p in FILES) >= 150


def test_committed_cases_are_what_the_generator_writes() -> None:
    built = generator.build()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in FILES}
    assert on_disk == built, "evaluation cases are stale: run tests/spec/make_evaluation_cases.py"


def test_every_operator_is_covered() -> None:
    from flagport.engine import Operator

    used = set()
    for path in FILES:
        document = _load(path)["document"]
        for flag in document["flags"].values():
            for rule in flag.get("rules", []):
                used.update(c["op"] for c in rule["conditions"])
        for segment in document.get("segments", {}).values():
            used.update(c["op"] for c in segment.get("conditions", []))
    assert used == {op.value for op in Operator}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_documents_decode_and_only_intended_flags_are_broken(path: Path) -> None:
    snapshot = _snapshot(path)
    broken = {
        key
        for key in snapshot
        if (flag := snapshot.flag(key)) is not None and flag.broken is not None
    }
    intended = {
        item["key"]
        for item in _load(path)["cases"]
        if item["expected"].get("errorCode") == "PARSE_ERROR"
        and item["expected"].get("metadata") is None
    }
    assert broken == intended
    if broken:
        with pytest.raises(InvalidDocumentError):
            compile_snapshot(document_from_builtins(_load(path)["document"]), strict=True)
    else:
        compile_snapshot(document_from_builtins(_load(path)["document"]), strict=True)
