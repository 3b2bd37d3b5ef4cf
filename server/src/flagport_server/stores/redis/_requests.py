"""The Redis store's approval policies and change requests (docs/spec.md, "Approvals"): two
hashes under the store's hash tag, keys an older server never reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from flagport_server.stores import _common
from flagport_server.stores.base import ApprovalPolicy, ChangeRequest, RequestStatus
from flagport_server.stores.redis._connection import (
    SCHEMA_CHECK_LUA,
    SCHEMA_VERSION,
    RedisBase,
    Script,
    as_dict,
)

__all__ = ["RedisRequests"]

# KEYS: meta, policies. ARGV: schema version, id, body. 1: added; 0: the id is taken.
_ADD_POLICY: Final = Script(
    SCHEMA_CHECK_LUA + "\nreturn redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])\n"
)

# KEYS: meta, policies. ARGV: schema version, id. The removed body, or nil.
_REMOVE_POLICY: Final = Script(
    SCHEMA_CHECK_LUA
    + """
local body = redis.call('HGET', KEYS[2], ARGV[2])
if body then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return body
"""
)

# KEYS: meta, requests. ARGV: schema version, id, body, ids to drop...
_ADD_REQUEST: Final = Script(
    SCHEMA_CHECK_LUA
    + """
for i = 4, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS: meta, requests. ARGV: schema version, id, the status it must have, the new body,
# "1" if it must be applying ("0": not; the field is omitted when false).
_DECIDE_REQUEST: Final = Script(
    SCHEMA_CHECK_LUA
    + """
local body = redis.call('HGET', KEYS[2], ARGV[2])
if not body then
  return 0
end
local request = cjson.decode(body)
if request['status'] ~= ARGV[3] or (request['applying'] == true) ~= (ARGV[5] == '1') then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
"""
)


class RedisRequests(RedisBase):
    """Approval policies and change requests, a JSON body per hash field."""

    async def approval_policies(self) -> list[ApprovalPolicy]:
        rows = as_dict(await self._command("HGETALL", self._approval_policies))
        return _common.decode_each(sorted(rows.items()), _common.decode_policy)

    async def add_approval_policy(self, policy: ApprovalPolicy) -> bool:
        keys = [self._meta, self._approval_policies]
        args = [SCHEMA_VERSION, policy.id, _common.encode(policy)]
        return int(await self._script(_ADD_POLICY, keys, args)) == 1

    async def remove_approval_policy(self, policy_id: str) -> ApprovalPolicy | None:
        keys = [self._meta, self._approval_policies]
        body = await self._script(_REMOVE_POLICY, keys, [SCHEMA_VERSION, policy_id])
        return None if body is None else _common.decode_policy(body, policy_id)

    async def add_change_request(self, request: ChangeRequest, drop: Sequence[str]) -> None:
        keys = [self._meta, self._change_requests]
        args = [SCHEMA_VERSION, request.id, _common.encode(request), *drop]
        await self._script(_ADD_REQUEST, keys, args)

    async def change_requests(self) -> list[ChangeRequest]:
        rows = as_dict(await self._command("HGETALL", self._change_requests))
        found = _common.decode_each(rows.items(), _common.decode_request)
        return sorted(found, key=lambda r: (r.created_at, r.id))

    async def decide_change_request(
        self, decided: ChangeRequest, expected: RequestStatus, *, applying: bool = False
    ) -> bool:
        keys = [self._meta, self._change_requests]
        args = [SCHEMA_VERSION, decided.id, expected, _common.encode(decided), str(int(applying))]
        return int(await self._script(_DECIDE_REQUEST, keys, args)) == 1
