"""The Redis store's webhooks (keys of their own: older servers ignore them).

{p}:webhooks               hash: id -> JSON webhook record
{p}:webhook_cursors        hash: id -> the webhook's cursor over audit ids
{p}:wd:<id>                hash: audit id -> JSON delivery state of that entry
{p}:wd:<id>:delivered      sorted set of the delivered audit ids (the newest are kept)
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.redis._audit import split_stored_entry
from flagport_server.stores.redis._connection import (
    SCHEMA_CHECK_LUA,
    SCHEMA_VERSION,
    RedisBase,
    Script,
    as_dict,
)
from flagport_server.stores.webhook_records import (
    DELIVERED_KEPT,
    WebhookDelivery,
    WebhookRecord,
)

__all__ = ["RedisWebhooks"]

_record_decoder = msgspec.json.Decoder(WebhookRecord)
_delivery_decoder = msgspec.json.Decoder(WebhookDelivery)

# KEYS: meta, webhooks, cursors. ARGV: schema version, id, body, cursor, limit.
_ADD: Final = Script(
    SCHEMA_CHECK_LUA
    + """
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return 1
"""
)

# KEYS: webhooks, cursors, deliveries, delivered. ARGV: id. Answers the removed body.
_REMOVE: Final = Script("""
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
return body
""")

# KEYS: webhooks, cursors, deliveries, delivered. ARGV: id, cursor ('' to keep), audit id
# ('' for no delivery), status, body, delivered entries kept.
_RECORD: Final = Script("""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
  if ARGV[4] == 'delivered' then
    redis.call('ZADD', KEYS[4], ARGV[3], ARGV[3])
    local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[6])
    if extra > 0 then
      local old = redis.call('ZRANGE', KEYS[4], 0, extra - 1)
      redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1)
      redis.call('HDEL', KEYS[3], unpack(old))
    end
  else
    redis.call('ZREM', KEYS[4], ARGV[3])
  end
end
return 1
""")


class RedisWebhooks(RedisBase):
    """Webhooks, their cursors and deliveries; each write one script."""

    def _record_keys(self, webhook_id: str) -> list[str]:
        deliveries = self._webhook_deliveries(webhook_id)
        return [
            self._webhooks,
            self._webhook_cursors,
            deliveries,
            f"{deliveries}:delivered",
        ]

    async def audit_after(self, after_id: int, limit: int) -> list[AuditEntry]:
        size = min(max(limit, 1), _common.MAX_AUDIT_LIMIT)

        async def read(client: Redis | RedisCluster) -> list[AuditEntry]:
            ids = await client.execute_command(
                "ZRANGEBYSCORE", self._audit_ids, f"({after_id}", "+inf", "LIMIT", 0, size
            )
            if not ids:
                return []
            values = await client.execute_command("HMGET", self._audit, *ids)
            entries: list[AuditEntry] = []
            for id_, value in zip(ids, values, strict=True):
                if value is None:
                    continue
                version, _, body = split_stored_entry(str(value))
                entry = _common.decode_audit(body, str(id_))
                entries.append(
                    msgspec.structs.replace(entry, id=int(id_), snapshot_version=version)
                )
            return entries

        return await self._run(read)

    async def add_webhook(self, record: WebhookRecord, cursor: int, limit: int) -> bool:
        keys = [self._meta, *self._record_keys(record.id)[:2]]
        args = [SCHEMA_VERSION, record.id, _common.encode(record), cursor, limit]
        return bool(int(await self._script(_ADD, keys, args)))

    async def webhooks(self) -> list[WebhookRecord]:
        rows = as_dict(await self._command("HGETALL", self._webhooks))
        records = [_record_decoder.decode(body) for body in rows.values()]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def remove_webhook(self, webhook_id: str) -> WebhookRecord | None:
        body = await self._script(_REMOVE, self._record_keys(webhook_id), [webhook_id])
        return None if body is None else _record_decoder.decode(body)

    async def webhook_cursor(self, webhook_id: str) -> int | None:
        value = await self._command("HGET", self._webhook_cursors, webhook_id)
        return None if value is None else int(value)

    async def record_delivery(
        self, webhook_id: str, delivery: WebhookDelivery | None, cursor: int | None
    ) -> bool:
        args: list[Any] = [webhook_id, "" if cursor is None else cursor]
        if delivery is None:
            args += ["", "", "", DELIVERED_KEPT]
        else:
            args += [delivery.audit_id, delivery.status, _common.encode(delivery), DELIVERED_KEPT]
        return bool(int(await self._script(_RECORD, self._record_keys(webhook_id), args)))

    async def delivery(self, webhook_id: str, audit_id: int) -> WebhookDelivery | None:
        body = await self._command("HGET", self._webhook_deliveries(webhook_id), audit_id)
        return None if body is None else _delivery_decoder.decode(body)

    async def deliveries(
        self, webhook_id: str | None, *, failed: bool, limit: int
    ) -> list[WebhookDelivery]:
        ids = [webhook_id] if webhook_id is not None else [w.id for w in await self.webhooks()]
        found: list[WebhookDelivery] = []
        for each in ids:
            rows = as_dict(await self._command("HGETALL", self._webhook_deliveries(each)))
            found += [_delivery_decoder.decode(body) for body in rows.values()]
        if failed:
            found = [d for d in found if d.status != "delivered"]
        found.sort(key=lambda d: (-d.audit_id, d.webhook_id))
        return found[: max(1, min(limit, _common.MAX_AUDIT_LIMIT))]
