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
#: the GIL can change hands. These functions run in worker threads, beside the event loop;
#: a C call holds the GIL throughout, and one over a whole flush (hundreds of thousands of
#: units) held every request in flight for tens of milliseconds.
GIL_CHUNK: Final = 4096
#: Hashing pauses after this many units (~1-2 ms of work on a quiet core), for long enough
#: that the event loop takes the GIL (``time.sleep(0)`` lets the thread take it straight
#: back). A pause costs a context switch, so not one per chunk. Hashing runs before the
#: store's write lock is taken; the sketch updates, under it, do not pause.
PAUSE_EVERY: Final = 16 * GIL_CHUNK
_PAUSE: Final = 0.0001


def _chunks(items: Iterable[Any]) -> Iterable[list[Any]]:
    """``items`` in lists of at most :data:`GIL_CHUNK`."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, GIL_CHUNK)):
        yield chunk


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
    done = 0
    for units in unit_lists:
        for chunk in _chunks(units):
            distinct.update(chunk)
            done += len(chunk)
            if done >= PAUSE_EVERY:
                time.sleep(_PAUSE)
                done = 0
    hashes: dict[str, int] = {}
    for chunk in _chunks(distinct):
        hashes.update({unit: mmh3.hash64(unit, signed=True)[0] for unit in chunk})
        done += 4 * len(chunk)  # a hash costs about four set insertions
        if done >= PAUSE_EVERY:
            time.sleep(_PAUSE)
            done = 0
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
