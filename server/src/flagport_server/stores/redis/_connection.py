"""The Redis store's connections, scripts and meta hash, which every concern of the store uses.

Every key shares one hash tag, so the whole store lives in one Cluster slot and every
multi-key operation is one atomic Lua script (EVALSHA, falling back to EVAL when the server
lost its script cache). The key names are all made here, so the layout (the package
docstring) has one home in code too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from flagport_server.errors import StoreError, StoreUnavailable
from flagport_server.stores import _common
from flagport_server.stores.base import Store
from flagport_server.stores.redis._url import RedisOptions

__all__ = [
    "INIT_LUA",
    "SCHEMA_CHECK_LUA",
    "SCHEMA_VERSION",
    "RedisBase",
    "Script",
    "as_dict",
    "error_text",
    "pairs",
]

T = TypeVar("T")

#: Bumped when the key layout changes; a store from a newer Flagport is refused.
SCHEMA_VERSION: Final = 1

# Scripts that check the schema version take the meta hash as KEYS[1] and the schema version
# this server knows as ARGV[1].

#: Creates the store's meta hash when it is missing (a fresh or wiped Redis): every caller
#: agrees on one store id (ARGV[2]) because scripts run one at a time.
INIT_LUA: Final = """
if redis.call('HEXISTS', KEYS[1], 'store_id') == 0 then
  redis.call('HSET', KEYS[1], 'store_id', ARGV[2], 'version', 0, 'schema_version', ARGV[1])
end
"""

#: Refuses, before anything is read or written, a store whose schema is newer than this
#: server knows: the script answers ``{'schema', <stored version>}`` and
#: :meth:`RedisBase._script` raises.
SCHEMA_CHECK_LUA: Final = """
local schema = tonumber(redis.call('HGET', KEYS[1], 'schema_version') or '0')
if schema > tonumber(ARGV[1]) then return {'schema', tostring(schema)} end
"""

# KEYS: meta, flags, segments, plans. ARGV: schema version, new store id, 'all' or 'meta'.
_META_SCRIPT: Final = (
    INIT_LUA
    + SCHEMA_CHECK_LUA
    + """
local meta = redis.call('HMGET', KEYS[1], 'store_id', 'version')
if ARGV[3] == 'all' then
  return {meta[1], meta[2], redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
          redis.call('HGETALL', KEYS[4])}
