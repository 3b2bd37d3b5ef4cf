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
    {p}:tokens            hash: id -> JSON; {p}:token_hashes: secret hash -> id (one token
                          per secret)
    {p}:workers           hash: ["instance", pid] -> JSON WorkerStatus
    {p}:commit:<uuid>     a commit's reply for 5 minutes: a retried commit is not applied twice
    {p}:st:h:<flag>|<hour>            hash: variant -> evaluations in that hour (7 days)
    {p}:st:m:<flag>|<hour>            hash: "<minute>|<variant>" -> evaluations (48 hours)
    {p}:st:u:<flag>|<hour>|<variant>  HyperLogLog of the hour's units (7 days)
    {p}:st:r:<flag>|<hour>            hash: variant -> of those evaluations, the ones
                                      in-process clients reported (7 days)
    {p}:st:first, {p}:st:last         sorted sets: flag -> first / last seen (epoch seconds)
    {p}:plans, {p}:plan_versions      hash: flag key -> JSON rollout plan / its version
                                      (written by the commit script, like flags)
    {p}:lease:<name>, {p}:leases, {p}:oc:...   the rollout driver's lease and the outcome
                                      totals per minute (``_rollout``)
    {p}:webhooks, {p}:webhook_cursors, {p}:wd:<id>, {p}:wd:<id>:ids   the webhooks, their
                                      cursors and deliveries (``_webhooks``)

A commit publishes the new snapshot version on the channel ``{p}:changes`` from inside its
script, so a notification can never be lost between the commit and the publish; the
server's periodic version check repairs notifications missed while a subscriber reconnects.

A store that disappears (Redis restarted empty, ``FLUSHALL``) is initialised again with a
new store id on first use; servers notice the different id and keep serving the snapshot they
have (:mod:`flagport_server.runtime`), so a wiped Redis never silently wipes the flags.

``schema_version`` in the meta hash is the version of this layout. A server refuses a store
whose schema is newer than the one it knows (:data:`SCHEMA_VERSION`) when it opens it, at
every load and version check, and in every script that writes the configuration or the
tokens, so an instance left behind by a rolling upgrade stops rather than misreads.

:class:`RedisStore` is one class made of one part per concern, each in its own module over
the shared connections, scripts and key names (``_connection``): the configuration
(``_configuration``), the audit log (``_audit``), the tokens (``_tokens``), the propagation
registry (``_workers``), the stats (``_stats``), the rollout driver's lease and outcomes
(``_rollout``) and whole-store backups (``_backup``); URLs are parsed in ``_url``.
"""

from __future__ import annotations

from flagport_server.stores.redis._audit import RedisAudit
from flagport_server.stores.redis._backup import RedisBackup
from flagport_server.stores.redis._configuration import RedisConfiguration
from flagport_server.stores.redis._connection import SCHEMA_VERSION
from flagport_server.stores.redis._requests import RedisRequests
from flagport_server.stores.redis._rollout import RedisRollout
from flagport_server.stores.redis._secrets import RedisSecrets
from flagport_server.stores.redis._stats import RedisStats
from flagport_server.stores.redis._tokens import RedisTokens
from flagport_server.stores.redis._url import RedisOptions, parse_redis_url
from flagport_server.stores.redis._webhooks import RedisWebhooks
from flagport_server.stores.redis._workers import RedisWorkers

__all__ = ["SCHEMA_VERSION", "RedisOptions", "RedisStore", "parse_redis_url", "store_from_url"]


class RedisStore(
    RedisConfiguration,
    RedisAudit,
    RedisTokens,
    RedisRequests,
    RedisSecrets,
    RedisWorkers,
    RedisStats,
    RedisRollout,
    RedisBackup,
    RedisWebhooks,
):
    """A :class:`~flagport_server.stores.base.Store` in Redis, shared by every instance.

    Connections are made lazily and again after failures, so a store unreachable at
    :meth:`open` starts working once Redis is back. Every Redis error becomes
    :class:`~flagport_server.errors.StoreUnavailable` naming the server (never the password).
    """


def store_from_url(url: str) -> RedisStore:
    """The store for a Redis URL, not yet connected (``open_store`` calls this)."""
    return RedisStore(parse_redis_url(url))
