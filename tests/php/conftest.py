"""Fixtures for the PHP bridge tests: real Flagport servers (TCP and Unix socket) with
rollout flags at 10/25/50 %, and the PHP tools (missing -> skip; fail under FLAGPORT_STRICT=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import PORTAL_FLAGS, RunningServer, running_server
from tests.support.tools import REPO_ROOT, require_tool

BRIDGE = REPO_ROOT / "php-bridge"
#: Flags the tests create: key -> percentage (enabled, default boolean variants).
ROLLOUTS = {"rollout-p10": 10, "rollout-p25": 25, "rollout-p50": 50}


@dataclass
class Servers:
    tcp: RunningServer
    uds: RunningServer

    @property
    def uds_url(self) -> str:
        return f"unix://{self.uds.uds}"


def create_rollouts(server: RunningServer) -> None:
    with server.admin(timeout=10) as admin:
        for key, percentage in ROLLOUTS.items():
            body = {"key": key, "enabled": True, "percentage": percentage}
            response = admin.post("/admin/v1/flags", json=body)
            assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="session")
def php() -> str:
    return require_tool("php")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("flagport-php")
    with (
        running_server(root / "tcp", seed=PORTAL_FLAGS) as tcp,
        running_server(root / "uds", seed=PORTAL_FLAGS, uds=True) as uds,
    ):
        create_rollouts(tcp)
        create_rollouts(uds)
        yield Servers(tcp=tcp, uds=uds)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: Unix socket paths are limited to 107 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="fp-php-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