end
return {meta[1], meta[2]}
"""
)


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL when the server does not have it
    (a restarted Redis, a Cluster node that never saw it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: Redis | RedisCluster, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


_META = Script(_META_SCRIPT)


def error_text(error: BaseException, options: RedisOptions) -> str:
    """redis-py's message fit for ``/readyz`` and the log: without the passwords, and with
    each client's repr (Sentinel errors list the clients they tried, with every connection
    setting) cut down to the address it named."""
    text = str(error) or type(error).__name__
    parts: list[str] = []
    start = 0
    while (found := text.find("<redis.", start)) >= 0:
        depth, end = 0, found
        for end in range(found, len(text)):
            depth += {"<": 1, ">": -1}.get(text[end], 0)
            if depth == 0:
                break
        client = text[found : end + 1]
        host = _REPR_HOST.search(client)
        parts += [text[start:found], f"{host[1]}:{host[2]}" if host else "a Redis client"]
        start = end + 1
    text = "".join(parts) + text[start:]
    for secret in (options.password, options.sentinel_password):
        if secret:
            text = text.replace(secret, "***")
    return text


_REPR_HOST: Final = re.compile(r"\bhost=([^,)>]+),port=(\d+)")


class RedisBase(Store):
    """Connections to one Redis store (standalone, Sentinel or Cluster) and its key names."""

    kind = "redis"

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        tag = "{" + options.prefix + "}"
        self._tag = tag
        self._meta = f"{tag}:meta"
        self._flags = f"{tag}:flags"
        self._flag_versions = f"{tag}:flag_versions"
        self._segments = f"{tag}:segments"
        self._segment_versions = f"{tag}:segment_versions"
        self._audit = f"{tag}:audit"
        self._audit_ids = f"{tag}:audit:ids"
        self._audit_seq = f"{tag}:audit:seq"
        self._audit_time = f"{tag}:audit:time"
        self._tokens = f"{tag}:tokens"
        self._token_hashes = f"{tag}:token_hashes"
        self._workers = f"{tag}:workers"
        self._secrets = f"{tag}:secrets"
        self._plans = f"{tag}:plans"
        self._plan_versions = f"{tag}:plan_versions"
        self._leases = f"{tag}:leases"
        self._approval_policies = f"{tag}:approval_policies"
        self._change_requests = f"{tag}:change_requests"
        self._webhooks = f"{tag}:webhooks"
        self._webhook_cursors = f"{tag}:webhook_cursors"
        self.channel = f"{tag}:changes"
        self._client: Redis | RedisCluster | None = None
        self._sentinel: Sentinel | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        if options.service is not None:
            self.kind = "redis+sentinel"
        elif options.scheme == "rediss":
            self.kind = "rediss"

    def __repr__(self) -> str:
        return f"RedisStore({self.options.location!r})"

    def _connection_kwargs(self) -> dict[str, Any]:
        o = self.options
        kwargs: dict[str, Any] = {
            "username": o.username,
            "password": o.password,
            "socket_timeout": o.socket_timeout,
            "socket_connect_timeout": o.connect_timeout,
            # One immediate retry (a pooled connection to a Redis that restarted), no
            # backoff: an outage must answer 503 at once, not after seconds of retries.
            "retry": Retry(NoBackoff(), 1),
            "decode_responses": True,
            # A byte that is not UTF-8 (a body written with redis-cli) reads as a lone
            # surrogate, which the record's decoder refuses: that record is unreadable,
            # instead of the whole load failing and every flag, the kill switch's too, with it.
            "encoding_errors": "surrogateescape",
        }
        if o.scheme == "rediss" or (o.service is not None and o.ssl_ca_certs):
            kwargs.update(
                ssl=True,
                ssl_ca_certs=o.ssl_ca_certs,
                ssl_certfile=o.ssl_certfile,
                ssl_keyfile=o.ssl_keyfile,
                ssl_cert_reqs=o.ssl_cert_reqs,
                ssl_check_hostname=o.ssl_check_hostname,
            )
        return kwargs

    def _cluster_client(self) -> RedisCluster:
        kwargs = self._connection_kwargs()
        kwargs.pop("retry")
        host, port = self.options.hosts[0]
        return RedisCluster(host=host, port=port, **kwargs)

    async def _connect(self) -> Redis | RedisCluster:
        o = self.options
        if o.service is not None:
            kwargs = self._connection_kwargs()
            sentinel_kwargs = {
                "socket_timeout": o.socket_timeout,
                "socket_connect_timeout": o.connect_timeout,
                "password": o.sentinel_password,
                "retry": Retry(NoBackoff(), 0),
            }
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                o.hosts, sentinel_kwargs=sentinel_kwargs, **kwargs
            )
            client: Redis | RedisCluster = self._sentinel.master_for(o.service, db=o.db, **kwargs)
            return client
        if o.cluster:
            return self._cluster_client()
        host, port = o.hosts[0]
        plain = Redis(host=host, port=port, db=o.db, **self._connection_kwargs())
        if o.cluster is None:
            info = await plain.info("cluster")
            if info.get("cluster_enabled"):
                await plain.aclose()
                return self._cluster_client()
        return plain

    async def _ready(self) -> Redis | RedisCluster:
        if self._closed:
            raise StoreUnavailable(f"Redis store {self.options.location} is closed")
        if self._client is None:
            async with self._connect_lock:
                if self._client is None:
                    self._client = await self._connect()
        return self._client

    def _unavailable(self, error: BaseException) -> StoreError:
        where = self.options.location
        text = error_text(error, self.options)
        if isinstance(error, redis_errors.AuthenticationError):
            return StoreUnavailable(f"Redis store {where}: authentication failed ({text})")
        if isinstance(error, redis_errors.ResponseError) and not isinstance(
            error,
            redis_errors.ReadOnlyError | redis_errors.ClusterDownError | redis_errors.TryAgainError,
        ):
            return StoreError(f"Redis store {where}: {text}")
        return StoreUnavailable(f"Redis store {where} is unavailable: {text}")

    async def _run(self, operation: Callable[[Redis | RedisCluster], Awaitable[T]]) -> T:
        try:
            client = await self._ready()
            return await operation(client)
        except StoreError:
            raise
        except (TimeoutError, redis_errors.RedisError, OSError) as error:
            if isinstance(error, redis_errors.ConnectionError | OSError) and isinstance(
                self._client, RedisCluster
            ):
                # The Cluster client may be bound to a topology that is gone: start afresh.
                await self._drop_client()
            raise self._unavailable(error) from error

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``script``'s reply; :class:`StoreError` if it refused a newer schema
        (:data:`SCHEMA_CHECK_LUA`)."""

        async def run(client: Redis | RedisCluster) -> Any:
            return await script(client, keys, args)

        reply = await self._run(run)
        if isinstance(reply, list) and reply[:1] == ["schema"]:
            where = f"Redis store {self.options.location}"
            _common.check_schema_version(where, int(reply[1]), SCHEMA_VERSION)
        return reply

    async def _command(self, *command: Any) -> Any:
        """One Redis command (typed ``Any``: redis-py's async signatures are not precise)."""

        async def run(client: Redis | RedisCluster) -> Any:
            return await client.execute_command(*command)

        return await self._run(run)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _meta_call(self, *, full: bool) -> list[Any]:
        """``[store_id, version]`` (and with ``full`` the flags' and segments' hashes, flat),
        read in one script: the meta hash is created if missing, a newer schema refused."""
        keys = [self._meta, self._flags, self._segments, self._plans]
        args = [SCHEMA_VERSION, uuid.uuid4().hex, "all" if full else "meta"]
        reply: list[Any] = await self._script(_META, keys, args)
        return reply

    async def open(self) -> None:
        """Connect and create the store id if needed. Raises ``StoreUnavailable`` naming the
        server when Redis cannot be reached; the store then connects on a later call."""
        self._closed = False
        await self._meta_call(full=False)

    async def close(self) -> None:
        """Close the connections; later calls raise ``StoreUnavailable`` until ``open()``."""
        self._closed = True
        await self._drop_client()
        self._sentinel = None

    def _webhook_deliveries(self, webhook_id: str) -> str:
        """A webhook's delivery states (hash: audit id -> JSON); ``:delivered`` after it, the
        sorted set of its delivered audit ids."""
        return f"{self._tag}:wd:{webhook_id}"

    def _audit_key_index(self, key: str) -> str:
        return f"{self._tag}:audit:key:{key}"

    def _audit_actor_index(self, actor: str) -> str:
        return f"{self._tag}:audit:actor:{actor}"

    def _lease_key(self, name: str) -> str:
        return f"{self._tag}:lease:{name}"

    def _outcome_key(self, key: str, minute: int, cohort: str) -> str:
        return f"{self._tag}:oc:{key}|{minute}|{cohort}"


def as_dict(reply: Any) -> dict[str, str]:
    """HGETALL's reply: a dict (RESP2 client parsing) or a flat list."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return pairs(list(reply))


def pairs(flat: list[Any]) -> dict[str, str]:
    """HGETALL's flat reply from a script (``[k1, v1, k2, v2, ...]``) as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
