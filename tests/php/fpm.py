"""Debian's php8.2-fpm for tests: one pool listening on a Unix socket in a temp dir.

The pool uses the distribution's FPM php.ini (so curl, APCu and OPcache load as in
production); ``-R`` lets it run as root in containers. APCu is shared by the pool's workers,
which is what the bridge's last-good values and circuit breaker rely on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.php.fcgi import FastCGIClient
from tests.support.tools import require_tool

__all__ = ["FpmPool", "fpm_pool"]

POOL_CONF = """\
[global]
pid = {dir}/fpm.pid
error_log = {dir}/fpm.log
daemonize = no
log_level = warning

[flagport]
listen = {dir}/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = {children}
pm.max_requests = 0
clear_env = no
catch_workers_output = yes
decorate_workers_output = no
request_terminate_timeout = 60
php_admin_value[error_log] = {dir}/php-errors.log
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
php_admin_value[memory_limit] = 256M
php_admin_value[apc.shm_size] = 64M
"""


@dataclass
class FpmPool:
    dir: Path
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> str:
        return str(self.dir / "fpm.sock")

    def client(self, timeout: float = 30.0) -> FastCGIClient:
        return FastCGIClient(self.socket, timeout)

    def log(self) -> str:
        parts = []
        for name in ("fpm.log", "php-errors.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace"))
        return "\n".join(parts)

    def php_errors(self) -> str:
        path = self.dir / "php-errors.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def fpm_pool(directory: Path, children: int = 2) -> Iterator[FpmPool]:
    binary = require_tool("php-fpm8.2")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "pool.conf"
    conf.write_text(POOL_CONF.format(dir=directory, children=children))
    args = [binary, "-y", str(conf), "-F"]
    if os.geteuid() == 0:
        args.append("-R")
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    pool = FpmPool(directory, process)
    try:
        deadline = time.monotonic() + 10
        while not Path(pool.socket).exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"php-fpm did not start:\n{pool.log()}")
            time.sleep(0.02)
        yield pool
    finally:
        pool.stop()
