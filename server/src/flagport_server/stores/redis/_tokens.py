"""The Redis store's API tokens (only their secrets' hashes)."""

from __future__ import annotations

from typing import Final

import msgspec

from flagport_server.errors import AlreadyExists
from flagport_server.stores import _common
from flagport_server.stores.base import TokenRecord
from flagport_server.stores.redis._connection import (
    SCHEMA_CHECK_LUA,
    SCHEMA_VERSION,
    RedisBase,
    Script,
    as_dict,
)

__all__ = ["RedisTokens"]

# KEYS: meta, tokens, token_hashes. ARGV: schema version, id, secret hash, body, name.
# 1: added; 0: the id or the secret is taken; 2: the name is.
_ADD_TOKEN_SCRIPT: Final = (
    SCHEMA_CHECK_LUA
    + """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  return 0
end
local name = string.lower(ARGV[5])
for _, body in ipairs(redis.call('HVALS', KEYS[2])) do
  if string.lower(cjson.decode(body)['name']) == name then
    return 2
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
return 1
"""
)

# KEYS: meta, tokens. ARGV: schema version, id, the body it must still have, the new body.
_REVOKE_SCRIPT: Final = (
    SCHEMA_CHECK_LUA
    + """
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
  return 1
end
return 0
"""
)

# KEYS: meta, tokens, token_hashes. ARGV: schema version, id, the secret hash it must still
# have, the new body, the new secret hash. 1: rotated; 0: unknown, revoked or rotated meanwhile.
_ROTATE_SCRIPT: Final = (
    SCHEMA_CHECK_LUA
    + """
local body = redis.call('HGET', KEYS[2], ARGV[2])
if not body then
  return 0
end
local stored = cjson.decode(body)
local revoked = stored['revoked_at']
if stored['secret_hash'] ~= ARGV[3] or (revoked ~= nil and revoked ~= cjson.null) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[2])
return 1
"""
)

_ADD_TOKEN = Script(_ADD_TOKEN_SCRIPT)
_ROTATE = Script(_ROTATE_SCRIPT)
_REVOKE = Script(_REVOKE_SCRIPT)


class RedisTokens(RedisBase):
    """Tokens: added, listed, revoked, rotated."""

    async def add_token(self, token: TokenRecord) -> None:
        """Store ``token``; ``AlreadyExists`` if its id, its secret hash or its name (ASCII
        case-insensitively, revoked tokens included) is taken."""
        keys = [self._meta, self._tokens, self._token_hashes]
        args = [SCHEMA_VERSION, token.id, token.secret_hash, _common.encode(token), token.name]
        added = int(await self._script(_ADD_TOKEN, keys, args))
        if added != 1:
            raise AlreadyExists(_common.token_taken(token, "name" if added == 2 else "id"))

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        rows = as_dict(await self._command("HGETALL", self._tokens))
        tokens = [_common.decode_token(body, id_) for id_, body in rows.items()]
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def revoke_token(self, token_id: str, at: str) -> TokenRecord | None:
        """Mark revoked at ``at`` (compare-and-set on the stored body, so two revocations
        keep the first time). ``None`` if unknown."""
        while True:
            body = await self._command("HGET", self._tokens, token_id)
            if body is None:
                return None
            token = _common.decode_token(body, token_id)
            if token.revoked_at is not None:
                return token
            revoked = msgspec.structs.replace(token, revoked_at=at)
            keys = [self._meta, self._tokens]
            args = [SCHEMA_VERSION, token_id, body, _common.encode(revoked)]
            if int(await self._script(_REVOKE, keys, args)):
                return revoked

    async def rotate_token(self, rotated: TokenRecord, previous_hash: str) -> bool:
        """Store ``rotated`` over token ``rotated.id`` if it is not revoked and its secret
        hash is still ``previous_hash`` (one script: atomic). The retired hash stays in the
        hash index, so no later token can take it."""
        keys = [self._meta, self._tokens, self._token_hashes]
        args = [
            SCHEMA_VERSION,
            rotated.id,
            previous_hash,
            _common.encode(rotated),
            rotated.secret_hash,
        ]
        return int(await self._script(_ROTATE, keys, args)) == 1
