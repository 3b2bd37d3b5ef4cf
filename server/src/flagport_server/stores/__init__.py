"""Store backends behind one contract (:mod:`flagport_server.stores.base`).

:func:`open_store` turns a store URL into a backend:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``: the embedded default
  (:class:`~flagport_server.stores.sqlite.SQLiteStore`);
* ``redis://``, ``rediss://``, ``redis+sentinel://``: the shared store for several server
  instances, in the module ``flagport_server.stores.redis``, imported only when such a URL
  is used so the SQLite path never loads the Redis client.
"""

from __future__ import annotations

import importlib
import re
from typing import Final

from flagport_server.errors import InvalidInput
from flagport_server.stores.base import (
    AuditEntry,
    AuditQuery,
    CommitResult,
    Mutation,
    Store,
    StoreState,
    TokenRecord,
    WorkerStatus,
)
from flagport_server.stores.sqlite import SQLiteStore

__all__ = [
    "SUPPORTED_SCHEMES",
    "AuditEntry",
    "AuditQuery",
    "CommitResult",
    "Mutation",
    "SQLiteStore",
    "Store",
    "StoreState",
    "TokenRecord",
    "WorkerStatus",
    "open_store",
    "redact_store_url",
    "sqlite_path",
]

#: The Redis backend module. It must define ``store_from_url(url: str) -> Store`` that
#: validates the URL (raising ``InvalidInput``) without connecting.
_REDIS_MODULE: Final = "flagport_server.stores.redis"
_REDIS_SCHEMES: Final = ("redis", "rediss", "redis+sentinel")

#: URL schemes :func:`open_store` accepts, for messages and ``--help``.
SUPPORTED_SCHEMES: Final = ("sqlite", *_REDIS_SCHEMES)

_EXAMPLES: Final = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, redis://host:6379/0, "
    "rediss://host:6379/0, redis+sentinel://h1:26379,h2:26379/<service>/<db>"
)


_SECRET_OPTION: Final = re.compile(r"(?i)((?:^|[?&;])[^=&;]*password[^=&;]*=)[^&;]*")


def redact_store_url(url: str) -> str:
    """``url`` fit to print: the password in the user part and the value of every option
    whose name contains ``password`` (``sentinel_password``) become ``***``.

    Everything that shows a store URL (the start-up line, errors) shows it through this. The
    user part ends at the *last* ``@``, as :func:`open_store`'s parsers read it, so a
    password with an unescaped ``@`` or ``/`` is hidden whole."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        # No scheme: the whole text may be a mistyped URL with a password in it.
        return "***" if "@" in url or "password" in url.lower() else url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
        rest = f"{userinfo}@{hostpart}"
    return f"{scheme}://" + _SECRET_OPTION.sub(r"\1***", rest)


def open_store(url: str) -> Store:
    """The store for ``url``, not yet connected: ``await store.open()`` connects.

    Only the URL is checked here (no I/O), so a bad ``--store`` is reported before the
    server starts; an unreachable store is reported by ``open()`` as ``StoreUnavailable``.

    :raises InvalidInput: unknown scheme or malformed URL (the message never repeats the
        URL's password).
    """
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SUPPORTED_SCHEMES:
        shown = f"scheme {scheme!r}" if separator else f"{redact_store_url(url)!r} (no scheme)"
        raise InvalidInput(
            f"unsupported store URL {shown}; use one of {_EXAMPLES}", path="store_url"
        )
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url))
    try:
        module = importlib.import_module(_REDIS_MODULE)
    except ModuleNotFoundError as error:
        if error.name != _REDIS_MODULE:
            raise  # the backend exists but one of its own imports is missing
        raise InvalidInput(
            f"the Redis store ({scheme}://) is not available in this build of Flagport; "
            "use sqlite:///path/to/flagport.db",
            path="store_url",
        ) from None
    store: Store = module.store_from_url(url)
    return store


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite://`` URL: three slashes then a relative path, four for
    an absolute one (SQLAlchemy's convention).

    :raises InvalidInput: a host part, a query string, an empty path or ``:memory:`` (every
        server worker must open the same file).
    """
    prefix = "sqlite://"
    shown = redact_store_url(url)
    if not url.lower().startswith(prefix):
        raise InvalidInput(f"not a sqlite:// URL: {shown!r}", path="store_url")
    rest = url[len(prefix) :]
    if not rest.startswith("/"):
        raise InvalidInput(
            f"{shown!r} has a host part; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db",
            path="store_url",
        )
    path = rest[1:]
    if "?" in path or "#" in path:
        raise InvalidInput(
            f"{shown!r}: sqlite:// URLs take no query string or fragment", path="store_url"
        )
    if path in ("", ":memory:") or path.startswith(("file:", ":memory:")):
        raise InvalidInput(
            f"{shown!r} names no file; the SQLite store must be a file every server process "
            "can open (in-memory databases are not shared)",
            path="store_url",
        )
    return path
