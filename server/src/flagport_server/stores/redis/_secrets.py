"""The Redis store's server secret (a key of its own: older servers ignore it), kept as hex
text (the connection decodes replies as text)."""

from __future__ import annotations

import secrets

from flagport_server.errors import StoreError
from flagport_server.stores.base import SERVER_SECRET_BYTES
from flagport_server.stores.redis._connection import RedisBase

__all__ = ["SERVER_SECRET_FIELD", "RedisSecrets"]

SERVER_SECRET_FIELD = "server"


class RedisSecrets(RedisBase):
    """The server secret: made once (``HSETNX``: the first worker wins), read by every
    worker and instance, rotated on demand."""

    async def server_secret(self) -> bytes:
        found = await self._command("HGET", self._secrets, SERVER_SECRET_FIELD)
        if found is None:
            await self._command(
                "HSETNX", self._secrets, SERVER_SECRET_FIELD, secrets.token_hex(SERVER_SECRET_BYTES)
            )
            found = await self._command("HGET", self._secrets, SERVER_SECRET_FIELD)
        return _secret(found)

    async def rotate_server_secret(self) -> bytes:
        fresh = secrets.token_hex(SERVER_SECRET_BYTES)
        await self._command("HSET", self._secrets, SERVER_SECRET_FIELD, fresh)
        return bytes.fromhex(fresh)


def _secret(value: object) -> bytes:
    try:
        secret = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != SERVER_SECRET_BYTES:
        raise StoreError("the stored server secret is damaged: rotate it (flags secret rotate)")
    return secret
