"""Fixtures for the ``flags`` CLI tests: live servers in subprocesses, the real executable."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import (
    ADMIN_TOKEN,
    PORTAL_FLAGS,
    RunningServer,
    flags_executable,
    running_server,
)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_flags(
    *args: str,
    url: str | None,
    token: str | None = ADMIN_TOKEN,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
    memory_limit: int | None = None,
) -> Result:
    """Run the installed ``flags`` with a clean FLAGPORT_* environment; ``memory_limit``
    bounds its address space (bytes): past it, an allocation fails with MemoryError."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    if url is not None:
        environment["FLAGPORT_URL"] = url
    if token is not None:
        environment["FLAGPORT_TOKEN"] = token
    environment.update(env or {})
    completed = subprocess.run(
        [flags_executable(), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        preexec_fn=None if memory_limit is None else lambda: _limit_memory(memory_limit),
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


class Flags:
    """``flags`` bound to one server: ``flags("list")`` returns a :class:`Result`."""

    def __init__(self, server: RunningServer, cwd: Path) -> None:
        self.server = server
        self.cwd = cwd

    def __call__(self, *args: str, **kwargs: object) -> Result:
        kwargs.setdefault("cwd", self.cwd)
        return run_flags(*args, url=self.server.url, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str, **kwargs: object) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, str(result)
        return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A 2-worker server seeded with the portal flags, shared by a test module."""
    with running_server(tmp_path_factory.mktemp("server"), seed=PORTAL_FLAGS, workers=2) as live:
        yield live


@pytest.fixture(scope="module")
def flags(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Flags:
    return Flags(server, tmp_path_factory.mktemp("cwd"))


def plan_view(flags: Flags, key: str) -> dict[str, Any]:
    """The rollout plan on ``key`` as the admin API shows it (``flags rollout status``'s)."""
    with flags.server.admin() as admin:
        answer = admin.get(f"/admin/v1/rollouts/{key}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found
