"""Run the server with several worker processes (what ``flags serve`` calls).

Granian was chosen over uvicorn by measurement: see docs/adr/0002-server-runner.md. How the
server holds up against many connections (timeouts, limits) is docs/adr/0012-connection-limits.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.config
import os
import resource
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from flagport_server.logs import logging_config
from flagport_server.settings import Settings, bind_address

if TYPE_CHECKING:
    from granian.server.common import AbstractServer

__all__ = [
    "METRICS_DIR_PREFIX",
    "granian_server",
    "metrics_directory",
    "raise_open_file_limit",
    "serve",
    "worker_connection_limit",
]

log = logging.getLogger("flagport.server")

METRICS_DIR_PREFIX = "flagport-metrics-"
_METRICS_LOCK = ".lock"
#: File descriptors a worker keeps for itself (store, logs, metrics files, pipes), beyond
#: its connections.
_RESERVED_FILES = 256
#: Connections a worker holds at most, however high the open-file limit: each costs memory
#: even when idle (tens of kilobytes).
_MAX_WORKER_CONNECTIONS = 32_768


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (the workers inherit
    it); the default 1,024 is what a modest flood of idle sockets exhausts. Returns the soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # The kernel refuses more than nr_open whatever the hard limit says.
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1_048_576
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("open-file limit stays at %d (hard %d): %s", soft, hard, error)
    return soft


def worker_connection_limit(open_files: int) -> int:
    """Connections one worker holds at once (granian's ``backpressure``). Granian accepts
    while it has a permit; past the open-file limit ``accept`` fails at once and granian
    retries in a busy loop, so the limit stays below it."""
    return max(64, min(open_files - _RESERVED_FILES, _MAX_WORKER_CONNECTIONS))


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh directory for Prometheus's multiprocess files, removed at the end.

    Each is locked (``flock`` on a file inside) for as long as its server runs; the kernel
    drops the lock when the process dies, however it dies. So the directories that crashed
    servers left behind are exactly the unlocked ones, and they are removed at every start.
    """
    root = Path(tempfile.gettempdir())
    _remove_stale_metrics_directories(root)
    # Made under another name and renamed once locked: a server starting at the same moment
    # never sees it unlocked.
    building = Path(tempfile.mkdtemp(prefix=f".{METRICS_DIR_PREFIX}new-", dir=root))
    lock = os.open(building / _METRICS_LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        directory = root / (METRICS_DIR_PREFIX + building.name.rsplit("-", 1)[1])
        os.rename(building, directory)
        try:
            yield str(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        os.close(lock)
        shutil.rmtree(building, ignore_errors=True)


def _remove_stale_metrics_directories(root: Path) -> None:
    for directory in root.glob(METRICS_DIR_PREFIX + "*"):
        try:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue  # not ours to judge
            lock = os.open(directory / _METRICS_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file: not made by this code, left alone
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running server's
        finally:
            os.close(lock)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("removed %s, left by a server that did not stop cleanly", directory)


def granian_server(
    settings: Settings,
    *,
    log_level: str,
    open_files: int,
    log_config: dict[str, Any] | None = None,
) -> AbstractServer[Any]:
    """The granian server for ``settings`` (not started)."""
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    options: dict[str, object] = {}
    if settings.uds:
        options["uds"] = Path(settings.uds)
        options["uds_permissions"] = 0o660
    else:
        options["address"] = bind_address(settings.host)
        options["port"] = settings.port
    if settings.tls_cert and settings.tls_key:
        options["ssl_cert"] = Path(settings.tls_cert)
        options["ssl_key"] = Path(settings.tls_key)
    return Server(
        "flagport_server.asgi:app_from_env",
        interface=Interfaces.ASGI,
        factory=True,
        workers=settings.workers,
        loop=Loops.auto,
        log_level=log_level,  # type: ignore[arg-type]
        log_dictconfig=log_config,
        log_access=False,
        backlog=settings.backlog,
        # Granian's default (backlog / workers) is a handful of idle sockets away from a
        # worker that accepts nothing, /healthz included.
        backpressure=worker_connection_limit(open_files),
        # Also closes keep-alive connections idle for as long. Granian has no timeout for a
        # connection that never sends a byte: a proxy in front handles those (README).
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000)),
        **options,  # type: ignore[arg-type]
    )


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Serve until interrupted. Blocks."""
    log_config = logging_config(log_level)
    logging.config.dictConfig(log_config)
    for warning in settings.exposure_warnings:
        log.warning("%s", warning)
    open_files = raise_open_file_limit()
    with metrics_directory() as metrics_dir:
        # Must be set before any worker imports prometheus_client (multiprocess metrics).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ["FLAGPORT_SETTINGS_JSON"] = msgspec.json.encode(settings).decode()
        server = granian_server(
            settings, log_level=log_level, open_files=open_files, log_config=log_config
        )
        server.serve()
