"""The worker's live state: the immutable compiled snapshot it serves, and the tasks that
keep it current (change notifications, a periodic version check, registry heartbeats).

Requests read ``runtime.snapshot`` (one attribute load: swapping the reference is atomic),
so evaluation never waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.engine import (
    CompiledSnapshot,
    Flag,
    Segment,
    SnapshotDocument,
    check_condition_values,
    check_flag_limits,
    check_segment_limits,
)
from flagport_server.errors import StoreError
from flagport_server.recompile import collector_paused, compile_in_chunks
from flagport_server.settings import Settings
from flagport_server.stores.base import AuditQuery, Store, StoreState, TokenRecord, WorkerStatus

__all__ = ["Runtime", "feed_document", "hash_secret"]

log = logging.getLogger("flagport.server")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _CacheFile(msgspec.Struct):
    store_id: str
    document: SnapshotDocument
    #: When the snapshot was applied (``time.time()``); 0 in caches from older versions.
    applied_at: float = 0.0
    unreadable_flags: dict[str, str] = {}
    unreadable_segments: dict[str, str] = {}


def feed_document(state: StoreState) -> SnapshotDocument:
    """The document in-process SDKs get (``GET /v1/snapshot``) and exports carry: the
    readable configuration less the children of an unreadable flag. An SDK that does not
    know the unreadable parent would serve its children ungated; without them it serves
    the caller's default, as the server's ``PARSE_ERROR`` makes every client do."""
    broken = tuple(f"{key}." for key in state.unreadable_flags)
    if not broken:
        return state.document
    flags = {k: f for k, f in state.document.flags.items() if not k.startswith(broken)}
    return msgspec.structs.replace(state.document, flags=flags)


class _LimitWarnings:
    """Which stored flags and segments are over a limit (they were committed under older,
    looser limits): ``/readyz`` names them. Checked once per key and version, so applying a
    snapshot re-checks only what changed."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, int], str | None] = {}
        self._segments: tuple[tuple[str, int], ...] = ()

    def problems(self, document: SnapshotDocument) -> list[str]:
        segments = tuple((key, segment.version) for key, segment in document.segments.items())
        if segments != self._segments:
            # A flag's condition values count those of the segments it uses.
            self._seen = {}
            self._segments = segments
        seen: dict[tuple[str, str, int], str | None] = {}
        items: list[tuple[str, str, Flag | Segment]] = [
            ("flag", key, flag) for key, flag in document.flags.items()
        ]
        items += [("segment", key, segment) for key, segment in document.segments.items()]
        for kind, key, value in items:
            slot = (kind, key, value.version)
            if slot in self._seen:
                seen[slot] = self._seen[slot]
                continue
            try:
                if isinstance(value, Flag):
                    check_flag_limits(key, value)
                    check_condition_values(key, value, document.segments)
                else:
                    check_segment_limits(key, value)
            except InvalidDocumentError as error:
                seen[slot] = f"stored {kind} {key!r} is over a limit: {error}"
            else:
                seen[slot] = None
        self._seen = seen
        return [problem for problem in seen.values() if problem]


