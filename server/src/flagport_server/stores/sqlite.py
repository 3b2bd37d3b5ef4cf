"""The embedded default store: one SQLite file shared by every server process on a host.

Durability and concurrency come from SQLite itself:

* WAL journal, ``synchronous=FULL``: a commit is fsynced before :meth:`SQLiteStore.commit`
  returns, so an acknowledged write survives ``kill -9`` and power loss.
* Every write runs in ``BEGIN IMMEDIATE``: the writer takes the file's write lock before it
  reads the versions it guards on, so two processes can never both pass the same
  compare-and-set check. ``busy_timeout`` makes the loser wait instead of failing.
* Reads use their own connection in a deferred transaction: under WAL they see one
  consistent version and never wait for a writer.
* Other processes' commits are detected by polling ``PRAGMA data_version`` on a dedicated
  connection (it changes when *another* connection commits), which costs no I/O.

sqlite3 calls block, so they run in worker threads (:func:`asyncio.to_thread`); each
connection is guarded by a lock because a thread pool may hand it to any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from flagport.engine import Flag, Segment
from flagport_server.errors import AlreadyExists, StoreError, StoreUnavailable
from flagport_server.stores import _common, _sketch
from flagport_server.stores.base import (
    STATS_HOURS_KEPT,
    STATS_MINUTES_KEPT,
    AuditEntry,
    AuditQuery,
    CommitResult,
    FlagSeen,
    Mutation,
    StatsBatch,
    StatsView,
    Store,
    StoreState,
    TokenRecord,
    WorkerStatus,
)

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bumped when the table layout changes; a file from a newer Flagport is refused.
SCHEMA_VERSION: Final = 1

#: Registry rows of workers silent this long are pruned: pids change on every restart, so
#: crashed workers would otherwise pile up forever.
_WORKER_RETENTION_S: Final = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS flags (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    -- AUTOINCREMENT: ids are never reused, even after the newest entries are deleted,
    -- so ``before_id`` pagination stays stable.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL,
    at_ts REAL NOT NULL,
    snapshot_version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_key ON audit (key, id);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, id);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ts);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    instance TEXT NOT NULL,
    pid INTEGER NOT NULL,
    applied_version INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (instance, pid)
) WITHOUT ROWID;
-- Stats (issue 9): per flag/variant/hour evaluations and a DataSketches HLL of the units
-- (kept 7 days), per-minute evaluations (kept 48 hours), first/last seen (kept).
CREATE TABLE IF NOT EXISTS stats_hours (
    flag TEXT NOT NULL,
    variant TEXT NOT NULL,
    hour INTEGER NOT NULL,
    evaluations INTEGER NOT NULL DEFAULT 0,
    sketch BLOB,
    UNIQUE (flag, hour, variant)
);
CREATE INDEX IF NOT EXISTS stats_hours_by_hour ON stats_hours (hour);
CREATE TABLE IF NOT EXISTS stats_minutes (
    flag TEXT NOT NULL,
    minute INTEGER NOT NULL,
    variant TEXT NOT NULL,
    evaluations INTEGER NOT NULL,
    PRIMARY KEY (flag, minute, variant)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stats_minutes_by_minute ON stats_minutes (minute);
CREATE TABLE IF NOT EXISTS stats_seen (
    flag TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
-- Of stats_hours.evaluations, those in-process clients reported (issue 13, kept 7 days). A
-- table of its own: a store written before it simply has none, and older servers ignore it.
CREATE TABLE IF NOT EXISTS stats_reported (
    flag TEXT NOT NULL,
    hour INTEGER NOT NULL,
    variant TEXT NOT NULL,
    evaluations INTEGER NOT NULL,
    PRIMARY KEY (flag, hour, variant)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stats_reported_by_hour ON stats_reported (hour);
"""


