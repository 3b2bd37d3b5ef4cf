"""Whole-store backup and restore of the Redis store (docs/adr/0031-whole-store-backup.md):
each one Lua script, so a backup is read at one snapshot version and a restore is applied
all at once (also on a Cluster: every key shares the store's hash tag)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Final

import msgspec

from flagport_server.errors import StoreError, StoreNotEmpty
from flagport_server.stores import _common
from flagport_server.stores.backup import (
    HELD_KINDS,
    BackupAuditEntry,
    BackupRecord,
    BackupSource,
    BackupWebhook,
    StoreBackup,
    held_records,
    utc_now_text,
)
from flagport_server.stores.base import ApprovalPolicy, AuditEntry, ChangeRequest
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
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord

__all__ = ["RedisBackup"]

# KEYS: the store's keys (RedisBackup._store_keys), then each webhook's delivery hash.
# ARGV: schema version, new store id, secret field, then the webhook ids read before (another
#       set now: 'retry').
_BACKUP: Final = Script(
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
if redis.call('HLEN', KEYS[17]) ~= #ARGV - 3 then return {'retry'} end
for i = 4, #ARGV do
  if redis.call('HEXISTS', KEYS[17], ARGV[i]) == 0 then return {'retry'} end
end
local meta = redis.call('HMGET', KEYS[1], 'store_id', 'version')
local deliveries = {}
for i = 19, #KEYS do deliveries[#deliveries + 1] = redis.call('HGETALL', KEYS[i]) end
return {meta[1], meta[2],
        redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]),
        redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7]),
        redis.call('HGETALL', KEYS[8]), redis.call('GET', KEYS[10]) or '0',
        redis.call('HGETALL', KEYS[12]), redis.call('HGET', KEYS[14], ARGV[3]) or '',
        redis.call('HGETALL', KEYS[15]), redis.call('HGETALL', KEYS[16]),
        redis.call('HGETALL', KEYS[17]), redis.call('HGETALL', KEYS[18]), deliveries}
"""
)

