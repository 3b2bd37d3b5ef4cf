"""The SQLite store's evaluation statistics (see docs/adr/0007-stats.md)."""

from __future__ import annotations

import asyncio
import sqlite3

from flagport_server.stores import _sketch
from flagport_server.stores.base import (
    STATS_HOURS_KEPT,
    STATS_MINUTES_KEPT,
    FlagSeen,
    StatsBatch,
    StatsView,
)
from flagport_server.stores.sqlite._connection import SQLiteBase

__all__ = ["SQLiteStats"]


class SQLiteStats(SQLiteBase):
    """Counts per minute and hour, unique-unit sketches per hour, first and last seen."""

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

    async def hourly_counts(self, since: int, until: int) -> dict[str, dict[int, int]]:
        def read(conn: sqlite3.Connection) -> dict[str, dict[int, int]]:
            counts: dict[str, dict[int, int]] = {}
            rows = conn.execute(
                "SELECT flag, hour, SUM(evaluations) FROM stats_hours "
                "WHERE hour >= ? AND hour < ? GROUP BY flag, hour",
                (since, until),
            )
            for flag, hour, evaluations in rows:
                if evaluations:
                    counts.setdefault(str(flag), {})[int(hour)] = int(evaluations)
            return counts

        return await self._read(read)

    async def last_seen(self) -> dict[str, FlagSeen]:
        def read(conn: sqlite3.Connection) -> dict[str, FlagSeen]:
            rows = conn.execute("SELECT flag, first_seen, last_seen FROM stats_seen")
            return {flag: FlagSeen(flag, first, last) for flag, first, last in rows}

        return await self._read(read)
