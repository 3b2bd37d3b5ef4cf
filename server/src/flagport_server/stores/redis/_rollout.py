"""The Redis store's part of guarded rollouts (keys of their own: older servers ignore them).

{p}:lease:<name>           the holder's id, SET NX PX (Redis's clock expires it); taken,
                           renewed and released by scripts that check the holder
{p}:leases                 hash: name -> when it was last taken or renewed (kept)
{p}:oc:<flag>|<minute>|<cohort>   hash of one minute's outcome totals: r (requests),
                           f (failures), us (latency sum, microseconds), b0..b12 (the
                           histogram), e:<series> (events); expires after 48 hours
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from flagport.rollout.limits import LATENCY_BOUNDS_MS
from flagport.rollout.outcomes import MAX_EVENT_SERIES, MAX_TOTAL, Cohort, Totals
from flagport_server.stores.base import OUTCOME_MINUTES_KEPT, Lease, OutcomeRow
from flagport_server.stores.redis._connection import RedisBase, Script, pairs

__all__ = ["RedisRollout"]

_BUCKETS: Final = len(LATENCY_BOUNDS_MS)

# KEYS: the lease, the leases hash. ARGV: holder, ttl in ms, name, now.
_ACQUIRE: Final = Script("""
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
""")

# KEYS: the lease. ARGV: holder.
_RELEASE: Final = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
""")

# KEYS: one hash per row. ARGV: ttl in seconds, the series cap, MAX_TOTAL, then per row
# 3 + 13 counts, the number of events and two per event (series, count).
_RECORD: Final = Script(
    """
local fixed = {'r', 'f', 'us'}
for b = 0, """
    + str(_BUCKETS - 1)
    + """ do fixed[#fixed + 1] = 'b' .. b end
local ttl, cap, most = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- Stored and added are each at most MAX_TOTAL, so HINCRBY cannot overflow (an error would
-- leave the script's earlier writes in place, and the retried batch would count them
-- twice); the sum saturates at MAX_TOTAL.
local function add(key, field, by)
  if redis.call('HINCRBY', key, field, by) > tonumber(most) then
    redis.call('HSET', key, field, most)
  end
end
local left_out = 0
local i = 4
for k = 1, #KEYS do
  local key = KEYS[k]
  for f = 1, #fixed do
    add(key, fixed[f], ARGV[i])
    i = i + 1
  end
  local events = tonumber(ARGV[i])
  i = i + 1
  for e = 1, events do
    local field = 'e:' .. ARGV[i]
    if redis.call('HEXISTS', key, field) == 1
        or redis.call('HLEN', key) - #fixed < cap then
      add(key, field, ARGV[i + 1])
    else
      left_out = left_out + 1
    end
    i = i + 2
  end
  redis.call('EXPIRE', key, ttl)
end
return left_out
"""
)

# KEYS: the hashes to read. Answers each one's HGETALL.
_READ: Final = Script("""
local out = {}
for k = 1, #KEYS do out[k] = redis.call('HGETALL', KEYS[k]) end
return out
""")


class RedisRollout(RedisBase):
    """The rollout driver's lease and the outcome totals."""

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        reply = await self._script(
            _ACQUIRE,
            [self._lease_key(name), self._leases],
            [holder, max(1, round(ttl * 1000)), name, repr(now)],
        )
        return int(reply) == 1

    async def release_lease(self, name: str, holder: str) -> None:
        await self._script(_RELEASE, [self._lease_key(name)], [holder])

    async def lease(self, name: str, now: float) -> Lease | None:
        key = self._lease_key(name)
        holder = await self._command("GET", key)
        if holder is None:
            return None
        left_ms = int(await self._command("PTTL", key))
        if left_ms <= 0:
            return None
        renewed = await self.lease_seen(name)
        return Lease(
            name=name,
            holder=str(holder),
            expires_at=now + left_ms / 1000,
            renewed_at=renewed if renewed is not None else now,
        )

    async def lease_seen(self, name: str) -> float | None:
        seen = await self._command("HGET", self._leases, name)
        return None if seen is None else float(seen)

    async def record_outcomes(self, rows: Sequence[OutcomeRow], now: float) -> int:
        oldest = int(now // 60 * 60) - OUTCOME_MINUTES_KEPT * 60
        keys: list[str] = []
        args: list[Any] = [OUTCOME_MINUTES_KEPT * 60 + 120, MAX_EVENT_SERIES, MAX_TOTAL]
        for key, minute, cohort, totals in rows:
            if minute < oldest:
                continue
            keys.append(self._outcome_key(key, minute, cohort.value))
            counts = (totals.requests, totals.failures, totals.latency_us_sum)
            args += [min(count, MAX_TOTAL) for count in (*counts, *totals.latency_buckets)]
            args.append(len(totals.events))
            for series, count in totals.events.items():
                args += [series, min(count, MAX_TOTAL)]
        if not keys:
            return 0
        return int(await self._script(_RECORD, keys, args))

    async def outcomes(self, key: str, first_minute: int, last_minute: int) -> list[OutcomeRow]:
        wanted = [
            (minute, cohort)
            for minute in range(first_minute, last_minute + 1, 60)
            for cohort in (Cohort.CONTROL, Cohort.TREATMENT)
        ]
        if not wanted:
            return []
        keys = [self._outcome_key(key, minute, cohort.value) for minute, cohort in wanted]
        replies: list[Any] = await self._script(_READ, keys, [])
        rows: list[OutcomeRow] = []
        for (minute, cohort), reply in zip(wanted, replies, strict=True):
            fields = pairs(list(reply))
            if not fields:
                continue
            totals = Totals(
                requests=int(fields.get("r", 0)),
                failures=int(fields.get("f", 0)),
                latency_us_sum=int(fields.get("us", 0)),
                latency_buckets=[int(fields.get(f"b{b}", 0)) for b in range(_BUCKETS)],
                events={
                    name[2:]: int(count) for name, count in fields.items() if name.startswith("e:")
                },
            )
            rows.append((key, minute, cohort, totals))
        return rows
