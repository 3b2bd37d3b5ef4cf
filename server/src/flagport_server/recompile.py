"""Compile a snapshot on the event loop without stalling evaluation
(docs/adr/0020-incremental-compile.md).

A worker serves every request on one thread, so a compile that held it for the whole
configuration (about 0.1 ms per flag: 2 s at 15,000 flags) would hold every evaluation as
long. :func:`compile_in_chunks` compiles only what changed since the snapshot the worker
serves, a chunk of at most ``DEFAULT_CHUNK_SIZE`` flags at a time, and lets the loop serve
requests between chunks; the caller keeps serving the old snapshot until it swaps the new
one in with one assignment. A thread would not help: compiling holds the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from flagport.engine import (
    DEFAULT_CHUNK_SIZE,
    CompiledSnapshot,
    SnapshotBuild,
    SnapshotDocument,
    compile_snapshot,
)

__all__ = [
    "check_in_chunks",
    "collector_paused",
    "compile_in_chunks",
    "discard_in_chunks",
    "release_in_chunks",
    "release_replaced",
]

#: A build that compiles at least this many flags afresh makes enough objects for a
#: collection to stall the loop (about 27 tracked objects per flag: 0.3-0.6 s to walk a
#: 15,000-flag snapshot); they are moved out of the collector's reach instead.
FREEZE_AT = 1000

#: Objects freed between two pauses by :func:`release_in_chunks` (an audit entry of an
#: import, with a flag's body before and after: ~3 µs each).
RELEASE_CHUNK = 1000

_paused = 0
_collector_was_enabled = False
_freeze_requested = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection meanwhile (nested uses count; the collector resumes
    when the last ends, if it was on). Applying a large change allocates millions of
    objects (parsing, decoding, compiling 15,000 flags): each time the collector's
    thresholds are crossed it would walk them all, on the loop or in a thread holding the
    GIL, for 0.1-0.6 s. If a large build ran meanwhile, what is alive when the last use
    ends is frozen (``gc.freeze()``, as at start-up) rather than walked by the collector's
    first pass; the rest was freed by reference counting."""
    global _paused, _collector_was_enabled, _freeze_requested
    if _paused == 0:
        _collector_was_enabled = gc.isenabled()
        gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            if _freeze_requested:
                _freeze_requested = False
                gc.freeze()
            if _collector_was_enabled:
                gc.enable()


async def compile_in_chunks(
    document: SnapshotDocument,
    *,
    previous: CompiledSnapshot | None,
    strict: bool = False,
    unreadable_flags: Mapping[str, str] | None = None,
    unreadable_segments: Mapping[str, str] | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> CompiledSnapshot:
    """``compile_snapshot(document, previous=previous, ...)``, pausing for the event loop
    between chunks of at most ``chunk_size`` flags. ``previous`` is left as it is and can
    be served meanwhile. ``chunk_size=None`` compiles the whole document at once, the way
    before (``flags serve --compile-chunk 0``, which the benchmark compares with).

    The collector is paused while the build runs (:func:`collector_paused`). When it
    resumes, its first collection would walk every object the build made: after a build
    of many flags they are frozen out of its reach instead (``gc.freeze()``, as at
    start-up, when the outermost pause ends). A compiled snapshot holds no reference
    cycle, so it is still freed, by reference counting, when it is dropped or replaced.
    What the freeze costs: cyclic garbage that the paused collector had not reclaimed yet
    stays allocated; it happens only on large changes (imports)."""
    if chunk_size is None:
        # The way before docs/adr/0020-incremental-compile.md: everything, at once.
        return compile_snapshot(
            document,
            strict=strict,
            unreadable_flags=unreadable_flags,
            unreadable_segments=unreadable_segments,
        )
    build = SnapshotBuild(
        document,
        strict=strict,
        unreadable_flags=unreadable_flags,
        unreadable_segments=unreadable_segments,
        previous=previous,
        chunk_size=chunk_size,
    )
    global _freeze_requested
    with collector_paused():
        for _ in build.steps():
            await asyncio.sleep(0)
        if len(build.compiled) >= FREEZE_AT:
            _freeze_requested = True
    return build.snapshot


async def discard_in_chunks(snapshot: CompiledSnapshot) -> None:
    """Free ``snapshot``, which nothing serves, a chunk at a time: dropping a candidate of
    15,000 flags at once holds the loop for tens of milliseconds."""
    for _ in snapshot.dismantle():
        await asyncio.sleep(0)


async def release_in_chunks(
    items: list[Any] | dict[Any, Any], chunk_size: int = RELEASE_CHUNK
) -> None:
    """Empty ``items``, ``chunk_size`` at a time with a pause for the loop between chunks:
    what an import made (15,000 audit entries, the document it was sent, the configuration
    it replaced) takes tens of milliseconds to free at once. A thread would not help:
    freeing holds the GIL throughout.

    Only a container nothing else refers to is emptied: the caller's name for it (or the
    object holding it) and this call's. One held elsewhere too is left as it is, to be
    freed by reference counting when its last holder lets go."""
    # The caller's reference, this frame's and getrefcount's own.
    if sys.getrefcount(items) > 3:
        return
    if isinstance(items, list):
        while items:
            del items[-chunk_size:]
            await asyncio.sleep(0)
        return
    while items:
        for _ in range(min(chunk_size, len(items))):
            items.popitem()
        await asyncio.sleep(0)


async def release_replaced(snapshot: CompiledSnapshot) -> None:
    """Free ``snapshot``, which a newer one replaced, a chunk at a time, if nothing refers
    to it any more (no request still evaluating from it): an import that changed every
    one of 15,000 flags would otherwise free them all at once. One still referred to is
    left as it is, freed by reference counting when its last holder lets go. Its flags the
    new snapshot reuses (an incremental compile) stay alive in the new one."""
    # The caller's reference, this frame's and getrefcount's own.
    if sys.getrefcount(snapshot) > 3:
        return
    for _ in snapshot.dismantle():
        await asyncio.sleep(0)


async def check_in_chunks(
    document: SnapshotDocument,
    *,
    previous: CompiledSnapshot | None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> None:
    """Raise what ``compile_snapshot(document, strict=True)`` raises (the first problem, an
    :class:`~flagport.InvalidDocumentError`), compiling in chunks from ``previous``."""
    checked = await compile_in_chunks(
        document, previous=previous, strict=True, chunk_size=chunk_size
    )
    await discard_in_chunks(checked)
