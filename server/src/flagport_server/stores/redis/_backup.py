"""Whole-store backup and restore of the Redis store (docs/adr/0031-whole-store-backup.md):
each one Lua script, so a backup is read at one snapshot version and a restore is applied
all at once (also on a Cluster: every key shares the store's hash tag)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

from flagport_server.errors import StoreError, StoreNotEmpty
from flagport_server.stores import _common
from flagport_server.stores.backup import (
    BackupAuditEntry,
    BackupRecord,
    BackupSource,
    StoreBackup,
    held_records,
    utc_now_text,
)
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.redis._audit import split_stored_entry
from flagport_server.stores.redis._connection import (
    INIT_LUA,
    SCHEMA_CHECK_LUA,
    SCHEMA_VERSION,
    RedisBase,
    Script,
    as_dict,
    pairs,
)
from flagport_server.stores.redis._secrets import SERVER_SECRET_FIELD

__all__ = ["RedisBackup"]

# KEYS: meta, flags, flag_versions, segments, segment_versions, plans, plan_versions, audit,
#       audit:seq, tokens, secrets. ARGV: schema version, new store id, secret field.
_BACKUP: Final = Script(
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
local meta = redis.call('HMGET', KEYS[1], 'store_id', 'version')
return {meta[1], meta[2],
        redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]),
        redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7]),
        redis.call('HGETALL', KEYS[8]), redis.call('GET', KEYS[9]) or '0',
        redis.call('HGETALL', KEYS[10]), redis.call('HGET', KEYS[11], ARGV[3]) or ''}
"""
)