# KEYS: the store's keys (RedisBackup._store_keys: meta, flags, flag_versions, segments,
#       segment_versions, plans, plan_versions, audit, audit:ids, audit:seq, audit:time,
#       tokens, token_hashes, secrets, approval policies, change requests, webhooks, webhook
#       cursors: 18); then the keys of what is replaced
#       (the old log's filter indexes, the old webhooks' delivery keys), to delete; two filter
#       indexes per restored entry and two for the restore's own; two delivery keys (the
#       hash, the delivered set) per restored webhook.
# ARGV: schema version, new store id, replace ('1'/'0'), the log's entry count and sequence
#       and the webhook count as read before (a commit or a webhook change in between:
#       'retry'), the backup's store id and snapshot version, channel, number of keys to
#       delete, of flags, segments, plans, audit entries, tokens, the secret (hex or ''), the
#       secret's field, the next audit id, the number of policies, requests, webhooks and
#       deliveries; then three per record (key, version, body), four per audit entry (id,
#       snapshot version, at as epoch seconds, body), three per token (id, secret hash,
#       body), two per policy and request (id, body), three per webhook (id, body, cursor),
#       four per delivery (its webhook's 1-based place among the webhooks, audit id, status,
#       body), and the restore's own entry (at as epoch seconds, body).
_RESTORE: Final = Script(
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
if ARGV[3] ~= '1' then
  local held = {}
  for _, i in ipairs({2, 4, 6, 12, 8, 15, 16, 17}) do
    held[#held + 1] = redis.call('HLEN', KEYS[i])
  end
  for _, n in ipairs(held) do
    if n > 0 then return {'held', unpack(held)} end
  end
end
if redis.call('HLEN', KEYS[8]) ~= tonumber(ARGV[4])
   or (redis.call('GET', KEYS[10]) or '0') ~= ARGV[5]
   or redis.call('HLEN', KEYS[17]) ~= tonumber(ARGV[22]) then
  return {'retry'}
end
for i = 2, 18 do
  if i ~= 14 then redis.call('DEL', KEYS[i]) end
end
local n_old = tonumber(ARGV[9])
for i = 1, n_old do redis.call('DEL', KEYS[18 + i]) end
local a = 23
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
local k = 18 + n_old
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
for _, hash in ipairs({15, 16}) do
  for r = 1, tonumber(ARGV[3 + hash]) do
    redis.call('HSET', KEYS[hash], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
end
local webhooks = tonumber(ARGV[20])
local hooks = k + 2
for w = 1, webhooks do
  redis.call('HSET', KEYS[17], ARGV[a], ARGV[a + 1])
  redis.call('HSET', KEYS[18], ARGV[a], ARGV[a + 2])
  a = a + 3
end
for d = 1, tonumber(ARGV[21]) do
  local place = hooks + 2 * (tonumber(ARGV[a]) - 1)
  redis.call('HSET', KEYS[place + 1], ARGV[a + 1], ARGV[a + 3])
  if ARGV[a + 2] == 'delivered' then
    redis.call('ZADD', KEYS[place + 2], ARGV[a + 1], ARGV[a + 1])
  end
  a = a + 4
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
        for _ in range(_ATTEMPTS):
            # The webhooks' delivery hashes are keys of their own, named by their ids: read
            # the ids first; the script refuses ('retry') if they changed meanwhile.
            ids = sorted(str(i) for i in await self._command("HKEYS", self._webhooks))
            keys = [*self._store_keys(), *(self._webhook_deliveries(i) for i in ids)]
            reply: list[Any] = await self._script(
                _BACKUP, keys, [SCHEMA_VERSION, uuid.uuid4().hex, SERVER_SECRET_FIELD, *ids]
            )
            if reply[0] != "retry":
                return await asyncio.to_thread(_backup_of, reply)
        raise StoreError("the store's webhooks kept changing during the backup; try again")

    async def restore(self, backup: StoreBackup, entry: AuditEntry, *, replace: bool) -> int:
        new_keys, record_args, webhook_keys = await asyncio.to_thread(
            self._restore_arguments, backup, entry
        )
        for _ in range(_ATTEMPTS):
            if replace:
                stored = as_dict(await self._command("HGETALL", self._audit))
                sequence = str(await self._command("GET", self._audit_seq) or "0")
                old_hooks = [str(i) for i in await self._command("HKEYS", self._webhooks)]
                old = await asyncio.to_thread(_audit_entries, stored)
            else:
                old, sequence, old_hooks = [], "0", []
            replaced = sorted(
                {self._audit_key_index(e.key) for e in old}
                | {self._audit_actor_index(e.actor) for e in old}
                | {self._webhook_deliveries(i) for i in old_hooks}
                | {f"{self._webhook_deliveries(i)}:delivered" for i in old_hooks}
            )
            keys = [*self._store_keys(), *replaced, *new_keys, *webhook_keys]
            args: list[Any] = [
                SCHEMA_VERSION,
                uuid.uuid4().hex,
                "1" if replace else "0",
                len(old),
                sequence,
                backup.source.store_id,
                backup.source.snapshot_version,
                self.channel,
                len(replaced),
                len(backup.flags),
                len(backup.segments),
                len(backup.plans),
                len(backup.audit),
                len(backup.tokens),
                backup.server_secret or "",
                SERVER_SECRET_FIELD,
                backup.audit_next_id,
                len(backup.approval_policies),
                len(backup.change_requests),
                len(backup.webhooks),
                len(backup.webhook_deliveries),
                len(old_hooks),
                *record_args,
            ]
            reply: list[Any] = await self._script(_RESTORE, keys, args)
            if reply[0] == "held":
                counts = dict(zip(HELD_KINDS, reply[1:], strict=True))
                raise StoreNotEmpty(held_records({k: int(v) for k, v in counts.items()}))
            if reply[0] == "ok":
                return int(reply[1])
        raise StoreError("the store kept changing during the restore; try again")

    def _store_keys(self) -> list[str]:
        """The store's keys as both scripts name them (KEYS[1] to KEYS[18])."""
        return [
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
            self._approval_policies,
            self._change_requests,
            self._webhooks,
            self._webhook_cursors,
        ]

    def _restore_arguments(
        self, backup: StoreBackup, entry: AuditEntry
    ) -> tuple[list[str], list[Any], list[str]]:
        """The restored log's filter index keys (its own last), the record arguments and the
        restored webhooks' delivery keys of the restore script: what does not depend on what
        the store holds now."""
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
        for body in backup.approval_policies:
            args += [msgspec.json.decode(body, type=ApprovalPolicy).id, body]
        for body in backup.change_requests:
            args += [msgspec.json.decode(body, type=ChangeRequest).id, body]
        places: dict[str, int] = {}
        webhook_keys: list[str] = []
        for stored_hook in backup.webhooks:
            hook = msgspec.json.decode(stored_hook.body, type=WebhookRecord)
            places[hook.id] = len(places) + 1
            deliveries = self._webhook_deliveries(hook.id)
            webhook_keys += [deliveries, f"{deliveries}:delivered"]
            args += [hook.id, stored_hook.body, stored_hook.cursor]
        for body in backup.webhook_deliveries:
            delivery = msgspec.json.decode(body, type=WebhookDelivery)
            args += [places[delivery.webhook_id], delivery.audit_id, delivery.status, body]
        keys += [self._audit_key_index(entry.key), self._audit_actor_index(entry.actor)]
        args += [repr(_common.parse_timestamp(entry.at, "at")), _common.encode(entry)]
        return keys, args, webhook_keys


def _backup_of(reply: list[Any]) -> StoreBackup:
    """The backup script's reply as a :class:`StoreBackup` (decoding a long log takes a
    while: run off the loop)."""
    store_id, version = str(reply[0]), int(reply[1])
    flags, flag_versions, segments, segment_versions, plans, plan_versions, audit = (
        pairs(reply[i]) for i in range(2, 9)
    )
    sequence, tokens, secret = int(reply[9]), pairs(reply[10]), str(reply[11])
    policies, requests, webhooks, cursors = (pairs(reply[i]) for i in range(12, 16))
    entries = _audit_entries(audit)
    deliveries = [body for hashed in reply[16] for body in pairs(hashed).values()]
    return StoreBackup(
        created_at=utc_now_text(),
        source=BackupSource(
            kind="redis", store_id=store_id, schema_version=SCHEMA_VERSION, snapshot_version=version
        ),
        flags=_records(flags, flag_versions),
        segments=_records(segments, segment_versions),
        plans=_records(plans, plan_versions),
        audit=entries,
        audit_next_id=max(sequence, entries[-1].id if entries else 0) + 1,
        tokens=[tokens[token_id] for token_id in sorted(tokens)],
        server_secret=secret or None,
        approval_policies=[policies[i] for i in sorted(policies)],
        change_requests=[requests[i] for i in sorted(requests)],
        webhooks=[
            BackupWebhook(body=webhooks[i], cursor=int(cursors.get(i, "0")))
            for i in sorted(webhooks)
        ],
        webhook_deliveries=sorted(deliveries),
    )
