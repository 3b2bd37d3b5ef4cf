"""Unique-unit sketches for stores without their own (SQLite): Apache DataSketches HLL.

``lg_k = 14`` (16,384 buckets) gives a relative standard error of about 0.8 %, the same as
Redis's HyperLogLog, so both stores answer alike; ``HLL_4`` keeps a dense sketch at about
8 KiB (a sparse one, for few units, is much smaller). See docs/adr/0007-stats.md.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

import mmh3

__all__ = ["LG_K", "add", "estimate", "unit_hashes"]

LG_K: Final = 14
#: Units handled in one C call (a set update, a run of hashes or of sketch updates) before
#: the GIL is handed to other threads. These functions run in worker threads, beside the
#: event loop; a C call holds the GIL throughout, and one over a whole flush (hundreds of
#: thousands of units) held every request in flight for tens of milliseconds.
GIL_CHUNK: Final = 1024
#: How long hashing pauses between two chunks (it runs before the store's write lock is
#: taken): long enough for the event loop to take the GIL, which ``time.sleep(0)`` would
#: not leave it (the thread takes the GIL straight back).
_PAUSE: Final = 0.0001


def _chunks(items: Iterable[Any], pause: float = 0.0) -> Iterable[list[Any]]:
    """``items`` in lists of :data:`GIL_CHUNK`; between two, the GIL can change hands (at
    the next switch interval, or at once with a ``pause``)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, GIL_CHUNK)):
        yield chunk
        if pause:
            time.sleep(pause)


def _datasketches() -> Any:
    # Loaded on first use: it loads numpy (half a second), which a process that imports the
    # stores for their URL rules only (``flags serve`` before it starts workers) never needs.
    import datasketches

    return datasketches


def unit_hashes(unit_lists: Iterable[Iterable[str]]) -> dict[str, int]:
    """Each distinct unit's 64-bit MurmurHash3. A unit is hashed once per batch, however many
    flags it was counted for; the sketches then take integers, which cost DataSketches a
    third of what strings do."""
    distinct: set[str] = set()
    for units in unit_lists:
        for chunk in _chunks(units, _PAUSE):
            distinct.update(chunk)
    hashes: dict[str, int] = {}
    for chunk in _chunks(distinct, _PAUSE):
        hashes.update({unit: mmh3.hash64(unit, signed=True)[0] for unit in chunk})
    return hashes


def add(stored: bytes | None, hashes: Iterable[int]) -> bytes:
    """``stored`` (serialized, or None for an empty sketch) with ``hashes`` added,
    serialized. The stored sketch is updated in place rather than merged with a sketch of
    the new units: a union costs ~0.4 ms per sketch, for every flag and variant at every
    flush."""
    datasketches = _datasketches()
    sketch = (
        datasketches.hll_sketch.deserialize(stored)
        if stored is not None
        else datasketches.hll_sketch(LG_K, datasketches.tgt_hll_type.HLL_4)
    )
    # One update per unit and flag is the stats' largest cost: loop in C, not in bytecode.
    for chunk in _chunks(hashes):
        deque(map(sketch.update, chunk), maxlen=0)
    return bytes(sketch.serialize_compact())


def estimate(stored: Iterable[bytes]) -> int:
    """The number of distinct units in the union of the serialized sketches."""
    datasketches = _datasketches()
    union = datasketches.hll_union(LG_K)
    empty = True
    for blob in stored:
        union.update(datasketches.hll_sketch.deserialize(blob))
        empty = False
    return 0 if empty else round(union.get_estimate())
