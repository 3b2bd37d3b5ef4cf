"""The shared store: Redis, for several server instances (standalone, TLS, Sentinel, Cluster).

URLs (:func:`store_from_url`)::

    redis://[[user]:password@]host[:6379][/db][?options]
    rediss://...                                   TLS
    redis+sentinel://[[user]:password@]h1:26379,h2:26379/<service>[/<db>][?options]

Options (query string):

* ``prefix=flagport``: the hash tag every key lives under (``{flagport}:...``), so one Redis
  can hold several independent Flagport stores (staging and production);
* ``cluster=auto|true|false``: Redis Cluster mode (``auto``, the default, asks the server);
* ``socket_timeout=1.0``, ``connect_timeout=0.5`` (seconds): short, so writes fail fast
  with 503 while Redis is unreachable instead of hanging the admin API;
* TLS (``rediss://``): ``ssl_ca_certs=/path/ca.pem`` (the CA that signed the server's
  certificate), ``ssl_certfile=`` and ``ssl_keyfile=`` (a client certificate, when the server
  asks for one), ``ssl_cert_reqs=required|optional|none``, ``ssl_check_hostname=true|false``;
* Sentinel: ``sentinel_password=`` (when the sentinels themselves need one; the URL's password
  is for the Redis primary and replicas).

Layout: every key shares one hash tag, so the whole store lives in one Cluster slot and every
multi-key operation is one atomic Lua script (EVALSHA, falling back to EVAL when the server
lost its script cache)::

    {p}:meta              hash: store_id, version, schema_version
    {p}:flags, {p}:segments                   hash: key -> JSON body
    {p}:flag_versions, {p}:segment_versions   hash: key -> version (the compare-and-set guard)
    {p}:audit             hash: id -> "<snapshot version> <at as epoch seconds> <JSON body>"
    {p}:audit:seq         counter (ids are never reused)
    {p}:audit:ids         sorted set of ids; {p}:audit:time by time;
    {p}:audit:key:<key>, {p}:audit:actor:<actor>   sorted sets of ids (the audit filters)
    {p}:tokens            hash: id -> JSON; {p}:token_hashes: secret hash -> id
    {p}:workers           hash: ["instance", pid] -> JSON WorkerStatus
    {p}:commit:<uuid>     a commit's reply for 5 minutes: a retried commit is not applied twice
    {p}:st:h:<flag>|<hour>            hash: variant -> evaluations in that hour (7 days)
    {p}:st:m:<flag>|<hour>            hash: "<minute>|<variant>" -> evaluations (48 hours)
    {p}:st:u:<flag>|<hour>|<variant>  HyperLogLog of the hour's units (7 days)
    {p}:st:r:<flag>|<hour>            hash: variant -> of those evaluations, the ones
                                      in-process clients reported (7 days)
    {p}:st:first, {p}:st:last         sorted sets: flag -> first / last seen (epoch seconds)

A commit publishes the new snapshot version on the channel ``{p}:changes`` from inside its
script, so a notification can never be lost between the commit and the publish; the
server's periodic version check repairs notifications missed while a subscriber reconnects.

A store that disappears (Redis restarted empty, ``FLUSHALL``) is initialised again with a
new store id on first use; servers notice the different id and keep serving the snapshot they
have (:mod:`flagport_server.state`), so a wiped Redis never silently wipes the flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import msgspec
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from flagport.engine import Flag, Segment
from flagport_server.errors import AlreadyExists, InvalidInput, StoreError, StoreUnavailable
from flagport_server.stores import _common, redact_store_url
from flagport_server.stores.base import (
    STATS_HOURS_KEPT,
    STATS_MINUTES_KEPT,
    AuditEntry,
    AuditQuery,
    CommitResult,
    FlagSeen,
    Mutation,
    StatsBatch,
    StatsView,
    Store,
    StoreState,
    TokenRecord,
    WorkerStatus,
)

__all__ = ["RedisOptions", "RedisStore", "parse_redis_url", "store_from_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
#: Registry entries of workers silent this long are pruned (pids change on every restart).
_WORKER_RETENTION_S: Final = 86_400.0
#: How long a commit's reply is kept so that a retried EVALSHA returns it instead of
#: applying the commit twice.
_COMMIT_REPLY_TTL_S: Final = 300
#: Ids read per round trip when paging an audit index.
_AUDIT_CHUNK: Final = 500
#: Units per PFADD (at least 100 per command, except a batch's last few) and commands per
#: pipeline round trip when stats are flushed.
_PFADD_CHUNK: Final = 1000
_PIPELINE_CHUNK: Final = 200

_SCHEMES: Final = ("redis", "rediss", "redis+sentinel")
_BOOL: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_OPTIONS: Final = frozenset(
    {
        "prefix",
        "cluster",
        "socket_timeout",
        "connect_timeout",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "sentinel_password",
    }
)

# -- Lua ------------------------------------------------------------------------------------

# Creates the store's meta row when it is missing (a fresh or wiped Redis): every caller
# agrees on one store id because scripts run one at a time.
_INIT_LUA: Final = """
if redis.call('HEXISTS', KEYS[1], 'store_id') == 0 then
  redis.call('HSET', KEYS[1], 'store_id', ARGV[1], 'version', 0, 'schema_version', ARGV[2])
