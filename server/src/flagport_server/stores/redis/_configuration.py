"""The flags and segments of the Redis store: loads, guarded commits and change notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from flagport.rollout.plan import Plan
from flagport_server.errors import StoreError, VersionConflict
from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry, CommitResult, Mutation, StoreState
from flagport_server.stores.redis._connection import (
    INIT_LUA,
    SCHEMA_CHECK_LUA,
    SCHEMA_VERSION,
    RedisBase,
    Script,
    as_dict,
    error_text,
    pairs,
)

__all__ = ["RedisConfiguration"]

log = logging.getLogger(__name__)

#: How long a commit's reply is kept so that a retried EVALSHA returns it instead of
#: applying the commit twice.
_COMMIT_REPLY_TTL_S: Final = 300

# KEYS: meta, flags, flag_versions, segments, segment_versions, audit, audit:ids, audit:seq,
#       commit reply, audit:time, plans, plan_versions, then per audit entry its key index
#       and actor index.
# ARGV: schema version, new store id, channel, reply ttl, number of mutations, then six per
#       mutation (kind, key, op, expected: '*' any / '' absent / n, version, body), then the
#       number of audit entries and two per entry (at as epoch seconds, body).
_COMMIT_SCRIPT: Final = (
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
local done = redis.call('GET', KEYS[9])
if done then return {'ok', done} end
local n = tonumber(ARGV[5])
local seen = {}
local i = 6
for m = 1, n do
  local kind, key, op, expected = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local slot = kind .. ':' .. key
  local actual = seen[slot]
  if actual == nil then
    local versions = KEYS[3]
    if kind == 'segment' then versions = KEYS[5] elseif kind == 'plan' then versions = KEYS[12] end
    local stored = redis.call('HGET', versions, key)
    if stored then actual = tonumber(stored) else actual = false end
  end
  if expected ~= '*' then
    local shown = ''
    if actual then shown = tostring(actual) end
    if expected == '' then
      if actual then return {'conflict', kind, key, expected, shown} end
    elseif (not actual) or actual ~= tonumber(expected) then
      return {'conflict', kind, key, expected, shown}
    end
  end
  if op == 'put' then seen[slot] = tonumber(ARGV[i + 4]) else seen[slot] = false end
  i = i + 6
end
i = 6
for m = 1, n do
  local kind, key, op = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local bodies, versions = KEYS[2], KEYS[3]
  if kind == 'segment' then
    bodies, versions = KEYS[4], KEYS[5]
  elseif kind == 'plan' then
    bodies, versions = KEYS[11], KEYS[12]
  end
  if op == 'put' then
    redis.call('HSET', bodies, key, ARGV[i + 5])
    redis.call('HSET', versions, key, ARGV[i + 4])
  else
    redis.call('HDEL', bodies, key)
    redis.call('HDEL', versions, key)
  end
  i = i + 6
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local na = tonumber(ARGV[i])
i = i + 1
local reply = tostring(version)
for a = 1, na do
  local id = redis.call('INCR', KEYS[8])
  local at = ARGV[i]
  redis.call('HSET', KEYS[6], id, version .. ' ' .. at .. ' ' .. ARGV[i + 1])
  redis.call('ZADD', KEYS[7], id, id)
  redis.call('ZADD', KEYS[10], at, id)
  redis.call('ZADD', KEYS[11 + 2 * a], id, id)
  redis.call('ZADD', KEYS[12 + 2 * a], id, id)
  reply = reply .. ' ' .. id
  i = i + 2
end
redis.call('SET', KEYS[9], reply, 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[3], version)
return {'ok', reply}
"""
)

_COMMIT = Script(_COMMIT_SCRIPT)


