"""The embedded default store: one SQLite file shared by every server process on a host.

Durability and concurrency come from SQLite itself:

* WAL journal, ``synchronous=FULL``: a commit is fsynced before :meth:`SQLiteStore.commit`
  returns, so an acknowledged write survives ``kill -9`` and power loss.
* Every write runs in ``BEGIN IMMEDIATE``: the writer takes the file's write lock before it
  reads the versions it guards on, so two processes can never both pass the same
  compare-and-set check. ``busy_timeout`` makes the loser wait instead of failing.
* Reads use their own connection in a deferred transaction: under WAL they see one
  consistent version and never wait for a writer.
* Other processes' commits are detected by polling ``PRAGMA data_version`` on a dedicated
  connection (it changes when *another* connection commits), which costs no I/O.

:class:`SQLiteStore` is one class made of one part per concern, each in its own module over
the shared connections (``_connection``) and table layout (``_schema``): the configuration
(``_configuration``), the audit log (``_audit``), the tokens (``_tokens``), the propagation
registry (``_workers``), the stats (``_stats``), the rollout driver's lease and
outcome signals (``_rollout``), the webhooks (``_webhooks``) and whole-store backups
(``_backup``).
"""

from __future__ import annotations

from flagport_server.stores.sqlite._audit import SQLiteAudit
from flagport_server.stores.sqlite._backup import SQLiteBackup
from flagport_server.stores.sqlite._configuration import SQLiteConfiguration
from flagport_server.stores.sqlite._requests import SQLiteRequests
from flagport_server.stores.sqlite._rollout import SQLiteRollout
from flagport_server.stores.sqlite._schema import SCHEMA_VERSION
from flagport_server.stores.sqlite._secrets import SQLiteSecrets
from flagport_server.stores.sqlite._stats import SQLiteStats
from flagport_server.stores.sqlite._tokens import SQLiteTokens
from flagport_server.stores.sqlite._webhooks import SQLiteWebhooks
from flagport_server.stores.sqlite._workers import SQLiteWorkers

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]


class SQLiteStore(
    SQLiteConfiguration,
    SQLiteAudit,
    SQLiteTokens,
    SQLiteRequests,
    SQLiteSecrets,
    SQLiteWorkers,
    SQLiteStats,
    SQLiteRollout,
    SQLiteBackup,
    SQLiteWebhooks,
):
    """A :class:`~flagport_server.stores.base.Store` in one SQLite file.

    Safe for many processes (server workers) and many tasks on the same file. Connections
    are made lazily and re-made after a failure, so a store that was unreachable at
    :meth:`open` starts working once the file is reachable.

    :param path: the database file; its directory must exist and be writable (WAL keeps
        ``-wal`` and ``-shm`` files beside it). ``:memory:`` is refused: processes share.
    :param busy_timeout: seconds a writer waits for another process's write lock before
        :class:`~flagport_server.errors.StoreUnavailable`.
    :param poll_interval: seconds between two change checks in :meth:`changes`.
    """
