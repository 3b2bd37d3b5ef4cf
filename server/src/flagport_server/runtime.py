"""The worker's runtime: what it serves (one immutable :class:`~flagport_server.served.Served`
per applied snapshot) and the tasks that keep it current (change notifications, a periodic
version check, registry heartbeats).

Requests read ``runtime.served`` (one attribute load: swapping the reference is atomic), so
evaluation never waits for the store. "State" is the store's (:class:`StoreState`); the
worker's side is the runtime and what it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import msgspec

from flagport import InvalidDocumentError
from flagport.engine import (
    CompiledSnapshot,
    Flag,
    Segment,
    SnapshotDocument,
    TolerantDecoder,
    check_condition_values,
    check_flag_limits,
    check_segment_limits,
)
from flagport_server.errors import StoreError
from flagport_server.plan_state import committed_plans, plan_keys
from flagport_server.recompile import (
    collector_paused,
    compile_in_chunks,
    release_in_chunks,
    release_replaced,
)
from flagport_server.served import Served
from flagport_server.settings import Settings
from flagport_server.stores.base import (
    AuditQuery,
    Mutation,
    Store,
    StoreState,
    TokenRecord,
    WorkerStatus,
)
from flagport_server.wire import ofrep_v1

__all__ = ["Runtime", "committed_state", "feed_document", "hash_secret"]

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


#: A cache a newer release wrote may carry fields this one does not know: they are ignored
#: (docs/adr/0011-upgrades.md), so a rollback still starts from the cached snapshot.
_CACHE_DECODER = TolerantDecoder(_CacheFile)


def committed_state(
    before: StoreState, mutations: Sequence[Mutation], document: SnapshotDocument, version: int
) -> StoreState:
    """The store's state once ``mutations`` were committed onto ``before`` as the snapshot
    ``version`` (nothing else committed between), ``document`` being the configuration they
    make: flags and segments in key order, as a store loads them, and what they repaired
    (put or deleted) no longer unreadable."""
    flags = {m.key for m in mutations if m.kind == "flag"}
    segments = {m.key for m in mutations if m.kind == "segment"}
    return StoreState(
        store_id=before.store_id,
        document=msgspec.structs.replace(
            document,
            flags=dict(sorted(document.flags.items())),
            segments=dict(sorted(document.segments.items())),
            version=version,
        ),
        unreadable_flags=_without(before.unreadable_flags, flags),
        unreadable_segments=_without(before.unreadable_segments, segments),
        plans=committed_plans(before.plans, mutations),
        unreadable_plans=_without(before.unreadable_plans, plan_keys(mutations)),
    )


def _without(unreadable: Mapping[str, str], keys: Collection[str]) -> dict[str, str]:
    return {key: why for key, why in unreadable.items() if key not in keys}


def event_stream(settings: Settings, ticket: str | None = None) -> ofrep_v1.EventStream:
    """The change stream OFREP bulk answers advertise (``public_url`` makes it absolute),
    with a stream ticket for a browser whose requests carry a token (:mod:`.tickets`)."""
    path = "/v1/stream" if ticket is None else f"/v1/stream?ticket={ticket}"
    if settings.public_url:
        return ofrep_v1.EventStream(type="sse", url=settings.public_url.rstrip("/") + path)
    return ofrep_v1.EventStream(type="sse", endpoint=ofrep_v1.EventStreamEndpoint(requestUri=path))


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


#: Audit entries deleted per store call by the retention (one short write each).
_PRUNE_BATCH: Final = 1000
#: Audit actions that replace the whole configuration on purpose (docs/spec.md section 6).
_WHOLE_STORE_ACTIONS: Final = frozenset({"import", "restore"})


class Runtime:
    """One per worker process (or per app in tests)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.pid = os.getpid()
        #: What this worker serves (``None`` until the first snapshot is applied).
        self.served: Served | None = None
        self._event_stream = event_stream(settings)
        #: The server secret as of the last reload (``None``: none could be read).
        self._ticket_key: bytes | None = None
        self._secret_warned = False
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
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        #: Set while no commit of this worker's is between the store and the runtime
        #: (:meth:`committing`).
        self._own_commits = 0
        self._commits_settled = asyncio.Event()
        self._commits_settled.set()
        self._applied = asyncio.Event()
        self._listeners: list[Callable[[int], None]] = []
        self.on_apply: list[Callable[[CompiledSnapshot, float], None]] = []
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
        else:
            # In the registry before the first request: a change committed from now on is
            # waited for on this worker too (``flags`` waits on the registry). Registered
            # only by the loop's first beat, a worker starting beside a ``flags token
            # create`` could serve a 401 to the token the command had just confirmed.
            try:
                await self.heartbeat()
            except Exception as error:
                self._mark_writes_failing(error)
        self._tasks = [
            asyncio.create_task(self._watch_changes(), name="flagport-watch"),
            asyncio.create_task(self._poll(), name="flagport-poll"),
            asyncio.create_task(self._heartbeat_loop(), name="flagport-heartbeat"),
        ]
        if self.settings.audit_retention_days is not None:
            self._tasks.append(
                asyncio.create_task(self._audit_retention(), name="flagport-audit-retention")
            )

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

    # -- what is served (read-only views of ``served``) ------------------------------------

    @property
    def snapshot(self) -> CompiledSnapshot | None:
        served = self.served
        return served.snapshot if served is not None else None

    @property
    def version(self) -> int:
        served = self.served
        return served.version if served is not None else -1

    @property
    def store_id(self) -> str | None:
        served = self.served
        return served.store_id if served is not None else None

    @property
    def applied_at(self) -> float:
        served = self.served
        return served.applied_at if served is not None else 0.0

    @property
    def tokens(self) -> Mapping[str, TokenRecord]:
        """Secret hash -> token record, as of the served snapshot."""
        served = self.served
        return served.tokens if served is not None else {}

    @property
    def warnings(self) -> tuple[str, ...]:
        served = self.served
        return served.warnings if served is not None else ()

    @property
    def unreadable_flags(self) -> Mapping[str, str]:
        served = self.served
        return served.unreadable_flags if served is not None else {}

    @property
    def unreadable_segments(self) -> Mapping[str, str]:
        served = self.served
        return served.unreadable_segments if served is not None else {}

    @property
    def snapshot_age(self) -> float:
        served = self.served
        return max(0.0, time.time() - served.applied_at) if served is not None else 0.0

    def bucket_by(self, key: str) -> str | None:
        """The attribute flag ``key`` buckets by in the served snapshot (``None``: unknown)."""
        snapshot = self.snapshot
        compiled = snapshot.flag(key) if snapshot is not None else None
        return compiled.bucket_by if compiled is not None else None

    # -- applying snapshots -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def committing(self) -> AsyncIterator[None]:
        """Around a commit this worker serves itself (:meth:`apply_commit`): meanwhile the
        change watcher does not reload the version it sees, which is most often this very
        commit, read back from the store and compiled again (a 15,000-flag import: seconds
        of CPU and a full read of the store, for nothing). It waits, then reloads only what
        the commit did not bring."""
        self._own_commits += 1
        self._commits_settled.clear()
        try:
            yield
        finally:
            self._own_commits -= 1
            if self._own_commits == 0:
                self._commits_settled.set()

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
                self._ticket_key = await self._server_secret()
                self._mark_store_up()
                if self._backwards(state) and not await self._restored(state):
                    self._refuse_backwards(state)
                    return
                await self.apply(state, tokens, adopt=True)

    async def _server_secret(self) -> bytes | None:
        """The store's server secret, read with every reload (a rotation commits a new
        snapshot version, so every worker reads the new one). A store that cannot make one
        (read-only) leaves tickets off: streams then need a token header, as before."""
        try:
            return await self.store.server_secret()
        except StoreError as error:
            if self._ticket_key is not None or not self._secret_warned:
                log.warning("no server secret (stream tickets off): %s", error)
                self._secret_warned = True
            return None

    def _backwards(self, state: StoreState) -> bool:
        served = self.served
        return served is not None and (
            state.store_id != served.store_id or state.document.version < served.version
        )

    async def _restored(self, state: StoreState) -> bool:
        """Whether a whole configuration was imported into the store (``flags import``,
        ``POST /admin/v1/snapshot``) or a backup restored into it (``flags restore``) after
        this worker applied the snapshot it serves: the deliberate restore of a store that
        went backwards or was replaced, which every instance adopts."""
        since = datetime.datetime.fromtimestamp(self.applied_at, datetime.UTC).isoformat()
        try:
            entries = await self.store.audit(AuditQuery(since=since, limit=1000))
        except StoreError:
            return False
        return any(
            e.action in _WHOLE_STORE_ACTIONS
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
        compiled: CompiledSnapshot | None = None,
    ) -> None:
        """Serve ``state``: build its :class:`Served` and swap it in. A store that went
        backwards is refused unless ``adopt``. ``compiled``: ``state`` already compiled by
        :meth:`compile` (a write validated it so), not compiled again; ``tokens``: ``None``
        keeps the served ones."""
        version = state.document.version
        served = self.served
        if served is not None:
            if self._backwards(state) and not adopt:
                self._refuse_backwards(state)
                return
            if version == served.version and tokens is None and state.store_id == served.store_id:
                return
        if self.regression is not None:
            log.warning(
                "store restored: serving store id %s at version %s", state.store_id, version
            )
            self.regression = None
        # Requests keep reading the snapshot served so far until the assignment below.
        snapshot = compiled if compiled is not None else await self.compile(state)
        for problem in snapshot.problems:
            log.warning("snapshot %s: %s", version, problem)
        # Checked off the loop: every flag of a large import is new to the check.
        over_limits = await asyncio.to_thread(self._limits.problems, state.document)
        if tokens is not None:
            token_map: Mapping[str, TokenRecord] = {t.secret_hash: t for t in tokens}
        else:
            token_map = served.tokens if served is not None else {}
        replaced = served
        self.served = served = Served(
            snapshot,
            feed=feed_document(state),
            store_id=state.store_id,
            applied_at=applied_at or time.time(),
            tokens=token_map,
            unreadable_flags=state.unreadable_flags,
            unreadable_segments=state.unreadable_segments,
            warnings=(*(f"flag problem: {p}" for p in snapshot.problems), *over_limits),
            event_stream=self._event_stream,
            ticket_key=self._ticket_key,
            ticketed_stream=partial(event_stream, self.settings),
            plans=state.plans,
        )
        self._write_cache(state)
        self._applied.set()
        for apply_listener in self.on_apply:
            apply_listener(snapshot, served.applied_at)
        for listener in list(self._listeners):
            listener(version)
        if replaced is not None and replaced.snapshot is not snapshot:
            # What it served, freed at once, would hold the loop for tens of ms after an
            # import of 15,000 flags (docs/adr/0020-incremental-compile.md).
            old = replaced.snapshot
            await release_in_chunks(replaced.answers.items)
            del replaced  # the snapshot's last holder but ``old``, unless a request has it
            await release_replaced(old)

    async def compile(self, state: StoreState) -> CompiledSnapshot:
        """``state`` compiled as :meth:`apply` serves it (what cannot be read is served as
        ``PARSE_ERROR``), in chunks that yield to the loop and reusing what the served
        snapshot compiled (docs/spec.md section 6). A write compiles its result with this to
        validate it, and hands the result to :meth:`apply_commit`: one compile per write."""
        return await compile_in_chunks(
            state.document,
            previous=self.snapshot,
            unreadable_flags=state.unreadable_flags,
            unreadable_segments=state.unreadable_segments,
            chunk_size=self.settings.compile_chunk_size,
        )

    async def apply_commit(
        self, committed: StoreState, compiled: CompiledSnapshot | None = None
    ) -> None:
        """Serve what this worker just committed, ``committed`` being the store's state right
        after its commit (:func:`committed_state`; ``compiled``: that state compiled),
        without reading the store back. A store this worker does not serve as it is (another
        store, or one it refuses) is read back instead."""
        version = committed.document.version
        if self.regression is not None or committed.store_id != self.store_id:
            await self.reload(at_least=version)
            return
        async with self._reload_lock:  # a reload under way would apply an older state after
            if self.version >= version:
                return  # a change notification got there first
            if compiled is not None and compiled.version != version:
                compiled = None
            await self.apply(committed, compiled=compiled)

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
            cached = _CACHE_DECODER.decode(Path(path).read_bytes())
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
                    if version > self.version and self.regression is None:
                        await self._commits_settled.wait()  # see committing()
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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the event is set, and stop() would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_interval):
                    await self._applied.wait()

    async def _audit_retention(self) -> None:
        """Delete the audit entries older than the retention, at start and then every
        ``audit_prune_interval`` (every worker does: a prune that finds nothing is one cheap
        query, and no worker is special)."""
        days = self.settings.audit_retention_days
        assert days is not None
        while True:
            try:
                before = time.time() - days * 86_400
                pruned = 0
                while (batch := await self.store.prune_audit(before, _PRUNE_BATCH)) > 0:
                    pruned += batch
                    if batch < _PRUNE_BATCH:
                        break
                if pruned:
                    log.info("audit retention: deleted %d entries older than %d days", pruned, days)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store is down: the next round tries again
                log.warning("audit retention: %s", error)
            await asyncio.sleep(self.settings.audit_prune_interval)

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