class SQLiteStore(Store):
    """A :class:`~flagport_server.stores.base.Store` in one SQLite file.

    Safe for many processes (server workers) and many tasks on the same file. Connections
    are made lazily and re-made after a failure, so a store that was unreachable at
    :meth:`open` starts working once the file is reachable.

    :param path: the database file; its directory must exist and be writable (WAL keeps
        ``-wal`` and ``-shm`` files beside it). ``:memory:`` is refused: processes share.
    :param busy_timeout: seconds a writer waits for another process's write lock before
        :class:`~flagport_server.errors.StoreUnavailable`.
    :param poll_interval: seconds between two change checks in :meth:`changes`.
    """

    kind = "sqlite"

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, poll_interval: float = 0.015
    ) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise StoreError(
                f"SQLite store needs a file path, not {str(path)!r}: server processes share it"
            )
        self.path = Path(path).absolute()
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections ------------------------------------------------------------------------

    def _unavailable(self, error: BaseException) -> StoreError:
        """Our exception for a sqlite3 error, naming the file (operators see only this)."""
        text = str(error)
        if isinstance(error, sqlite3.OperationalError | OSError):
            if "unable to open" in text or isinstance(error, OSError):
                text = (
                    f"cannot open the database file ({text}); the directory "
                    f"{self.path.parent} must exist and be writable"
                )
            elif "locked" in text or "busy" in text:
                text = f"{text} (waited {self.busy_timeout:g} s for another process)"
            elif "readonly" in text:
                text = f"{text}; the file and its directory must be writable"
            return StoreUnavailable(f"SQLite store {self.path}: {text}")
        # Corruption, "file is not a database", ...: the store is there but misbehaves.
        return StoreError(f"SQLite store {self.path}: {text}")

    def _connect(self) -> sqlite3.Connection:
        """A configured connection. Raises sqlite3/OS errors (callers translate)."""
        self._create_private()
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            # Transactions are explicit (BEGIN IMMEDIATE for writes); no implicit BEGIN.
            isolation_level=None,
            # Used from pool threads, always under this store's lock for the connection.
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(
                    f"SQLite store {self.path}: cannot use WAL journaling (got {mode!r}); "
                    "put the file on a local file system"
                )
            # FULL: the WAL is fsynced at every commit, so an acknowledged write survives
            # power loss, not only a crash of the process (NORMAL would not).
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_private(self) -> None:
        """Create the file readable by its owner only (it holds the token hashes and the
        audit log); SQLite gives its -wal and -shm files the same mode. An existing file
        keeps the mode it has."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: several workers starting at once must not each create a store id.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT schema_version FROM meta WHERE id = 1").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (id, store_id, version, schema_version) VALUES (1, ?, 0, ?)",
                    (uuid.uuid4().hex, SCHEMA_VERSION),
                )
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {self.path}: schema version {row[0]} was written by a newer "
                    f"Flagport (this one knows {SCHEMA_VERSION})"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _writer_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        if self._writer is None:
            conn = self._connect()
            try:
                self._ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return self._writer

    def _reader_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        if self._reader is None:
            # The schema must exist before the first read: a fresh file has no tables.
            with self._writer_lock:
                self._writer_conn()
            self._reader = self._connect()
        return self._reader

    def _drop(self, attribute: str) -> None:
        conn: sqlite3.Connection | None = getattr(self, attribute)
        setattr(self, attribute, None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside one ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        with self._writer_lock:
            try:
                conn = self._writer_conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except (sqlite3.Error, OSError) as error:
                # A fresh connection next time: the failure may have left this one unusable.
                self._drop("_writer")
                raise self._unavailable(error) from error

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside one read transaction: every SELECT sees the same version."""
        with self._reader_lock:
            try:
                conn = self._reader_conn()
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as error:
                self._drop("_reader")
                raise self._unavailable(error) from error

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run_write, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run_read, fn)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it and the schema if needed). Raises
        :class:`~flagport_server.errors.StoreUnavailable` naming the file when it cannot."""
        self._closed = False
        await self._read(lambda conn: None)

    async def close(self) -> None:
        """Close the connections; later calls raise ``StoreUnavailable``."""
        self._closed = True

        def close_all() -> None:
            with self._writer_lock:
                self._drop("_writer")
            with self._reader_lock:
                self._drop("_reader")

        await asyncio.to_thread(close_all)

    # -- configuration ----------------------------------------------------------------------

    async def load(self) -> StoreState:
        """All flags and segments at one snapshot version, in key order."""

        def load(conn: sqlite3.Connection) -> StoreState:
            store_id, version = _meta(conn)
            return _common.read_state(
                store_id,
                version,
                conn.execute("SELECT key, body FROM flags").fetchall(),
                conn.execute("SELECT key, body FROM segments").fetchall(),
            )

        return await self._read(load)

    async def snapshot_version(self) -> tuple[str, int]:
        """``(store_id, version)`` from one row."""
        return await self._read(_meta)

    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        """Check every guard, apply every mutation, bump the version by one and append the
        audit entries, all in one transaction; nothing is applied on a
        :class:`~flagport_server.errors.VersionConflict`. Returns once the commit is on disk.
        """
        for mutation in mutations:
            _common.check_mutation(mutation)
        # Parse before the transaction: a bad timestamp must not hold the write lock.
        stamped = [
            (entry, _common.parse_timestamp(entry.at, "at"), _common.encode(entry))
            for entry in audit
        ]

        def commit(conn: sqlite3.Connection) -> CommitResult:
            # Guards are checked in order against the state the earlier mutations of the
            # batch produced, so a batch may create a flag and then update it.
            for mutation in mutations:
                table = _TABLES[mutation.kind]
                row = conn.execute(
                    f"SELECT version FROM {table} WHERE key = ?", (mutation.key,)
                ).fetchone()
                _common.check_guard(mutation, None if row is None else row[0])
                if mutation.op == "put":
                    value = mutation.value
                    assert isinstance(value, Flag | Segment)  # check_mutation made sure
                    conn.execute(
                        f"INSERT INTO {table} (key, version, body) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                        "body = excluded.body",
                        (mutation.key, value.version, _common.encode(value)),
                    )
                else:
                    conn.execute(f"DELETE FROM {table} WHERE key = ?", (mutation.key,))
            conn.execute("UPDATE meta SET version = version + 1 WHERE id = 1")
            _, version = _meta(conn)
            ids: list[int] = []
            for entry, at_ts, body in stamped:
                cursor = conn.execute(
                    "INSERT INTO audit (key, actor, at, at_ts, snapshot_version, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.key, entry.actor, entry.at, at_ts, version, body),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            return CommitResult(snapshot_version=version, audit_ids=ids)

        return await self._write(commit)

    async def changes(self) -> AsyncIterator[int]:
        """Yield the snapshot version each time it changes (own commits included), checking
        every ``poll_interval`` seconds on a dedicated connection.

        ``PRAGMA data_version`` only reads WAL shared memory, so idle polling costs no I/O;
        the meta row is read only when some other connection committed something (which
        may be a heartbeat, hence the comparison with the last version). Ends when the store
        is closed; raises ``StoreUnavailable`` when the file cannot be read.
        """
        lock = threading.Lock()
        conn: sqlite3.Connection | None = None

        def poll(last_data_version: int | None) -> tuple[int, int | None]:
            nonlocal conn
            with lock:
                try:
                    if conn is None:
                        self._run_read(lambda _: None)  # the schema exists from here on
                        conn = self._connect()
                    data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    if data_version == last_data_version:
                        return data_version, None
                    return data_version, _meta(conn)[1]
                except (sqlite3.Error, OSError) as error:
                    raise self._unavailable(error) from error

        def close() -> None:
            # Under the lock: a poll cancelled by the consumer may still be running.
            with lock:
                if conn is not None:
                    conn.close()

        try:
            data_version, version = await asyncio.to_thread(poll, None)
            while not self._closed:
                await asyncio.sleep(self.poll_interval)
                data_version, new_version = await asyncio.to_thread(poll, data_version)
                if new_version is not None and new_version != version:
                    version = new_version
                    yield version
        finally:
            close()

    # -- audit ------------------------------------------------------------------------------

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest (highest id) first, at most ``query.limit``
        (itself capped at 1000)."""
        limit = _common.audit_limit(query)
        clauses: list[str] = []
        params: list[object] = []
        if query.key is not None:
            clauses.append("key = ?")
            params.append(query.key)
        if query.actor is not None:
            clauses.append("actor = ?")
            params.append(query.actor)
        if query.since is not None:
            clauses.append("at_ts >= ?")
            params.append(_common.parse_timestamp(query.since, "since"))
        if query.before_id is not None:
            clauses.append("id < ?")
            params.append(query.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT id, snapshot_version, body FROM audit {where} ORDER BY id DESC LIMIT ?"
        params.append(limit)

        def read(conn: sqlite3.Connection) -> list[AuditEntry]:
            return [
                msgspec.structs.replace(
                    _common.decode_audit(body, str(id_)),
                    id=id_,
                    snapshot_version=version,
                )
                for id_, version, body in conn.execute(sql, params)
            ]

        return await self._read(read)

    # -- tokens -----------------------------------------------------------------------------

    async def add_token(self, token: TokenRecord) -> None:
        """Store ``token``; :class:`~flagport_server.errors.AlreadyExists` if its id, its
        secret hash or its name (ASCII case-insensitively, revoked tokens included) is
        taken."""

        def add(conn: sqlite3.Connection) -> str | None:
            taken = conn.execute(
                "SELECT 1 FROM tokens WHERE id = ? OR secret_hash = ?",
                (token.id, token.secret_hash),
            ).fetchone()
            if taken:
                return _common.token_taken(token, "id")
            named = conn.execute(
                "SELECT 1 FROM tokens WHERE lower(json_extract(body, '$.name')) = lower(?)",
                (token.name,),
            ).fetchone()
            if named:
                return _common.token_taken(token, "name")
            conn.execute(
                "INSERT INTO tokens (id, secret_hash, created_at, body) VALUES (?, ?, ?, ?)",
                (token.id, token.secret_hash, token.created_at, _common.encode(token)),
            )
            return None

        problem = await self._write(add)
        if problem is not None:
            raise AlreadyExists(problem)

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""

        def read(conn: sqlite3.Connection) -> list[TokenRecord]:
            rows = conn.execute("SELECT id, body FROM tokens ORDER BY created_at, id")
            return [_common.decode_token(body, id_) for id_, body in rows]

        return await self._read(read)

    async def revoke_token(self, token_id: str, at: str) -> TokenRecord | None:
        """Mark revoked at ``at`` and return the record; revoking twice keeps the first
        time. ``None`` if unknown."""

        def revoke(conn: sqlite3.Connection) -> TokenRecord | None:
            row = conn.execute("SELECT body FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                return None
            token = _common.decode_token(row[0], token_id)
            if token.revoked_at is None:
                token = msgspec.structs.replace(token, revoked_at=at)
                conn.execute(
                    "UPDATE tokens SET body = ? WHERE id = ?", (_common.encode(token), token_id)
                )
            return token

        return await self._write(revoke)

    # -- propagation registry ---------------------------------------------------------------

    async def heartbeat(self, status: WorkerStatus) -> None:
        """Upsert the worker's row (keyed by instance and pid)."""

        def beat(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workers (instance, pid, applied_version, heartbeat_at, started_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (instance, pid) DO UPDATE SET "
                "applied_version = excluded.applied_version, "
                "heartbeat_at = excluded.heartbeat_at, started_at = excluded.started_at",
                (
                    status.instance,
                    status.pid,
                    status.applied_version,
                    status.heartbeat_at,
                    status.started_at,
                ),
            )
            conn.execute(
                "DELETE FROM workers WHERE heartbeat_at < ?",
                (status.heartbeat_at - _WORKER_RETENTION_S,),
            )

        await self._write(beat)

    async def workers(self, max_age: float, now: float) -> list[WorkerStatus]:
        """Workers whose last heartbeat is at most ``max_age`` seconds before ``now``,
        ordered by instance and pid."""

        def read(conn: sqlite3.Connection) -> list[WorkerStatus]:
            rows = conn.execute(
                "SELECT instance, pid, applied_version, heartbeat_at, started_at FROM workers "
                "WHERE heartbeat_at >= ? ORDER BY instance, pid",
                (now - max_age,),
            )
            return [
                WorkerStatus(
                    instance=instance,
                    pid=pid,
                    applied_version=applied,
                    heartbeat_at=heartbeat_at,
                    started_at=started_at,
                )
                for instance, pid, applied, heartbeat_at, started_at in rows
            ]

        return await self._read(read)

    async def forget_worker(self, instance: str, pid: int) -> None:
        """Delete the worker's row (a no-op if there is none)."""

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE instance = ? AND pid = ?", (instance, pid))

        await self._write(forget)

    # -- stats ------------------------------------------------------------------------------

    async def record_stats(self, batch: StatsBatch, now: float) -> None:
        """Add the batch in one transaction: counts are summed, the batch's units are added
        to each hour's stored sketch (hashed before the write lock is taken)."""
        hours: dict[tuple[str, str, int], int] = {}
        for flag, variant, minute, n in batch.counts:
            slot = (flag, variant, minute - minute % 3600)
            hours[slot] = hours.get(slot, 0) + n

        def hash_units() -> list[tuple[str, str, int, list[int]]]:
            hashes = _sketch.unit_hashes(units for _, _, _, units in batch.units)
            find = hashes.__getitem__
            return [(f, v, h, list(map(find, u))) for f, v, h, u in batch.units if u]

        # Hashing happens before the write lock is taken; the sketch updates need the stored
        # sketch, so they happen under it (a few ms per thousand units and flags).
        hashed = await asyncio.to_thread(hash_units)
        oldest_hour = int(now // 3600) * 3600 - (STATS_HOURS_KEPT + 1) * 3600
        oldest_minute = int(now // 60) * 60 - STATS_MINUTES_KEPT * 60

        def record(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO stats_minutes (flag, minute, variant, evaluations) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (flag, minute, variant) DO UPDATE SET "
                "evaluations = evaluations + excluded.evaluations",
                [(f, m, v, n) for f, v, m, n in batch.counts],
            )
            conn.executemany(
                "INSERT INTO stats_hours (flag, hour, variant, evaluations) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (flag, hour, variant) DO UPDATE SET "
                "evaluations = evaluations + excluded.evaluations",
                [(f, h, v, n) for (f, v, h), n in hours.items()],
            )
            for flag, variant, hour, hashes in hashed:
                row = conn.execute(
                    "SELECT sketch FROM stats_hours WHERE flag = ? AND hour = ? AND variant = ?",
                    (flag, hour, variant),
                ).fetchone()
                merged = _sketch.add(row[0] if row else None, hashes)
                conn.execute(
                    "INSERT INTO stats_hours (flag, hour, variant, sketch) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (flag, hour, variant) DO UPDATE SET sketch = excluded.sketch",
                    (flag, hour, variant, merged),
                )
            conn.executemany(
                "INSERT INTO stats_reported (flag, hour, variant, evaluations) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (flag, hour, variant) DO UPDATE SET "
                "evaluations = evaluations + excluded.evaluations",
                [(f, h, v, n) for f, v, h, n in batch.reported],
            )
            conn.executemany(
                "INSERT INTO stats_seen (flag, first_seen, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (flag) DO UPDATE SET "
                "first_seen = min(first_seen, excluded.first_seen), "
                "last_seen = max(last_seen, excluded.last_seen)",
                batch.seen,
            )
            conn.execute("DELETE FROM stats_hours WHERE hour < ?", (oldest_hour,))
            conn.execute("DELETE FROM stats_reported WHERE hour < ?", (oldest_hour,))
            conn.execute("DELETE FROM stats_minutes WHERE minute < ?", (oldest_minute,))

        await self._write(record)

    async def stats(
        self, key: str, since: int, until: int, off_variant: str | None = None
    ) -> StatsView:
        def read(conn: sqlite3.Connection) -> StatsView:
            evaluations: dict[str, int] = {}
            blobs: dict[str, list[bytes]] = {}
            for variant, n, blob in conn.execute(
                "SELECT variant, evaluations, sketch FROM stats_hours "
                "WHERE flag = ? AND hour >= ? AND hour < ? ORDER BY hour",
                (key, since, until),
            ):
                evaluations[variant] = evaluations.get(variant, 0) + n
                if blob is not None:
                    blobs.setdefault(variant, []).append(blob)
            series: dict[int, dict[str, int]] = {}
            for minute, variant, n in conn.execute(
                "SELECT minute, variant, evaluations FROM stats_minutes "
                "WHERE flag = ? AND minute >= ? AND minute < ? ORDER BY minute",
                (key, since, until),
            ):
                series.setdefault(minute, {})[variant] = n
            reported: dict[str, int] = {}
            for variant, n in conn.execute(
                "SELECT variant, evaluations FROM stats_reported "
                "WHERE flag = ? AND hour >= ? AND hour < ?",
                (key, since, until),
            ):
                reported[variant] = reported.get(variant, 0) + n
            seen = conn.execute(
                "SELECT first_seen, last_seen FROM stats_seen WHERE flag = ?", (key,)
            ).fetchone()
            on = [b for v, group in blobs.items() if v != off_variant for b in group]
            return StatsView(
                key=key,
                since=since,
                until=until,
                evaluations=evaluations,
                unique_units={v: _sketch.estimate(blobs.get(v, [])) for v in evaluations},
                units_seen=_sketch.estimate(b for group in blobs.values() for b in group),
                units_on=_sketch.estimate(on),
                series=sorted(series.items()),
                first_seen=seen[0] if seen else None,
                last_seen=seen[1] if seen else None,
                reported=reported,
            )

        return await self._read(read)

    async def last_seen(self) -> dict[str, FlagSeen]:
        def read(conn: sqlite3.Connection) -> dict[str, FlagSeen]:
            rows = conn.execute("SELECT flag, first_seen, last_seen FROM stats_seen")
            return {flag: FlagSeen(flag, first, last) for flag, first, last in rows}

        return await self._read(read)


_TABLES: Final = {"flag": "flags", "segment": "segments"}


def _meta(conn: sqlite3.Connection) -> tuple[str, int]:
    row = conn.execute("SELECT store_id, version FROM meta WHERE id = 1").fetchone()
    if row is None:  # only if someone emptied the table by hand
        raise sqlite3.DatabaseError("the meta row is missing")
    return str(row[0]), int(row[1])