class Runtime:
    """One per worker process (or per app in tests)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.pid = os.getpid()
        self.snapshot: CompiledSnapshot | None = None
        self.store_id: str | None = None
        self.applied_at = 0.0  # time.time() when the snapshot was applied
        self.tokens: dict[str, TokenRecord] = {}  # secret hash -> record
        self.store_ok = False
        #: Why the store cannot be reached, if it cannot.
        self.store_down: str | None = None
        #: Why the store's state is refused (it went backwards: wiped, flushed, restored from
        #: an old backup), while this worker keeps serving its last snapshot.
        self.regression: str | None = None
        #: Why the store refuses this worker's writes (its heartbeats fail) while it can still
        #: be read: a read-only file, a full disk. ``flags enable/disable`` cannot be
        #: confirmed meanwhile.
        self.writes_failing: str | None = None
        self.warnings: list[str] = []
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._applied = asyncio.Event()
        self._listeners: list[Callable[[int], None]] = []
        self.on_apply: list[Callable[[CompiledSnapshot, float], None]] = []
        #: Per-snapshot derived data (encoded bodies); entries carry the version they are for.
        self.cache: dict[str, Any] = {}
        #: What the SDK feed and exports carry (see :func:`feed_document`).
        self.feed: SnapshotDocument | None = None
        #: Stored flags and segments that cannot be read (key -> why), from the last apply.
        self.unreadable_flags: dict[str, str] = {}
        self.unreadable_segments: dict[str, str] = {}
        self._limits = _LimitWarnings()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        # The cache first: if the store turns out to have gone backwards (a Redis restarted
        # empty), the cached snapshot is kept instead of the empty store's.
        cached = await self._load_cache()
        try:
            await self.store.open()
            await self.reload()
        except StoreError as error:
            self._mark_store_down(error)
            if cached:
                log.warning(
                    "serving version %s from the snapshot cache %s",
                    self.version,
                    self.settings.snapshot_cache,
                )
        self._tasks = [
            asyncio.create_task(self._watch_changes(), name="flagport-watch"),
            asyncio.create_task(self._poll(), name="flagport-poll"),
            asyncio.create_task(self._heartbeat_loop(), name="flagport-heartbeat"),
        ]

    async def stop(self) -> None:
        for listener in list(self._listeners):
            listener(-1)  # ends open change streams
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.store.forget_worker(self.settings.instance_id, self.pid)
        with contextlib.suppress(Exception):
            await self.store.close()

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(version)`` after every applied snapshot; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def store_problem(self) -> str | None:
        """What is wrong with the store, for ``/readyz`` (``None``: nothing)."""
        # A store that cannot be reached cannot be written either: say it once.
        writes = self.writes_failing if self.store_down is None else None
        problems = [p for p in (self.store_down, self.regression, writes) if p]
        return "; ".join(problems) if problems else None

    @property
    def version(self) -> int:
        return self.snapshot.version if self.snapshot is not None else -1

    @property
    def snapshot_age(self) -> float:
        return max(0.0, time.time() - self.applied_at) if self.snapshot is not None else 0.0

    # -- applying snapshots -------------------------------------------------------------

    async def reload(self, *, at_least: int = 0) -> None:
        """Load the store's state and apply it if it is newer (or the store was replaced)."""
        async with self._reload_lock:
            if (
                self.snapshot is not None
                and self.regression is None
                and self.version >= at_least > 0
            ):
                return
            # Loading and compiling a large configuration allocates millions of objects.
            with collector_paused():
                state = await self.store.load()
                tokens = await self.store.tokens()
                self._mark_store_up()
                if self._backwards(state) and not await self._restored(state):
                    self._refuse_backwards(state)
                    return
                await self.apply(state, tokens, adopt=True)

    def _backwards(self, state: StoreState) -> bool:
        return (
            self.snapshot is not None
            and self.store_id is not None
            and (state.store_id != self.store_id or state.document.version < self.version)
        )

    async def _restored(self, state: StoreState) -> bool:
        """Whether a whole configuration was imported into the store (``flags import``,
        ``POST /admin/v1/snapshot``) after this worker applied the snapshot it serves: the
        deliberate restore of a store that went backwards, which every instance adopts."""
        since = datetime.datetime.fromtimestamp(self.applied_at, datetime.UTC).isoformat()
        try:
            entries = await self.store.audit(AuditQuery(since=since, limit=1000))
        except StoreError:
            return False
        return any(
            e.action == "import"
            and e.actor != "seed"
            and e.snapshot_version <= state.document.version
            for e in entries
        )

    async def apply(
        self,
        state: StoreState,
        tokens: list[TokenRecord] | None = None,
        *,
        adopt: bool = False,
        applied_at: float | None = None,
    ) -> None:
        """Serve ``state``. A store that went backwards is refused unless ``adopt``."""
        version = state.document.version
        if self.snapshot is not None and self.store_id is not None:
            if self._backwards(state) and not adopt:
                self._refuse_backwards(state)
                return
            if version == self.version and tokens is None and state.store_id == self.store_id:
                return
        if self.regression is not None:
            log.warning(
                "store restored: serving store id %s at version %s", state.store_id, version
            )
            self.regression = None
        # Requests keep reading the snapshot served so far until the assignment below.
        snapshot = await compile_in_chunks(
            state.document,
            previous=self.snapshot,
            unreadable_flags=state.unreadable_flags,
            unreadable_segments=state.unreadable_segments,
            chunk_size=self.settings.compile_chunk_size,
        )
        for problem in snapshot.problems:
            log.warning("snapshot %s: %s", version, problem)
        # Checked off the loop: every flag of a large import is new to the check.
        over_limits = await asyncio.to_thread(self._limits.problems, state.document)
        self.snapshot = snapshot
        self.feed = feed_document(state)
        self.unreadable_flags = dict(state.unreadable_flags)
        self.unreadable_segments = dict(state.unreadable_segments)
        self.store_id = state.store_id
        self.applied_at = applied_at or time.time()
        if tokens is not None:
            self.tokens = {t.secret_hash: t for t in tokens}
        self.warnings = [f"flag problem: {p}" for p in snapshot.problems] + over_limits
        self._write_cache(state)
        self._applied.set()
        for apply_listener in self.on_apply:
            apply_listener(snapshot, self.applied_at)
        for listener in list(self._listeners):
            listener(version)

    def _refuse_backwards(self, state: StoreState) -> None:
        what = (
            "was replaced or wiped"
            if state.store_id != self.store_id
            else "lost acknowledged changes"
        )
        reason = (
            f"the store went backwards: it {what} (store id {state.store_id} at version "
            f"{state.document.version}; this worker serves store id {self.store_id} at "
            f"version {self.version}); keeping the last snapshot until the store is restored "
            "with flags import (POST /admin/v1/snapshot) from an export or a snapshot cache"
        )
        if self.regression != reason:
            log.error("STORE WENT BACKWARDS: %s", reason)
        self.regression = reason

    def _mark_store_down(self, error: Exception) -> None:
        if self.store_ok or self.store_down is None:
            log.warning("store unavailable: %s", error)
        self.store_ok = False
        self.store_down = f"store unavailable: {error}"

    def _mark_store_up(self) -> None:
        if not self.store_ok and self.store_down:
            log.info("store available again")
        self.store_ok = True
        self.store_down = None

    def _mark_writes_failing(self, error: Exception) -> None:
        problem = f"the store refuses writes (this worker's heartbeat failed): {error}"
        if problem != self.writes_failing:
            log.warning("%s", problem)
        self.writes_failing = problem

    def _mark_writes_ok(self) -> None:
        if self.writes_failing is not None and self.snapshot is not None:
            log.info("store writes work again")
            self.writes_failing = None

    # -- snapshot cache -----------------------------------------------------------------

    def _write_cache(self, state: StoreState) -> None:
        path = self.settings.snapshot_cache
        if not path:
            return
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{self.pid}.tmp")
        try:
            cache = _CacheFile(
                state.store_id,
                state.document,
                self.applied_at,
                state.unreadable_flags,
                state.unreadable_segments,
            )
            # Owner-only like the store it mirrors; a leftover temporary file (a crash) may
            # have another mode, so it is made anew.
            temporary.unlink(missing_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(msgspec.json.encode(cache))
            os.replace(temporary, target)
        except OSError as error:
            log.warning("cannot write snapshot cache %s: %s", target, error)

    async def _load_cache(self) -> bool:
        path = self.settings.snapshot_cache
        if not path or not Path(path).exists():
            return False
        try:
            cached = msgspec.json.decode(Path(path).read_bytes(), type=_CacheFile)
        except (OSError, msgspec.DecodeError) as error:
            log.error("cannot read snapshot cache %s: %s", path, error)
            return False
        state = StoreState(
            store_id=cached.store_id,
            document=cached.document,
            unreadable_flags=cached.unreadable_flags,
            unreadable_segments=cached.unreadable_segments,
        )
        await self.apply(state, applied_at=cached.applied_at or None)
        return True

    # -- background tasks ---------------------------------------------------------------

    async def _watch_changes(self) -> None:
        while True:
            try:
                async for version in self.store.changes():
                    if version > self.version or self.regression is not None:
                        await self.reload(at_least=version)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the poll loop reports; retry the subscription
                log.debug("change watch interrupted: %s", error)
            await asyncio.sleep(self.settings.poll_interval)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                store_id, version = await self.store.snapshot_version()
                if self.snapshot is None or store_id != self.store_id or version != self.version:
                    await self.reload()
                elif not self.store_ok:
                    self._mark_store_up()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._mark_store_down(error)

    async def _heartbeat_loop(self) -> None:
        # Beat at once when a new version is applied (``flags disable`` waits on it), and
        # every ``heartbeat_interval`` otherwise to show liveness.
        while True:
            self._applied.clear()
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._mark_writes_failing(error)
            else:
                self._mark_writes_ok()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied.wait(), self.settings.heartbeat_interval)

    async def heartbeat(self) -> None:
        if self.snapshot is None:
            return
        await self.store.heartbeat(
            WorkerStatus(
                instance=self.settings.instance_id,
                pid=self.pid,
                applied_version=self.version,
                heartbeat_at=time.time(),
                started_at=self.started_at,
            )
        )
