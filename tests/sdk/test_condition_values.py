"""At most 10,000 condition values per flag, counting those of the segments its rules use:
checked on documents (imports, ``load_document``) and on each change the admin API makes,
where a change is refused only for a flag it takes over the limit."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flagport import InvalidDocumentError
from flagport.document import load_document
from flagport.engine import (
    MAX_CONDITION_VALUES,
    SnapshotDocument,
    check_document_limits,
    check_new_condition_values,
    document_from_builtins,
)
from flagport.engine._limits import condition_values


def _in(values: list[Any]) -> dict[str, Any]:
    return {"attribute": "plan", "op": "in", "values": values}


def _document(own: int, segment: int, uses: int = 1) -> SnapshotDocument:
    """Flag ``f``: rules of ``own`` values in all, then ``uses`` rules on segment ``s`` of
    ``segment`` values."""
    rules = [
        {"conditions": [_in(list(range(start, min(start + 1000, own))))], "variant": "on"}
        for start in range(0, own, 1000)
    ]
    rules += [{"conditions": [{"op": "in_segment", "values": ["s"]}], "variant": "on"}] * uses
    segment_conditions = [
        _in(list(range(start, min(start + 1000, segment)))) for start in range(0, segment, 1000)
    ]
    return document_from_builtins(
        {
            "flags": {"f": {"enabled": True, "rules": rules}, "other": {"enabled": True}},
            "segments": {"s": {"conditions": segment_conditions}},
        }
    )


def test_a_flag_counts_its_values_and_those_of_each_segment_use() -> None:
    document = _document(own=2_000, segment=3_000, uses=2)
    # 2,000 of its own, and per use the in_segment value and the segment's 3,000.
    assert condition_values(document.flags["f"], document.segments) == 2_000 + 2 * 3_001


def test_a_document_may_hold_the_limit_and_no_more() -> None:
    at_limit = _document(own=MAX_CONDITION_VALUES - 3_001, segment=3_000)
    check_document_limits(at_limit)
    over = _document(own=MAX_CONDITION_VALUES - 3_000, segment=3_000)
    with pytest.raises(InvalidDocumentError) as raised:
        check_document_limits(over)
    assert raised.value.path == '$.flags["f"].rules'
    assert "holds 10001 condition values" in raised.value.problem
    assert "the limit is 10000" in raised.value.problem
    text = msgspec.json.encode(msgspec.to_builtins(over)).decode()
    with pytest.raises(InvalidDocumentError, match="10001 condition values"):
        load_document(text, "json")  # what the CLI checks before an import
    load_document(text, "json", strict=False)  # reading stays lenient


def test_a_change_is_refused_only_for_a_flag_it_takes_over_the_limit() -> None:
    stored = _document(own=MAX_CONDITION_VALUES - 3_001, segment=3_000)
    # A segment that grows takes the flag that uses it over the limit.
    grown = _document(own=MAX_CONDITION_VALUES - 3_001, segment=3_001)
    with pytest.raises(InvalidDocumentError, match="'f' holds 10001"):
        check_new_condition_values(grown, stored)
    # A flag stored over the limit under older limits blocks no other change...
    legacy = _document(own=MAX_CONDITION_VALUES, segment=3_000)
    other = msgspec.structs.replace(
        legacy.flags["other"], description="an unrelated change", enabled=False
    )
    check_new_condition_values(
        msgspec.structs.replace(legacy, flags={**legacy.flags, "other": other}), legacy
    )
    # ...and may be trimmed, but not grown.
    check_new_condition_values(_document(own=MAX_CONDITION_VALUES - 1, segment=3_000), legacy)
    with pytest.raises(InvalidDocumentError):
        check_new_condition_values(_document(own=MAX_CONDITION_VALUES + 1, segment=3_000), legacy)