end
"""

_META_SCRIPT: Final = (
    _INIT_LUA
    + """
local meta = redis.call('HMGET', KEYS[1], 'store_id', 'version', 'schema_version')
if ARGV[3] == 'all' then
  return {meta[1], meta[2], meta[3], redis.call('HGETALL', KEYS[2]),
          redis.call('HGETALL', KEYS[3])}
end
return {meta[1], meta[2], meta[3]}
"""
)

# KEYS: meta, flags, flag_versions, segments, segment_versions, audit, audit:ids, audit:seq,
#       commit reply, audit:time, then per audit entry its key index and actor index.
# ARGV: new store id, schema version, channel, reply ttl, number of mutations, then six per
#       mutation (kind, key, op, expected: '*' any / '' absent / n, version, body), then the
#       number of audit entries and two per entry (at as epoch seconds, body).
_COMMIT_SCRIPT: Final = (
    _INIT_LUA
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
    if kind == 'segment' then versions = KEYS[5] end
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
  if kind == 'segment' then bodies, versions = KEYS[4], KEYS[5] end
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
  redis.call('ZADD', KEYS[9 + 2 * a], id, id)
  redis.call('ZADD', KEYS[10 + 2 * a], id, id)
  reply = reply .. ' ' .. id
  i = i + 2
end
redis.call('SET', KEYS[9], reply, 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[3], version)
return {'ok', reply}
"""
)

_ADD_TOKEN_SCRIPT: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
local name = string.lower(ARGV[4])
for _, body in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.lower(cjson.decode(body)['name']) == name then
    return 2
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_REPLACE_IF_SCRIPT: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


class _Script:
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


_META = _Script(_META_SCRIPT)
_COMMIT = _Script(_COMMIT_SCRIPT)
_ADD_TOKEN = _Script(_ADD_TOKEN_SCRIPT)
_REPLACE_IF = _Script(_REPLACE_IF_SCRIPT)

# -- URLs -----------------------------------------------------------------------------------


