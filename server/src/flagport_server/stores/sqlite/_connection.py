"""The SQLite store's connections and transactions, which every concern of the store uses.

sqlite3 calls block, so they run in worker threads (:func:`asyncio.to_thread`); each
connection is guarded by a lock because a thread pool may hand it to any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flagport_server.errors import StoreError, StoreUnavailable
from flagport_server.stores.base import Store
from flagport_server.stores.sqlite._schema import create_schema, read_meta

__all__ = ["ROWS_PER_FETCH", "SQLiteBase", "fetch_rows"]

T = TypeVar("T")

#: Rows read per ``fetchmany``: a few milliseconds of work at most.
ROWS_PER_FETCH = 500


def fetch_rows(cursor: sqlite3.Cursor) -> list[Any]:
    """Every row of ``cursor``, read ``ROWS_PER_FETCH`` at a time.

    ``fetchall`` reads all rows in one C loop. It lets go of the GIL around each step of
    the statement but takes it back at once, so the event loop, waiting for the GIL on
    the same core, never gets it. The configuration of 15,000 flags then held the loop for
    about 0.1 s (measured during an import). Between two ``fetchmany`` calls the interpreter
    hands the GIL over when the loop asks for it (docs/adr/0020-incremental-compile.md).
    """
    rows: list[Any] = []
    while batch := cursor.fetchmany(ROWS_PER_FETCH):
        rows += batch
    return rows


class SQLiteBase(Store):
    """Connections to one SQLite file: a writer for ``BEGIN IMMEDIATE`` transactions and a
    reader for consistent snapshots, made lazily and again after a failure."""

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

    def _meta(self, conn: sqlite3.Connection) -> tuple[str, int]:
        """``(store_id, snapshot version)``, refusing a file of a newer schema."""
        return read_meta(conn, f"SQLite store {self.path}")

    def _writer_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        if self._writer is None:
            conn = self._connect()
            try:
                create_schema(conn, f"SQLite store {self.path}")
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

    async def open(self) -> None:
        """Open the file (creating it and the schema if needed). Raises
        :class:`~flagport_server.errors.StoreUnavailable` naming the file when it cannot,
        :class:`~flagport_server.errors.StoreError` when a newer Flagport wrote it."""
        self._closed = False
        await self._read(self._meta)

    async def close(self) -> None:
        """Close the connections; later calls raise ``StoreUnavailable``."""
        self._closed = True

        def close_all() -> None:
            with self._writer_lock:
                self._drop("_writer")
            with self._reader_lock:
                self._drop("_reader")

        await asyncio.to_thread(close_all)
