"""Store fixtures: every contract test runs once per backend in ``tests.support.stores``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flagport_server.stores.base import Store
from tests.support.stores import BACKENDS, Backend


@pytest.fixture
def anyio_backend() -> str:
    # anyio's pytest plugin (anyio comes with litestar) runs the async tests; asyncio only,
    # as in production.
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty store's data for one test, on each backend in turn."""
    with BACKENDS[request.param](tmp_path) as backend:
        yield backend


@pytest.fixture
async def store(store_backend: Backend, anyio_backend: str) -> AsyncIterator[Store]:
    """An opened store on ``store_backend``; closed after the test."""
    opened = store_backend.make()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
