"""The SQLite store's part of guarded rollouts (tables of their own: older servers ignore
them): the driver's renewable lease and the outcome signals per flag, minute and cohort."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from flagport.rollout.outcomes import Cohort, Totals
from flagport_server.stores import _common
from flagport_server.stores.base import OUTCOME_MINUTES_KEPT, Lease, OutcomeRow
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteRollout"]


class SQLiteRollout(SQLiteBase):
    """Leases (one row each, taken in ``BEGIN IMMEDIATE``: two processes never both hold
    one) and outcome totals (read-modify-write in the same kind of transaction: exact)."""

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        def take(conn: sqlite3.Connection) -> bool:
            self._meta(conn)  # a file of a newer schema is not written to
            row = conn.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] != holder and float(row[1]) > now:
                return False
            conn.execute(
                "INSERT INTO leases (name, holder, expires_at, renewed_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at, renewed_at = excluded.renewed_at",
                (name, holder, now + ttl, now),
            )
            return True

        return await self._write(take)

    async def release_lease(self, name: str, holder: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder)
            )

        await self._write(release)

    async def lease(self, name: str, now: float) -> Lease | None:
        def read(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(
                "SELECT holder, expires_at, renewed_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is None or float(row[1]) <= now:
                return None
            return Lease(name=name, holder=row[0], expires_at=row[1], renewed_at=row[2])

        return await self._read(read)

    async def lease_seen(self, name: str) -> float | None:
        def read(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT renewed_at FROM leases WHERE name = ?", (name,)).fetchone()
            return None if row is None else float(row[0])

        return await self._read(read)

    async def record_outcomes(self, rows: Sequence[OutcomeRow], now: float) -> int:
        bodies = [(key, minute, cohort, totals) for key, minute, cohort, totals in rows]

        def add(conn: sqlite3.Connection) -> int:
            self._meta(conn)
            left_out = 0
            for key, minute, cohort, totals in bodies:
                row = conn.execute(
                    "SELECT body FROM outcome_minutes WHERE flag = ? AND minute = ? AND cohort = ?",
                    (key, minute, cohort.value),
                ).fetchone()
                stored = (
                    _common.decode_totals(row[0], f"{key} {minute} {cohort}")
                    if row is not None
                    else Totals()
                )
                left_out += merge_capped(stored, totals)
                conn.execute(
                    "INSERT INTO outcome_minutes (flag, minute, cohort, body) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (flag, minute, cohort) DO UPDATE SET body = excluded.body",
                    (key, minute, cohort.value, _common.encode(stored)),
                )
            oldest = int(now // 60 * 60) - OUTCOME_MINUTES_KEPT * 60
            conn.execute("DELETE FROM outcome_minutes WHERE minute < ?", (oldest,))
            return left_out

        return await self._write(add)

    async def outcomes(self, key: str, first_minute: int, last_minute: int) -> list[OutcomeRow]:
        def read(conn: sqlite3.Connection) -> list[OutcomeRow]:
            found = conn.execute(
                "SELECT minute, cohort, body FROM outcome_minutes WHERE flag = ? "
                "AND minute >= ? AND minute <= ? ORDER BY minute, cohort",
                (key, first_minute, last_minute),
            ).fetchall()
            return [
                (
                    key,
                    int(minute),
                    Cohort(cohort),
                    _common.decode_totals(body, f"{key} {minute} {cohort}"),
                )
                for minute, cohort, body in found
            ]

        return await self._read(read)


def merge_capped(stored: Totals, added: Totals) -> int:
    """Add ``added`` into ``stored``; event series beyond the cap are left out (counted)."""
    events = added.events
    plain = Totals(
        requests=added.requests,
        failures=added.failures,
        latency_us_sum=added.latency_us_sum,
        latency_buckets=added.latency_buckets,
    )
    stored.merge(plain)
    left_out = 0
    for series, count in events.items():
        if not stored.add_event(series, count):
            left_out += 1
    return left_out
