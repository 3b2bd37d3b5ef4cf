"""The evaluators compare a unit's hash with bounds computed once per flag
(``first_hash_at``) instead of computing its bucket or weight point: the same decision as
bucketing spec v1's expression (``point_of_hash``), for every hash and bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flagport.engine import BUCKETS, bucket_of_hash, point_of_hash
from flagport.engine._bucketing import first_hash_at

HASHES = st.integers(min_value=0, max_value=2**32 - 1)


@given(HASHES, st.integers(min_value=0, max_value=BUCKETS))
def test_a_bucket_bound_as_a_hash_bound(hashed: int, bound: int) -> None:
    assert (bucket_of_hash(hashed) < bound) is (hashed < first_hash_at(bound))


@given(HASHES, st.integers(min_value=1, max_value=10**9), st.data())
def test_a_weight_bound_as_a_hash_bound(hashed: int, total: int, data: st.DataObject) -> None:
    limit = data.draw(st.integers(min_value=0, max_value=total))
    assert (point_of_hash(hashed, total) < limit) is (hashed < first_hash_at(limit, total))


def test_the_edges() -> None:
    assert first_hash_at(0) == 0
    assert first_hash_at(BUCKETS) == 2**32  # 100 %: every hash is below it
    assert bucket_of_hash(2**32 - 1) == BUCKETS - 1
    assert bucket_of_hash(first_hash_at(1)) == 1
    assert bucket_of_hash(first_hash_at(1) - 1) == 0
