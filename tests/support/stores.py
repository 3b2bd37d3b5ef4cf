"""Store backends for the contract tests: each makes a fresh, empty store for one test.

A backend is a context manager factory registered in :data:`BACKENDS`; the ``store`` fixture
in ``tests/server/conftest.py`` is parametrized over its keys. Adding a backend (Redis) is a
class with ``url``, ``make()`` and ``unreachable()`` plus one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from flagport_server.stores import open_store
from flagport_server.stores.base import Store
from tests.support.redis import free_port, shared_cluster, shared_redis, unique_prefix

__all__ = [
    "BACKENDS",
    "Backend",
    "RedisBackend",
    "RedisClusterBackend",
    "SQLiteBackend",
    "running_as_root",
]


class Backend(Protocol):
    """One store's data, reachable by several independent store objects."""

    #: The parametrize id (``"sqlite"``, ``"redis"``).
    name: str
    #: A store URL another process can pass to ``open_store`` to reach the same data.
    url: str

    def make(self) -> Store:
        """A new, unopened store object on the same data: another connection, as another
        server process would have."""
        ...

    def sibling(self) -> Store:
        """A new, unopened store object on other, empty data of the same kind (another file,
        another key prefix): where a backup is restored."""
        ...

    def unreachable(self) -> list[tuple[str, str]]:
        """``(url, text)`` pairs: opening ``url`` must raise ``StoreUnavailable`` whose
        message contains ``text`` (the location an operator has to fix)."""
        ...

    def write_raw(self, kind: str, key: str, body: str | bytes, version: int = 1) -> None:
        """Write ``body`` as the stored ``kind`` (``flag``/``segment``/``plan``) ``key`` behind the
        store's back, as a bug, an old release or a hand edit could, and bump the snapshot
        version so that servers reload. The store must be initialised (opened once)."""
        ...

    @property
    def schema_version(self) -> int:
        """The schema version this Flagport writes on this backend."""
        ...

    def write_schema_version(self, version: int) -> None:
        """Set the store's schema version behind its back, as a newer Flagport upgrading
        the store would. The store must be initialised (opened once)."""
        ...


class SQLiteBackend:
    """A fresh SQLite file in a temporary directory."""

    def write_raw(self, kind: str, key: str, body: str | bytes, version: int = 1) -> None:
        table = {"flag": "flags", "segment": "segments", "plan": "plans"}[kind]
        with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                f"INSERT INTO {table} (key, version, body) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET version = excluded.version, body = excluded.body",
                (key, version, body),
            )
            conn.execute("UPDATE meta SET version = version + 1 WHERE id = 1")

    @property
    def schema_version(self) -> int:
        from flagport_server.stores.sqlite import SCHEMA_VERSION

        return SCHEMA_VERSION

    def write_schema_version(self, version: int) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("UPDATE meta SET schema_version = ? WHERE id = 1", (version,))

    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "flagport.db"
        self.url = f"sqlite:///{self.path}"  # absolute path: four slashes

    def make(self) -> Store:
        return open_store(self.url)

    def sibling(self) -> Store:
        return open_store(f"sqlite:///{self.directory / f'sibling-{unique_prefix()}.db'}")

    def unreachable(self) -> list[tuple[str, str]]:
        missing = self.directory / "missing" / "flagport.db"
        # A regular file where a directory should be fails even for root.
        not_a_directory = self.directory / "a-file"
        not_a_directory.write_text("")
        cases = [
            (f"sqlite:///{missing}", str(missing)),
            (f"sqlite:///{not_a_directory}/flagport.db", str(not_a_directory)),
        ]
        if not running_as_root():  # root writes to read-only directories anyway
            read_only = self.directory / "read-only"
            read_only.mkdir()
            read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
            cases.append((f"sqlite:///{read_only}/flagport.db", str(read_only)))
        return cases


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    yield SQLiteBackend(tmp_path)
    # Let pytest delete the temporary directory even when a test made part of it read-only.
    for child in tmp_path.iterdir():
        if child.is_dir():
            child.chmod(stat.S_IRWXU)


class RedisBackend:
    """A fresh store on the session's ``redis-server`` (spawned by the tests on a free port,
    never the machine's 6379): its own key prefix, so tests never see each other's keys and
    nothing is flushed."""

    name = "redis"

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self.url = self._with_prefix(unique_prefix())

    def _with_prefix(self, prefix: str) -> str:
        separator = "&" if "?" in self._base_url else "?"
        return f"{self._base_url}{separator}prefix={prefix}"

    def make(self) -> Store:
        return open_store(self.url)

    def sibling(self) -> Store:
        return open_store(self._with_prefix(unique_prefix()))

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url.split("?")[0], decode_responses=True)

    @property
    def _tag(self) -> str:
        # The key layout of ``flagport_server.stores.redis`` (its package docstring).
        return "{" + parse_qs(urlsplit(self.url).query)["prefix"][0] + "}"

    def write_raw(self, kind: str, key: str, body: str | bytes, version: int = 1) -> None:
        tag = self._tag
        client = self._client()
        try:
            client.hset(f"{tag}:{kind}s", key, body)
            client.hset(f"{tag}:{kind}_versions", key, version)
            client.publish(f"{tag}:changes", client.hincrby(f"{tag}:meta", "version", 1))
        finally:
            client.close()

    @property
    def schema_version(self) -> int:
        from flagport_server.stores.redis import SCHEMA_VERSION

        return SCHEMA_VERSION

    def write_schema_version(self, version: int) -> None:
        client = self._client()
        try:
            client.hset(f"{self._tag}:meta", "schema_version", version)
        finally:
            client.close()

    def unreachable(self) -> list[tuple[str, str]]:
        port = free_port()  # nothing listens there
        return [
            (f"redis://127.0.0.1:{port}/0", f"127.0.0.1:{port}"),
            (f"redis://:hunter2@127.0.0.1:{port}/0?connect_timeout=0.2", f"127.0.0.1:{port}"),
        ]


class RedisClusterBackend(RedisBackend):
    """A fresh store on the session's local three-node Redis Cluster."""

    name = "redis-cluster"

    def _client(self) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(self.url.split("?")[0], decode_responses=True)


@contextlib.contextmanager
def redis_backend(tmp_path: Path) -> Iterator[Backend]:
    yield RedisBackend(shared_redis().url)


@contextlib.contextmanager
def redis_cluster_backend(tmp_path: Path) -> Iterator[Backend]:
    yield RedisClusterBackend(shared_cluster().url)


#: Backend name -> factory taking the test's ``tmp_path``.
BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Backend]]] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
    "redis-cluster": redis_cluster_backend,
}
