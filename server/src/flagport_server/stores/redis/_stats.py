"""The Redis store's evaluation statistics (see docs/adr/0007-stats.md)."""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from flagport_server.stores.base import (
    STATS_HOURS_KEPT,
    STATS_MINUTES_KEPT,
    FlagSeen,
    StatsBatch,
    StatsView,
)
from flagport_server.stores.redis._connection import RedisBase, as_dict

__all__ = ["RedisStats"]

#: Units per PFADD (at least 100 per command, except a batch's last few) and commands per
#: pipeline round trip when stats are flushed.
_PFADD_CHUNK: Final = 1000
_PIPELINE_CHUNK: Final = 200


class RedisStats(RedisBase):
    """Counts per minute and hour, HyperLogLogs of units per hour, first and last seen."""

    def _stats_key(self, kind: str, flag: str, hour: int, variant: str | None = None) -> str:
        # Flag keys cannot hold "|"; the variant (any text) comes last.
        tail = f"|{variant}" if variant is not None else ""
        return f"{self._tag}:st:{kind}:{flag}|{hour}{tail}"

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in non-transactional pipelines of bounded size."""

        async def run(client: Redis | RedisCluster) -> list[Any]:
            replies: list[Any] = []
            for start in range(0, len(commands), _PIPELINE_CHUNK):
                if isinstance(client, RedisCluster):
                    pipe: Any = client.pipeline()
                else:
                    pipe = client.pipeline(transaction=False)
                for command in commands[start : start + _PIPELINE_CHUNK]:
                    pipe.execute_command(*command)
                replies.extend(await pipe.execute())
            return replies

        return await self._run(run)

    async def record_stats(self, batch: StatsBatch, now: float) -> None:
        """Pipelined: HINCRBY per minute and hour, PFADD in chunks of up to 1,000 units, ZADD
        GT/LT for last/first seen; every stats key expires with its retention window."""
        hour_keep = (STATS_HOURS_KEPT + 2) * 3600
        minute_keep = STATS_MINUTES_KEPT * 60 + 3600
        commands: list[tuple[Any, ...]] = []
        # Time to live relative to ``now`` (the caller's clock, not Redis's): data already
        # past its retention is not written at all.
        expiries: dict[str, int] = {}
        for flag, variant, minute, n in batch.counts:
            hour = minute - minute % 3600
            hourly = self._stats_key("h", flag, hour)
            minutely = self._stats_key("m", flag, hour)
            if hour + hour_keep > now:
                commands.append(("HINCRBY", hourly, variant, n))
                expiries[hourly] = int(hour + hour_keep - now)
            if hour + minute_keep > now:
                commands.append(("HINCRBY", minutely, f"{minute}|{variant}", n))
                expiries[minutely] = int(hour + minute_keep - now)
        for flag, variant, hour, units in batch.units:
            if hour + hour_keep <= now:
                continue
            key = self._stats_key("u", flag, hour, variant)
            for start in range(0, len(units), _PFADD_CHUNK):
                commands.append(("PFADD", key, *units[start : start + _PFADD_CHUNK]))
            # The hour's hash lists the variants whose sketches exist.
            hourly = self._stats_key("h", flag, hour)
            commands.append(("HINCRBY", hourly, variant, 0))
            expiries[key] = expiries[hourly] = int(hour + hour_keep - now)
        for flag, variant, hour, n in batch.reported:
            if hour + hour_keep > now:
                reported = self._stats_key("r", flag, hour)
                commands.append(("HINCRBY", reported, variant, n))
                expiries[reported] = int(hour + hour_keep - now)
        for key, ttl in expiries.items():
            commands.append(("EXPIRE", key, max(ttl, 1)))
        for flag, first, last in batch.seen:
            commands.append(("ZADD", f"{self._tag}:st:first", "LT", first, flag))
            commands.append(("ZADD", f"{self._tag}:st:last", "GT", last, flag))
        if commands:
            await self._pipelined(commands)

    async def stats(
        self, key: str, since: int, until: int, off_variant: str | None = None
    ) -> StatsView:
        hours = list(range(since - since % 3600, until, 3600))
        commands: list[tuple[Any, ...]] = [("HGETALL", self._stats_key("h", key, h)) for h in hours]
        commands += [("HGETALL", self._stats_key("m", key, h)) for h in hours]
        commands += [("HGETALL", self._stats_key("r", key, h)) for h in hours]
        commands.append(("ZSCORE", f"{self._tag}:st:first", key))
        commands.append(("ZSCORE", f"{self._tag}:st:last", key))
        replies = await self._pipelined(commands)
        evaluations: dict[str, int] = {}
        sketches: dict[str, list[str]] = {}
        for hour, reply in zip(hours, replies[: len(hours)], strict=True):
            for variant, n in as_dict(reply).items():
                evaluations[variant] = evaluations.get(variant, 0) + int(n)
                sketches.setdefault(variant, []).append(self._stats_key("u", key, hour, variant))
        series: dict[int, dict[str, int]] = {}
        for reply in replies[len(hours) : 2 * len(hours)]:
            for field, n in as_dict(reply).items():
                minute, _, variant = field.partition("|")
                if since <= int(minute) < until:
                    series.setdefault(int(minute), {})[variant] = int(n)
        reported: dict[str, int] = {}
        for reply in replies[2 * len(hours) : 3 * len(hours)]:
            for variant, n in as_dict(reply).items():
                reported[variant] = reported.get(variant, 0) + int(n)
        first, last = replies[-2], replies[-1]
        every = [k for group in sketches.values() for k in group]
        on = [k for v, group in sketches.items() if v != off_variant for k in group]
        counts = await self._pipelined(
            [("PFCOUNT", *group) for group in sketches.values()]
            + [("PFCOUNT", *keys) for keys in (every, on) if keys]
        )
        unique = dict(zip(sketches, counts, strict=False))
        tail = counts[len(sketches) :]
        units_seen = int(tail[0]) if every else 0
        units_on = int(tail[1]) if on else 0
        return StatsView(
            key=key,
            since=since,
            until=until,
            evaluations=evaluations,
            unique_units={v: int(n) for v, n in unique.items()},
            units_seen=units_seen,
            units_on=units_on,
            series=sorted(series.items()),
            first_seen=float(first) if first is not None else None,
            last_seen=float(last) if last is not None else None,
            reported=reported,
        )

    async def hourly_counts(self, since: int, until: int) -> dict[str, dict[int, int]]:
        """The flags last seen since ``since`` (the last-seen index), then each one's hour
        hashes in one pipeline: two round trips whatever the number of flags."""
        (last,) = await self._pipelined([("ZRANGEBYSCORE", f"{self._tag}:st:last", since, "+inf")])
        flags = [str(flag) for flag in last]
        hours = range(since - since % 3600, until, 3600)
        slots = [(flag, hour) for flag in flags for hour in hours if hour >= since]
        if not slots:
            return {}
        replies = await self._pipelined(
            [("HGETALL", self._stats_key("h", flag, hour)) for flag, hour in slots]
        )
        counts: dict[str, dict[int, int]] = {}
        for (flag, hour), reply in zip(slots, replies, strict=True):
            total = sum(int(n) for n in as_dict(reply).values())
            if total:
                counts.setdefault(flag, {})[hour] = total
        return counts

    async def last_seen(self) -> dict[str, FlagSeen]:
        first, last = await self._pipelined(
            [
                ("ZRANGE", f"{self._tag}:st:first", 0, -1, "WITHSCORES"),
                ("ZRANGE", f"{self._tag}:st:last", 0, -1, "WITHSCORES"),
            ]
        )
        firsts = _scores(first)
        return {
            flag: FlagSeen(flag, firsts.get(flag, at), at) for flag, at in _scores(last).items()
        }


def _scores(reply: Any) -> dict[str, float]:
    """ZRANGE ... WITHSCORES: pairs (parsed by the client) or a flat list."""
    items = list(reply)
    if items and isinstance(items[0], list | tuple):
        return {str(k): float(v) for k, v in items}
    return {str(items[i]): float(items[i + 1]) for i in range(0, len(items), 2)}
