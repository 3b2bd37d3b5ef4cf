"""The Redis store's audit log (appended by each commit's script, read here)."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from flagport_server.stores import _common
from flagport_server.stores.base import AuditEntry, AuditQuery
from flagport_server.stores.redis._connection import RedisBase, Script

__all__ = ["RedisAudit", "split_stored_entry"]

#: Ids read per round trip when paging an audit index.
_AUDIT_CHUNK: Final = 500

# KEYS: audit, audit:ids, audit:time, then two filter indexes per entry (its key's, its
# actor's). ARGV: the ids of the entries to delete.
_PRUNE: Final = Script(
    """
for i, id in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[2 + 2 * i], id)
  redis.call('ZREM', KEYS[3 + 2 * i], id)
end
return #ARGV
"""
)


def split_stored_entry(value: str) -> tuple[int, float, str]:
    """An audit hash value, ``"<snapshot version> <at as epoch seconds> <JSON body>"``, as
    its three parts."""
    version_text, at_text, body = value.split(" ", 2)
    return int(version_text), float(at_text), body


class RedisAudit(RedisBase):
    """Reads of the audit log, newest first, through its indexes."""

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest (highest id) first, at most ``query.limit``
        (itself capped at 1000). Pages through the most selective index (the key's, the
        actor's, the time index or all ids) and checks the other filters on each entry."""
        limit = _common.audit_limit(query)
        since = None if query.since is None else _common.parse_timestamp(query.since, "since")
        upper = "+inf" if query.before_id is None else f"({query.before_id}"
        if query.key is not None:
            index = self._audit_key_index(query.key)
        elif query.actor is not None:
            index = self._audit_actor_index(query.actor)
        else:
            index = self._audit_ids

        async def read(client: Redis | RedisCluster) -> list[AuditEntry]:
            found: list[AuditEntry] = []
            if since is not None and query.key is None and query.actor is None:
                # Only the time filter: the ids since then, from the time index.
                ids = [
                    int(i)
                    for i in await client.execute_command(
                        "ZRANGEBYSCORE", self._audit_time, repr(since), "+inf"
                    )
                ]
                ids = sorted(
                    (i for i in ids if query.before_id is None or i < query.before_id), reverse=True
                )
                for start in range(0, len(ids), _AUDIT_CHUNK):
                    chunk = ids[start : start + _AUDIT_CHUNK]
                    values = await client.execute_command("HMGET", self._audit, *chunk)
                    found += self._matching(chunk, values, query, since)
                    if len(found) >= limit:
                        break
                return found[:limit]
            top = upper
            while len(found) < limit:
                chunk = [
                    int(i)
                    for i in await client.execute_command(
                        "ZREVRANGEBYSCORE", index, top, "-inf", "LIMIT", 0, _AUDIT_CHUNK
                    )
                ]
                if not chunk:
                    break
                values = await client.execute_command("HMGET", self._audit, *chunk)
                found += self._matching(chunk, values, query, since)
                top = f"({chunk[-1]}"
            return found[:limit]

        return await self._run(read)

    def _matching(
        self, ids: list[int], values: list[Any], query: AuditQuery, since: float | None
    ) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        for id_, value in zip(ids, values, strict=True):
            if value is None:
                continue
            version, at_ts, body = split_stored_entry(str(value))
            if since is not None and at_ts < since:
                continue
            entry = _common.decode_audit(body, str(id_))
            if query.key is not None and entry.key != query.key:
                continue
            if query.actor is not None and entry.actor != query.actor:
                continue
            entries.append(msgspec.structs.replace(entry, id=id_, snapshot_version=version))
        return entries

    async def prune_audit(self, before: float, limit: int = 1000) -> int:
        """The oldest entries before ``before`` (the time index), read with their bodies to
        name their filter indexes, then deleted in one script. Commits meanwhile only add
        newer entries, so what was read is what is deleted."""
        ids = [
            str(i)
            for i in await self._command(
                "ZRANGEBYSCORE", self._audit_time, "-inf", f"({before!r}", "LIMIT", 0, limit
            )
        ]
        if not ids:
            return 0
        values = await self._command("HMGET", self._audit, *ids)
        keys = [self._audit, self._audit_ids, self._audit_time]
        for id_, value in zip(ids, values, strict=True):
            if value is None:  # no body: its indexes cannot be named; the id entries go
                keys += [self._audit_ids, self._audit_time]
                continue
            entry = _common.decode_audit(split_stored_entry(str(value))[2], id_)
            keys += [self._audit_key_index(entry.key), self._audit_actor_index(entry.actor)]
        return int(await self._script(_PRUNE, keys, ids))