class RedisConfiguration(RedisBase):
    """The configuration (flags, segments, snapshot version) and its audit entries, written
    together by :meth:`commit`."""

    async def load(self) -> StoreState:
        """All flags and segments at one snapshot version (one script: atomic), key order."""
        reply = await self._meta_call(full=True)
        # Decoded in a thread, as the SQLite store does: 15,000 flags take ~100 ms.
        return await asyncio.to_thread(
            _common.read_state,
            str(reply[0]),
            int(reply[1]),
            pairs(reply[2]).items(),
            pairs(reply[3]).items(),
            pairs(reply[4]).items(),
        )

    async def load_plans(self) -> dict[str, Plan]:
        reply = await self._command("HGETALL", self._plans)
        return _common.read_plans(as_dict(reply).items())

    async def snapshot_version(self) -> tuple[str, int]:
        """``(store_id, version)``: one small script."""
        reply = await self._meta_call(full=False)
        return str(reply[0]), int(reply[1])

    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        """Check every guard, apply the batch, bump the version, append the audit entries and
        publish the new version, in one Lua script (atomic, also on a Cluster)."""

        def prepare() -> list[tuple[float, str]]:
            for mutation in mutations:
                _common.check_mutation(mutation)
            return [(_common.parse_timestamp(e.at, "at"), _common.encode(e)) for e in audit]

        # In a thread: an import's 15,000 checks would hold the loop for a few hundred ms.
        stamped = await asyncio.to_thread(prepare)
        keys = [
            self._meta,
            self._flags,
            self._flag_versions,
            self._segments,
            self._segment_versions,
            self._audit,
            self._audit_ids,
            self._audit_seq,
            f"{self._tag}:commit:{uuid.uuid4().hex}",
            self._audit_time,
            self._plans,
            self._plan_versions,
        ]
        args: list[Any] = [
            SCHEMA_VERSION,
            uuid.uuid4().hex,
            self.channel,
            _COMMIT_REPLY_TTL_S,
            len(mutations),
        ]
        for mutation in mutations:
            expected = mutation.expected_version
            value = mutation.value
            args += [
                mutation.kind,
                mutation.key,
                mutation.op,
                "*" if expected == -1 else "" if expected is None else str(expected),
                str(_common.mutation_version(mutation)),
                _common.encode(value) if value is not None else "",
            ]
        args.append(len(audit))
        for entry, (at_ts, body) in zip(audit, stamped, strict=True):
            keys += [self._audit_key_index(entry.key), self._audit_actor_index(entry.actor)]
            args += [repr(at_ts), body]
        reply: list[Any] = await self._script(_COMMIT, keys, args)
        if reply[0] == "conflict":
            _, kind, key, expected_text, actual_text = reply
            raise VersionConflict(
                kind,
                key,
                int(expected_text) if expected_text else None,
                int(actual_text) if actual_text else None,
            )
        numbers = [int(n) for n in str(reply[1]).split()]
        return CommitResult(snapshot_version=numbers[0], audit_ids=numbers[1:])

    async def changes(self) -> AsyncIterator[int]:
        """Yield new snapshot versions as they are published. Subscribes to the channel,
        takes the current version as the baseline, and on any failure re-subscribes (with a
        short backoff) and yields the current version if it changed meanwhile. Ends when
        the store is closed."""
        last: int | None = None
        delay = 0.05
        while not self._closed:
            pubsub: PubSub | None = None
            own: Redis | None = None
            try:
                pubsub, own = await self._subscribe()
                _, version = await self.snapshot_version()
                if last is not None and version != last:
                    last = version
                    yield version
                if last is None:
                    last = version
                delay = 0.05
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if message is None or message.get("type") != "message":
                        continue
                    published = int(str(message["data"]))
                    if published != last:
                        last = published
                        yield published
            except (redis_errors.RedisError, OSError, StoreError, ValueError) as error:
                reason = error_text(error, self.options)
                log.debug("change subscription to %s interrupted: %s", self, reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                if own is not None:
                    with contextlib.suppress(Exception):
                        await own.aclose()

    async def _subscribe(self) -> tuple[PubSub, Redis | None]:
        """A subscribed PubSub, and the client made for it alone (closed with it)."""
        client = await self._ready()
        own: Redis | None = None
        if isinstance(client, RedisCluster):
            # Classic pub/sub is broadcast to every node of a Cluster: any node will do.
            node = client.get_random_node()
            own = Redis(host=node.host, port=int(node.port), **self._connection_kwargs())
            pubsub = own.pubsub()
        else:
            pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                if own is not None:
                    await own.aclose()
            raise
        return pubsub, own
