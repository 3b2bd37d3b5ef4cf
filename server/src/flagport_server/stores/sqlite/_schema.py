"""The SQLite file's layout: its tables, its schema version and the meta row.

The meta row holds the store's id, the snapshot version and the schema version: the version
of this layout, bumped when a change to it would mislead a server that does not know it.
A server refuses a file whose schema version is newer than the one it knows, when it opens
the file and at every read of the meta row (every load and every commit), so an instance
left behind by a rolling upgrade stops rather than misreads or overwrites.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Final

from flagport_server.stores import _common

__all__ = ["SCHEMA_VERSION", "create_schema", "read_meta"]

#: Bumped when the table layout changes; a file from a newer Flagport is refused.
SCHEMA_VERSION: Final = 1

_META = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL
);
"""

_TABLES = """
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
-- Approvals (issue 19): policies and change requests, new tables an older server never reads.
CREATE TABLE IF NOT EXISTS approval_policies (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS change_requests (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
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
-- The server secret (issue 15: stream tickets, dashboard sessions). A table of its own, like
-- stats_reported: a store written before it simply has none, and older servers ignore it.
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
-- Guarded rollouts (issue 17), tables of their own like secrets: older servers ignore them.
-- One versioned plan record per flag (the compare-and-set guard of every transition).
CREATE TABLE IF NOT EXISTS plans (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
-- Renewable leases (the rollout driver's): one holder until expires_at (renewed_at stays).
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    renewed_at REAL NOT NULL
) WITHOUT ROWID;
-- Outcome signals per flag, minute and cohort (48 hours): JSON totals, integers only.
CREATE TABLE IF NOT EXISTS outcome_minutes (
    flag TEXT NOT NULL,
    minute INTEGER NOT NULL,
    cohort TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (flag, minute, cohort)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcome_minutes_by_minute ON outcome_minutes (minute);
-- Webhooks (issue 19), tables of their own: older servers ignore them. A webhook's cursor
-- over audit ids, and the delivery state per webhook and audit entry.
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id TEXT NOT NULL,
    audit_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (webhook_id, audit_id)
) WITHOUT ROWID;
"""


def create_schema(conn: sqlite3.Connection, where: str) -> None:
    """Create what is missing, in one ``BEGIN IMMEDIATE`` transaction (several workers
    starting at once must not each make a store id). A file of a newer schema is refused
    before anything is created in it. ``where`` names the file in messages."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_META)
        row = conn.execute("SELECT schema_version FROM meta WHERE id = 1").fetchone()
        if row is not None:
            _common.check_schema_version(where, int(row[0]), SCHEMA_VERSION)
        for statement in _TABLES.split(";"):
            if statement.strip():
                conn.execute(statement)
        if row is None:
            conn.execute(
                "INSERT INTO meta (id, store_id, version, schema_version) VALUES (1, ?, 0, ?)",
                (uuid.uuid4().hex, SCHEMA_VERSION),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read_meta(conn: sqlite3.Connection, where: str) -> tuple[str, int]:
    """``(store_id, snapshot version)``; refuses a file whose schema has become newer than
    this server's since it was opened (a newer server upgraded it)."""
    row = conn.execute("SELECT store_id, version, schema_version FROM meta WHERE id = 1").fetchone()
    if row is None:  # only if someone emptied the table by hand
        raise sqlite3.DatabaseError("the meta row is missing")
    _common.check_schema_version(where, int(row[2]), SCHEMA_VERSION)
    return str(row[0]), int(row[1])
