"""``--seed`` with several workers: the worker that loses the race to seed the empty store
serves what the winner seeded at once, not the empty store until its next poll (its first
requests were answered from an empty snapshot: a client's first bulk answers had no flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagport_server.runtime import Runtime
from flagport_server.services import AdminService
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from tests.support.server import PORTAL_FLAGS

pytestmark = pytest.mark.anyio


async def test_the_worker_that_loses_the_seed_race_serves_the_seed(tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        seed_file=str(PORTAL_FLAGS),
        poll_interval=3600.0,  # no poll comes to the rescue within the test
    )
    first = Runtime(settings, open_store(settings.store_url))
    second = Runtime(settings, open_store(settings.store_url))
    try:
        # Both workers load the empty store before either seeds it.
        await first.start()
        await second.start()
        for runtime in (first, second):
            assert runtime.snapshot is not None
            assert len(runtime.snapshot) == 0
        await AdminService(first).seed(str(PORTAL_FLAGS))
        await AdminService(second).seed(str(PORTAL_FLAGS))  # loses: the store has a version
        assert len(first.snapshot or ()) == 10
        assert len(second.snapshot or ()) == 10
        assert second.version == first.version
    finally:
        await first.stop()
        await second.stop()