#: The fixed keys of the restore script, after which come the audit filter indexes of the
#: log being replaced (to delete), then two per restored entry and two for the restore's own.
_FIXED_KEYS: Final = 14
# KEYS: meta, flags, flag_versions, segments, segment_versions, plans, plan_versions, audit,
#       audit:ids, audit:seq, audit:time, tokens, token_hashes, secrets, then the indexes.
# ARGV: schema version, new store id, replace ('1'/'0'), the log's entry count and sequence as
#       read before (a commit in between: 'retry'), the backup's store id and snapshot
#       version, channel, number of old indexes, of flags, segments, plans, audit entries and
#       tokens, the secret (hex or ''), the secret's field, the next audit id; then three per
#       record (key, version, body), four per audit entry (id, snapshot version, at as epoch
#       seconds, body), three per token (id, secret hash, body), and the restore's own entry
#       (at as epoch seconds, body).
_RESTORE: Final = Script(
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
if ARGV[3] ~= '1' then
  local held = {redis.call('HLEN', KEYS[2]), redis.call('HLEN', KEYS[4]),
                redis.call('HLEN', KEYS[6]), redis.call('HLEN', KEYS[12]),
                redis.call('HLEN', KEYS[8])}
  for _, n in ipairs(held) do
    if n > 0 then return {'held', held[1], held[2], held[3], held[4], held[5]} end
  end
end
if redis.call('HLEN', KEYS[8]) ~= tonumber(ARGV[4])
   or (redis.call('GET', KEYS[10]) or '0') ~= ARGV[5] then
  return {'retry'}
end
for i = 2, 13 do redis.call('DEL', KEYS[i]) end
local n_old = tonumber(ARGV[9])
for i = 1, n_old do redis.call('DEL', KEYS[14 + i]) end
local a = 18
local function records(n, bodies, versions)
  for r = 1, n do
    redis.call('HSET', bodies, ARGV[a], ARGV[a + 2])
    redis.call('HSET', versions, ARGV[a], ARGV[a + 1])
    a = a + 3
  end
end
records(tonumber(ARGV[10]), KEYS[2], KEYS[3])
records(tonumber(ARGV[11]), KEYS[4], KEYS[5])
records(tonumber(ARGV[12]), KEYS[6], KEYS[7])
local k = 14 + n_old
for r = 1, tonumber(ARGV[13]) do
  local id = ARGV[a]
  redis.call('HSET', KEYS[8], id, ARGV[a + 1] .. ' ' .. ARGV[a + 2] .. ' ' .. ARGV[a + 3])
  redis.call('ZADD', KEYS[9], id, id)
  redis.call('ZADD', KEYS[11], ARGV[a + 2], id)
  redis.call('ZADD', KEYS[k + 1], id, id)
  redis.call('ZADD', KEYS[k + 2], id, id)
  k = k + 2
  a = a + 4
end
for t = 1, tonumber(ARGV[14]) do
  redis.call('HSET', KEYS[12], ARGV[a], ARGV[a + 2])
  redis.call('HSET', KEYS[13], ARGV[a + 1], ARGV[a])
  a = a + 3
end
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local restored = math.max(version, tonumber(ARGV[7])) + 1
redis.call('HSET', KEYS[1], 'store_id', ARGV[6], 'version', restored)
redis.call('SET', KEYS[10], tonumber(ARGV[17]) - 1)
local id = redis.call('INCR', KEYS[10])
redis.call('HSET', KEYS[8], id, restored .. ' ' .. ARGV[a] .. ' ' .. ARGV[a + 1])
redis.call('ZADD', KEYS[9], id, id)
redis.call('ZADD', KEYS[11], ARGV[a], id)
redis.call('ZADD', KEYS[k + 1], id, id)
redis.call('ZADD', KEYS[k + 2], id, id)
if ARGV[15] ~= '' then redis.call('HSET', KEYS[14], ARGV[16], ARGV[15]) end
redis.call('PUBLISH', ARGV[8], restored)
return {'ok', restored}
"""
)

#: What the script's 'held' reply counts, in order.
_HELD: Final = ("flags", "segments", "plans", "tokens", "audit")

#: A commit landing between the read of the log to replace and the restore script makes the
#: script refuse ('retry'); tried this many times.
_ATTEMPTS: Final = 5


def _records(bodies: dict[str, str], versions: dict[str, str]) -> list[BackupRecord]:
    return [
        BackupRecord(key=key, version=int(versions.get(key, "1")), body=bodies[key])
        for key in sorted(bodies)
    ]


def _audit_entries(stored: dict[str, str]) -> list[BackupAuditEntry]:
    entries: list[BackupAuditEntry] = []
    for id_text in sorted(stored, key=int):
        version, _, body = split_stored_entry(stored[id_text])
        entry = _common.decode_audit(body, id_text)
        entries.append(
            BackupAuditEntry(
                id=int(id_text),
                snapshot_version=version,
                key=entry.key,
                actor=entry.actor,
                at=entry.at,
                body=body,
            )
        )
    return entries


class RedisBackup(RedisBase):
    async def backup(self) -> StoreBackup:
        keys = [
            self._meta,
            self._flags,
            self._flag_versions,
            self._segments,
            self._segment_versions,
            self._plans,
            self._plan_versions,
            self._audit,
            self._audit_seq,
            self._tokens,
            self._secrets,
        ]
        reply: list[Any] = await self._script(
            _BACKUP, keys, [SCHEMA_VERSION, uuid.uuid4().hex, SERVER_SECRET_FIELD]
        )
        store_id, version = str(reply[0]), int(reply[1])
        flags, flag_versions, segments, segment_versions, plans, plan_versions, audit = (
            pairs(reply[i]) for i in range(2, 9)
        )
        sequence, tokens, secret = int(reply[9]), pairs(reply[10]), str(reply[11])
        # Decoding a long log takes a while: off the loop.
        entries = await asyncio.to_thread(_audit_entries, audit)
        return StoreBackup(
            created_at=utc_now_text(),
            source=BackupSource(
                kind="redis",
                store_id=store_id,
                schema_version=SCHEMA_VERSION,
                snapshot_version=version,
            ),
            flags=_records(flags, flag_versions),
            segments=_records(segments, segment_versions),
            plans=_records(plans, plan_versions),
            audit=entries,
            audit_next_id=max(sequence, entries[-1].id if entries else 0) + 1,
            tokens=[tokens[token_id] for token_id in sorted(tokens)],
            server_secret=secret or None,
        )

    async def restore(self, backup: StoreBackup, entry: AuditEntry, *, replace: bool) -> int:
        prepared = await asyncio.to_thread(self._restore_arguments, backup, entry)
        for _ in range(_ATTEMPTS):
            if replace:
                stored = as_dict(await self._command("HGETALL", self._audit))
                sequence = str(await self._command("GET", self._audit_seq) or "0")
                old = await asyncio.to_thread(_audit_entries, stored)
            else:
                old, sequence = [], "0"
            old_indexes = sorted(
                {self._audit_key_index(e.key) for e in old}
                | {self._audit_actor_index(e.actor) for e in old}
            )
            new_keys, records_args = prepared
            keys = [
                self._meta,
                self._flags,
                self._flag_versions,
                self._segments,
                self._segment_versions,
                self._plans,
                self._plan_versions,
                self._audit,
                self._audit_ids,
                self._audit_seq,
                self._audit_time,
                self._tokens,
                self._token_hashes,
                self._secrets,
                *old_indexes,
                *new_keys,
            ]
            args: list[Any] = [
                SCHEMA_VERSION,
                uuid.uuid4().hex,
                "1" if replace else "0",
                len(old),
                sequence,
                backup.source.store_id,
                backup.source.snapshot_version,
                self.channel,
                len(old_indexes),
                len(backup.flags),
                len(backup.segments),
                len(backup.plans),
                len(backup.audit),
                len(backup.tokens),
                backup.server_secret or "",
                SERVER_SECRET_FIELD,
                backup.audit_next_id,
                *records_args,
            ]
            reply: list[Any] = await self._script(_RESTORE, keys, args)
            if reply[0] == "held":
                counts = dict(zip(_HELD, reply[1:], strict=True))
                raise StoreNotEmpty(held_records({k: int(v) for k, v in counts.items()}))
            if reply[0] == "ok":
                return int(reply[1])
        raise StoreError("the store kept changing during the restore; try again")

    def _restore_arguments(
        self, backup: StoreBackup, entry: AuditEntry
    ) -> tuple[list[str], list[Any]]:
        """The index keys and the record arguments of the restore script (the part that does
        not depend on what the store holds now)."""
        keys: list[str] = []
        args: list[Any] = []
        for records in (backup.flags, backup.segments, backup.plans):
            for record in records:
                args += [record.key, record.version, record.body]
        for stored in backup.audit:
            keys += [self._audit_key_index(stored.key), self._audit_actor_index(stored.actor)]
            at_ts = _common.parse_timestamp(stored.at, f"audit {stored.id}")
            args += [stored.id, stored.snapshot_version, repr(at_ts), stored.body]
        for body in backup.tokens:
            token = _common.decode_token(body, "?")
            args += [token.id, token.secret_hash, body]
        keys += [self._audit_key_index(entry.key), self._audit_actor_index(entry.actor)]
        args += [repr(_common.parse_timestamp(entry.at, "at")), _common.encode(entry)]
        return keys, args
