"""Unique-unit sketches for stores without their own (SQLite): Apache DataSketches HLL.

``lg_k = 14`` (16,384 buckets) gives a relative standard error of about 0.8 %, the same as
Redis's HyperLogLog, so both stores answer alike; ``HLL_4`` keeps a dense sketch at about
8 KiB (a sparse one, for few units, is much smaller). See docs/adr/0007-stats.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import datasketches
import mmh3

__all__ = ["LG_K", "estimate", "merge", "sketch_of", "unit_hashes"]

LG_K: Final = 14
_TYPE: Final = datasketches.tgt_hll_type.HLL_4


def unit_hashes(units: Iterable[str], into: dict[str, int]) -> None:
    """Add each unit's 64-bit MurmurHash3 to ``into``. A unit is hashed once per batch,
    however many flags it was counted for; the sketches then take integers, which cost
    DataSketches a third of what strings do."""
    for unit in units:
        if unit not in into:
            into[unit] = mmh3.hash64(unit, signed=True)[0]


def sketch_of(
    units: Iterable[str], hashes: dict[str, int] | None = None
) -> datasketches.hll_sketch:
    """A sketch of ``units`` (always fed their hashes, so every sketch of the store agrees)."""
    if hashes is None:
        hashes = {}
        unit_hashes(units, hashes)
    sketch = datasketches.hll_sketch(LG_K, _TYPE)
    update = sketch.update
    for unit in units:
        update(hashes[unit])
    return sketch


def merge(stored: bytes | None, added: datasketches.hll_sketch) -> bytes:
    """``stored`` (serialized, or None) with ``added``'s units, serialized."""
    if stored is None:
        return bytes(added.serialize_compact())
    union = datasketches.hll_union(LG_K)
    union.update(datasketches.hll_sketch.deserialize(stored))
    union.update(added)
    return bytes(union.get_result(_TYPE).serialize_compact())


def estimate(stored: Iterable[bytes]) -> int:
    """The number of distinct units in the union of the serialized sketches."""
    union = datasketches.hll_union(LG_K)
    empty = True
    for blob in stored:
        union.update(datasketches.hll_sketch.deserialize(blob))
        empty = False
    return 0 if empty else round(union.get_estimate())