class RedisOptions(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed store URL. ``location`` names the server(s) for messages, never the
    password."""

    scheme: str
    hosts: list[tuple[str, int]]
    db: int = 0
    username: str | None = None
    password: str | None = None
    service: str | None = None  # Sentinel
    prefix: str = "flagport"
    cluster: bool | None = None  # None: ask the server
    socket_timeout: float = 1.0
    connect_timeout: float = 0.5
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = False
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        # The generated repr would show both passwords to whoever logs or prints the options.
        return f"RedisOptions({self.location!r})"

    @property
    def location(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.service is not None:
            return f"{self.scheme}://{hosts}/{self.service}/{self.db}"
        return f"{self.scheme}://{hosts}/{self.db}"


def _error_text(error: BaseException, options: RedisOptions) -> str:
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


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, path="store_url")


def _parse_hosts(netloc: str, default_port: int, shown: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        if not part:
            raise _invalid(f"{shown}: empty host")
        if part.startswith("["):  # [::1]:6379
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise _invalid(f"{shown}: port {port_text!r} is not a number") from None
        if not host or not 0 < port < 65536:
            raise _invalid(f"{shown}: bad host {part!r}")
        hosts.append((host, port))
    return hosts


def parse_redis_url(url: str) -> RedisOptions:
    """Check and parse a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL without
    connecting. :raises InvalidInput: naming the problem, never repeating the password."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in _SCHEMES:
        raise _invalid(f"not a Redis store URL (scheme {scheme!r})")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    shown = redact_store_url(url)
    netloc, _, path_query = hostpart.partition("/")
    path, _, query = path_query.partition("?")
    if "?" in netloc:  # redis://host?x=1 (no path)
        netloc, _, query = netloc.partition("?")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
        if not colon:  # redis://password@host is a common mistake; treat it as a password
            username, password = None, urllib.parse.unquote(user)
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts = _parse_hosts(netloc, default_port, shown)
    parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
    service = None
    if scheme == "redis+sentinel":
        if not parts:
            raise _invalid(f"{shown}: a Sentinel URL names the service: .../<service>/<db>")
        service, parts = parts[0], parts[1:]
    elif len(hosts) > 1:
        raise _invalid(f"{shown}: several hosts are only for redis+sentinel:// URLs")
    if len(parts) > 1:
        raise _invalid(f"{shown}: the path is /<db> (a number)")
    try:
        db = int(parts[0]) if parts else 0
    except ValueError:
        raise _invalid(f"{shown}: database {parts[0]!r} is not a number") from None
    options: dict[str, Any] = {}
    for name, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if name not in _OPTIONS:
            raise _invalid(
                f"{shown}: unknown option {name!r}; known: {', '.join(sorted(_OPTIONS))}"
            )
        value = values[-1]
        if name in ("socket_timeout", "connect_timeout"):
            try:
                options[name] = float(value)
            except ValueError:
                raise _invalid(f"{shown}: {name}={value!r} is not a number") from None
            if options[name] <= 0:
                raise _invalid(f"{shown}: {name} must be positive")
        elif name == "cluster":
            if value.lower() == "auto":
                options[name] = None
            elif value.lower() in _BOOL:
                options[name] = _BOOL[value.lower()]
            else:
                raise _invalid(f"{shown}: cluster must be auto, true or false")
        elif name == "ssl_check_hostname":
            if value.lower() not in _BOOL:
                raise _invalid(f"{shown}: {name} must be true or false")
            options[name] = _BOOL[value.lower()]
        elif name == "ssl_cert_reqs":
            if value not in ("required", "optional", "none"):
                raise _invalid(f"{shown}: ssl_cert_reqs must be required, optional or none")
            options[name] = value
        elif name == "prefix":
            if not value or any(c in value for c in "{}: "):
                raise _invalid(
                    f"{shown}: prefix must be non-empty, without braces, colons or spaces"
                )
            options[name] = value
        else:
            options[name] = value
    if scheme == "redis" and any(n.startswith("ssl_") for n in options):
        raise _invalid(f"{shown}: ssl_* options need a rediss:// URL")
    if options.get("cluster") and (scheme == "redis+sentinel" or db != 0):
        raise _invalid(f"{shown}: Redis Cluster has only database 0 and no Sentinel")
    return RedisOptions(
        scheme=scheme,
        hosts=hosts,
        db=db,
        username=username,
        password=password,
        service=service,
        **options,
    )


def store_from_url(url: str) -> RedisStore:
    """The store for a Redis URL, not yet connected (``open_store`` calls this)."""
    return RedisStore(parse_redis_url(url))


# -- the store ------------------------------------------------------------------------------


class RedisStore(Store):
    """A :class:`~flagport_server.stores.base.Store` in Redis, shared by every instance.

    Connections are made lazily and again after failures, so a store unreachable at
    :meth:`open` starts working once Redis is back. Every Redis error becomes
    :class:`~flagport_server.errors.StoreUnavailable` naming the server (never the password).
    """

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

    # -- connections ------------------------------------------------------------------------

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
        text = _error_text(error, self.options)
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

    async def _script(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        async def run(client: Redis | RedisCluster) -> Any:
            return await script(client, keys, args)

        return await self._run(run)

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

    # -- lifecycle --------------------------------------------------------------------------

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

    # -- configuration ----------------------------------------------------------------------

    async def _meta_call(self, *, full: bool) -> list[Any]:
        keys = [self._meta, self._flags, self._segments]
        args = [uuid.uuid4().hex, SCHEMA_VERSION, "all" if full else "meta"]
        reply: list[Any] = await self._script(_META, keys, args)
        schema = int(reply[2] or 0)
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"Redis store {self.options.location}: schema version {schema} was written "
                f"by a newer Flagport (this one knows {SCHEMA_VERSION})"
            )
        return reply

    async def load(self) -> StoreState:
        """All flags and segments at one snapshot version (one script: atomic), key order."""
        reply = await self._meta_call(full=True)
        return _common.read_state(
            str(reply[0]),
            int(reply[1]),
            _pairs(reply[3]).items(),
            _pairs(reply[4]).items(),
        )

    async def snapshot_version(self) -> tuple[str, int]:
        """``(store_id, version)``: one small script."""
        reply = await self._meta_call(full=False)
        return str(reply[0]), int(reply[1])

    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        """Check every guard, apply the batch, bump the version, append the audit entries and
        publish the new version, in one Lua script (atomic, also on a Cluster)."""
        for mutation in mutations:
            _common.check_mutation(mutation)
        stamped = [(_common.parse_timestamp(e.at, "at"), _common.encode(e)) for e in audit]
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
        ]
        args: list[Any] = [
            uuid.uuid4().hex,
            SCHEMA_VERSION,
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
                str(value.version) if isinstance(value, Flag | Segment) else "0",
                _common.encode(value) if value is not None else "",
            ]
        args.append(len(audit))
        for entry, (at_ts, body) in zip(audit, stamped, strict=True):
            keys += [self._audit_key_index(entry.key), self._audit_actor_index(entry.actor)]
            args += [repr(at_ts), body]
        reply: list[Any] = await self._script(_COMMIT, keys, args)
        if reply[0] == "conflict":
            from flagport_server.errors import VersionConflict

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
                reason = _error_text(error, self.options)
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

    # -- audit ------------------------------------------------------------------------------

    def _audit_key_index(self, key: str) -> str:
        return f"{self._tag}:audit:key:{key}"

    def _audit_actor_index(self, actor: str) -> str:
        return f"{self._tag}:audit:actor:{actor}"

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
            version_text, at_text, body = str(value).split(" ", 2)
            if since is not None and float(at_text) < since:
                continue
            entry = _common.decode_audit(body, str(id_))
            if query.key is not None and entry.key != query.key:
                continue
            if query.actor is not None and entry.actor != query.actor:
                continue
            entries.append(
                msgspec.structs.replace(entry, id=id_, snapshot_version=int(version_text))
            )
        return entries

    # -- tokens -----------------------------------------------------------------------------

    async def add_token(self, token: TokenRecord) -> None:
        """Store ``token``; ``AlreadyExists`` if its id, its secret hash or its name (ASCII
        case-insensitively, revoked tokens included) is taken."""
        keys = [self._tokens, self._token_hashes]
        args = [token.id, token.secret_hash, _common.encode(token), token.name]
        added = int(await self._script(_ADD_TOKEN, keys, args))
        if added != 1:
            raise AlreadyExists(_common.token_taken(token, "name" if added == 2 else "id"))

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        rows = _as_dict(await self._command("HGETALL", self._tokens))
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
            if int(
                await self._script(
                    _REPLACE_IF, [self._tokens], [token_id, body, _common.encode(revoked)]
                )
            ):
                return revoked

    # -- propagation registry ---------------------------------------------------------------

    @staticmethod
    def _worker_field(instance: str, pid: int) -> str:
        return msgspec.json.encode([instance, pid]).decode()

    async def heartbeat(self, status: WorkerStatus) -> None:
        field = self._worker_field(status.instance, status.pid)
        await self._command("HSET", self._workers, field, _common.encode(status))

    async def workers(self, max_age: float, now: float) -> list[WorkerStatus]:
        """Workers whose last heartbeat is at most ``max_age`` seconds before ``now``, by
        instance and pid; entries silent for a day are pruned on the way."""
        rows = _as_dict(await self._command("HGETALL", self._workers))
        live: list[WorkerStatus] = []
        stale: list[str] = []
        for field, body in rows.items():
            try:
                status = msgspec.json.decode(body, type=WorkerStatus)
            except msgspec.DecodeError:
                stale.append(field)
                continue
            if status.heartbeat_at < now - _WORKER_RETENTION_S:
                stale.append(field)
            elif status.heartbeat_at >= now - max_age:
                live.append(status)
        if stale:
            with contextlib.suppress(StoreError):
                await self._command("HDEL", self._workers, *stale)
        return sorted(live, key=lambda s: (s.instance, s.pid))

    async def forget_worker(self, instance: str, pid: int) -> None:
        field = self._worker_field(instance, pid)
        await self._command("HDEL", self._workers, field)

    # -- stats ------------------------------------------------------------------------------

    def _stats_key(self, kind: str, flag: str, hour: int, variant: str | None = None) -> str:
        # Flag keys cannot hold "|"; the variant (any text) comes last.
        tail = f"|{variant}" if variant is not None else ""
        return f"{self._tag}:st:{kind}:{flag}|{hour}{tail}"

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in non-transactional pipelines of bounded size."""

        async def run(client: Redis | RedisCluster) -> list[Any]:
            replies: list[Any] = []
            for start in range(0, len(commands), _PIPELINE_CHUNK):
                if isinstance(client, RedisCluster):
                    pipe: Any = client.pipeline()
                else:
                    pipe = client.pipeline(transaction=False)
                for command in commands[start : start + _PIPELINE_CHUNK]:
                    pipe.execute_command(*command)
                replies.extend(await pipe.execute())
            return replies

        return await self._run(run)

    async def record_stats(self, batch: StatsBatch, now: float) -> None:
        """Pipelined: HINCRBY per minute and hour, PFADD in chunks of up to 1,000 units, ZADD
        GT/LT for last/first seen; every stats key expires with its retention window."""
        hour_keep = (STATS_HOURS_KEPT + 2) * 3600
        minute_keep = STATS_MINUTES_KEPT * 60 + 3600
        commands: list[tuple[Any, ...]] = []
        # Time to live relative to ``now`` (the caller's clock, not Redis's): data already
        # past its retention is not written at all.
        expiries: dict[str, int] = {}
        for flag, variant, minute, n in batch.counts:
            hour = minute - minute % 3600
            hourly = self._stats_key("h", flag, hour)
            minutely = self._stats_key("m", flag, hour)
            if hour + hour_keep > now:
                commands.append(("HINCRBY", hourly, variant, n))
                expiries[hourly] = int(hour + hour_keep - now)
            if hour + minute_keep > now:
                commands.append(("HINCRBY", minutely, f"{minute}|{variant}", n))
                expiries[minutely] = int(hour + minute_keep - now)
        for flag, variant, hour, units in batch.units:
            if hour + hour_keep <= now:
                continue
            key = self._stats_key("u", flag, hour, variant)
            for start in range(0, len(units), _PFADD_CHUNK):
                commands.append(("PFADD", key, *units[start : start + _PFADD_CHUNK]))
            # The hour's hash lists the variants whose sketches exist.
            hourly = self._stats_key("h", flag, hour)
            commands.append(("HINCRBY", hourly, variant, 0))
            expiries[key] = expiries[hourly] = int(hour + hour_keep - now)
        for flag, variant, hour, n in batch.reported:
            if hour + hour_keep > now:
                reported = self._stats_key("r", flag, hour)
                commands.append(("HINCRBY", reported, variant, n))
                expiries[reported] = int(hour + hour_keep - now)
        for key, ttl in expiries.items():
            commands.append(("EXPIRE", key, max(ttl, 1)))
        for flag, first, last in batch.seen:
            commands.append(("ZADD", f"{self._tag}:st:first", "LT", first, flag))
            commands.append(("ZADD", f"{self._tag}:st:last", "GT", last, flag))
        if commands:
            await self._pipelined(commands)

    async def stats(
        self, key: str, since: int, until: int, off_variant: str | None = None
    ) -> StatsView:
        hours = list(range(since - since % 3600, until, 3600))
        commands: list[tuple[Any, ...]] = [("HGETALL", self._stats_key("h", key, h)) for h in hours]
        commands += [("HGETALL", self._stats_key("m", key, h)) for h in hours]
        commands += [("HGETALL", self._stats_key("r", key, h)) for h in hours]
        commands.append(("ZSCORE", f"{self._tag}:st:first", key))
        commands.append(("ZSCORE", f"{self._tag}:st:last", key))
        replies = await self._pipelined(commands)
        evaluations: dict[str, int] = {}
        sketches: dict[str, list[str]] = {}
        for hour, reply in zip(hours, replies[: len(hours)], strict=True):
            for variant, n in _as_dict(reply).items():
                evaluations[variant] = evaluations.get(variant, 0) + int(n)
                sketches.setdefault(variant, []).append(self._stats_key("u", key, hour, variant))
        series: dict[int, dict[str, int]] = {}
        for reply in replies[len(hours) : 2 * len(hours)]:
            for field, n in _as_dict(reply).items():
                minute, _, variant = field.partition("|")
                if since <= int(minute) < until:
                    series.setdefault(int(minute), {})[variant] = int(n)
        reported: dict[str, int] = {}
        for reply in replies[2 * len(hours) : 3 * len(hours)]:
            for variant, n in _as_dict(reply).items():
                reported[variant] = reported.get(variant, 0) + int(n)
        first, last = replies[-2], replies[-1]
        every = [k for group in sketches.values() for k in group]
        on = [k for v, group in sketches.items() if v != off_variant for k in group]
        counts = await self._pipelined(
            [("PFCOUNT", *group) for group in sketches.values()]
            + [("PFCOUNT", *keys) for keys in (every, on) if keys]
        )
        unique = dict(zip(sketches, counts, strict=False))
        tail = counts[len(sketches) :]
        units_seen = int(tail[0]) if every else 0
        units_on = int(tail[1]) if on else 0
        return StatsView(
            key=key,
            since=since,
            until=until,
            evaluations=evaluations,
            unique_units={v: int(n) for v, n in unique.items()},
            units_seen=units_seen,
            units_on=units_on,
            series=sorted(series.items()),
            first_seen=float(first) if first is not None else None,
            last_seen=float(last) if last is not None else None,
            reported=reported,
        )

    async def last_seen(self) -> dict[str, FlagSeen]:
        first, last = await self._pipelined(
            [
                ("ZRANGE", f"{self._tag}:st:first", 0, -1, "WITHSCORES"),
                ("ZRANGE", f"{self._tag}:st:last", 0, -1, "WITHSCORES"),
            ]
        )
        firsts = _scores(first)
        return {
            flag: FlagSeen(flag, firsts.get(flag, at), at) for flag, at in _scores(last).items()
        }


def _scores(reply: Any) -> dict[str, float]:
    """ZRANGE ... WITHSCORES: pairs (parsed by the client) or a flat list."""
    items = list(reply)
    if items and isinstance(items[0], list | tuple):
        return {str(k): float(v) for k, v in items}
    return {str(items[i]): float(items[i + 1]) for i in range(0, len(items), 2)}


def _as_dict(reply: Any) -> dict[str, str]:
    """HGETALL's reply: a dict (RESP2 client parsing) or a flat list."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return _pairs(list(reply))


def _pairs(flat: list[Any]) -> dict[str, str]:
    """HGETALL's flat reply from a script (``[k1, v1, k2, v2, ...]``) as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
