"""The worker's live state: the immutable compiled snapshot it serves, and the tasks that
keep it current (change notifications, a periodic version check, registry heartbeats).

Requests read ``runtime.snapshot`` (one attribute load: swapping the reference is atomic),
so evaluation never waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from flagport.engine import CompiledSnapshot, SnapshotDocument, compile_snapshot

from flagport_server.errors import StoreError
from flagport_server.settings import Settings
from flagport_server.stores.base import Store, StoreState, TokenRecord, WorkerStatus

__all__ = ["Runtime", "hash_secret"]

log = logging.getLogger("flagport.server")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _CacheFile(msgspec.Struct):
    store_id: str
    document: SnapshotDocument


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
        self.store_problem: str | None = None
        self.warnings: list[str] = []
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._applied = asyncio.Event()
        self._listeners: list[Callable[[int], None]] = []
        self.on_apply: list[Callable[[CompiledSnapshot, float], None]] = []
        #: Per-snapshot derived data (encoded bodies); entries carry the version they are for.
        self.cache: dict[str, Any] = {}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.store.open()
            await self.reload()
        except StoreError as error:
            self._mark_store_down(error)
            self._load_cache()
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
    def version(self) -> int:
        return self.snapshot.version if self.snapshot is not None else -1

    @property
    def snapshot_age(self) -> float:
        return max(0.0, time.time() - self.applied_at) if self.snapshot is not None else 0.0

    # -- applying snapshots -------------------------------------------------------------

    async def reload(self, *, at_least: int = 0) -> None:
        """Load the store's state and apply it if it is newer (or the store was replaced)."""
        async with self._reload_lock:
            if self.snapshot is not None and self.version >= at_least > 0:
                return
            state = await self.store.load()
            tokens = await self.store.tokens()
            self._mark_store_up()
            self.apply(state, tokens)

    def apply(self, state: StoreState, tokens: list[TokenRecord] | None = None) -> None:
        version = state.document.version
        if self.snapshot is not None and self.store_id is not None:
            if state.store_id != self.store_id or version < self.version:
                self._refuse_backwards(state)
                return
            if version == self.version and tokens is None:
                return
        snapshot = compile_snapshot(state.document)
        for problem in snapshot.problems:
            log.warning("snapshot %s: %s", version, problem)
        self.snapshot = snapshot
        self.store_id = state.store_id
        self.applied_at = time.time()
        if tokens is not None:
            self.tokens = {t.secret_hash: t for t in tokens}
        self.warnings = [f"flag problem: {p}" for p in snapshot.problems]
        self._write_cache(state)
        self._applied.set()
        for apply_listener in self.on_apply:
            apply_listener(snapshot, self.applied_at)
        for listener in list(self._listeners):
            listener(version)

    def _refuse_backwards(self, state: StoreState) -> None:
        reason = (
            f"the store went backwards (store id {state.store_id} at version "
            f"{state.document.version}; serving {self.store_id} at version {self.version}); "
            "keeping the last snapshot: restore the store from an export or the snapshot cache"
        )
        if self.store_problem != reason:
            log.error("%s", reason)
        self.store_problem = reason

    def _mark_store_down(self, error: Exception) -> None:
        if self.store_ok or self.store_problem is None:
            log.warning("store unavailable: %s", error)
        self.store_ok = False
        self.store_problem = f"store unavailable: {error}"

    def _mark_store_up(self) -> None:
        if not self.store_ok and self.store_problem:
            log.info("store available again")
        self.store_ok = True
        self.store_problem = None

    # -- snapshot cache -----------------------------------------------------------------

    def _write_cache(self, state: StoreState) -> None:
        path = self.settings.snapshot_cache
        if not path:
            return
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{self.pid}.tmp")
        try:
            temporary.write_bytes(msgspec.json.encode(_CacheFile(state.store_id, state.document)))
            os.replace(temporary, target)
        except OSError as error:
            log.warning("cannot write snapshot cache %s: %s", target, error)

    def _load_cache(self) -> None:
        path = self.settings.snapshot_cache
        if not path or not Path(path).exists():
            return
        try:
            cached = msgspec.json.decode(Path(path).read_bytes(), type=_CacheFile)
        except (OSError, msgspec.DecodeError) as error:
            log.error("cannot read snapshot cache %s: %s", path, error)
            return
        self.apply(StoreState(store_id=cached.store_id, document=cached.document))
        log.warning("serving version %s from the snapshot cache %s", self.version, path)

    # -- background tasks ---------------------------------------------------------------

    async def _watch_changes(self) -> None:
        while True:
            try:
                async for version in self.store.changes():
                    if version > self.version:
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
                log.debug("heartbeat failed: %s", error)
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
