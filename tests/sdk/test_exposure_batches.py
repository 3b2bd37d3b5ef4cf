"""An in-process client's report is split within the server's bounds of one exposure batch
(flagport.exposures, the one home of those bounds): items, units, evaluations and encoded
bytes, losing or adding nothing."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from flagport.exposures import (
    MAX_EXPOSURE_BODY,
    MAX_EXPOSURE_COUNT,
    MAX_EXPOSURE_ITEMS,
    MAX_EXPOSURE_UNITS,
    ExposureBatch,
    ExposureItem,
    encode_batch,
    exposure_batch_problem,
    exposure_batches,
    exposure_item_problem,
    exposure_items,
)
from flagport.tally import MAX_UNIT_LENGTH

#: Units as wide as a counted unit may be, some encoding to 6 bytes a character.
UNIT = st.one_of(
    st.text(alphabet='\x01"\\', min_size=1, max_size=MAX_UNIT_LENGTH),
    st.text(min_size=1, max_size=MAX_UNIT_LENGTH),
    st.integers(min_value=0, max_value=2**63),
)
REPORT = st.tuples(
    st.sampled_from(["a", "checkout.new-flow", "x" * 200]),
    st.sampled_from(["on", "off", "v" * 100]),
    st.integers(min_value=0, max_value=3 * MAX_EXPOSURE_COUNT),
    st.lists(UNIT, max_size=2500),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(REPORT, min_size=1, max_size=6))
def test_batches_stay_within_every_bound_and_keep_every_evaluation_and_unit(
    reports: list[tuple[str, str, int, list[str | int]]],
) -> None:
    items = []
    for key, variant, count, units in reports:
        parts = exposure_items(key, variant, count, units)
        assert sum(item.count for item in parts) == count
        assert [unit for item in parts for unit in item.units] == units
        assert all(exposure_item_problem(item) is None for item in parts)
        items += parts
    batches = exposure_batches(items)
    assert [item for batch in batches for item in batch] == items
    for batch in batches:
        body = encode_batch(batch)
        assert len(body) <= MAX_EXPOSURE_BODY
        decoded = msgspec.json.decode(body, type=ExposureBatch)
        assert exposure_batch_problem(decoded) is None


def test_a_report_too_wide_for_one_batch_is_split_by_bytes() -> None:
    """1,000 units of 256 control characters: within the unit bound of one item, but about
    1.5 MB once encoded."""
    units: list[str | int] = [f"{i:04d}" + "\x01" * 252 for i in range(MAX_EXPOSURE_UNITS)]
    whole = ExposureItem(key="a", variant="on", count=1000, units=units)
    assert len(encode_batch([whole])) > MAX_EXPOSURE_BODY  # what was sent before: 413
    items = exposure_items("a", "on", 1000, units)
    assert len(items) == 2
    batches = exposure_batches(items)
    assert len(batches) == 2
    assert all(len(encode_batch(batch)) <= MAX_EXPOSURE_BODY for batch in batches)


def test_many_small_items_are_split_by_count() -> None:
    items = [item for n in range(2500) for item in exposure_items(f"f{n}", "on", 1, [])]
    batches = exposure_batches(items)
    assert [len(batch) for batch in batches] == [MAX_EXPOSURE_ITEMS, MAX_EXPOSURE_ITEMS, 500]
