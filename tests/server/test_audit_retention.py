"""Audit retention (``flags serve --audit-retention DAYS``): a worker deletes the entries older
than the retention at start and then periodically; newer ones stay."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from flagport_server.runtime import Runtime
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from flagport_server.stores.base import AuditEntry, AuditQuery

pytestmark = pytest.mark.anyio


def _days_ago(days: int) -> str:
    at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    return at.isoformat()


async def test_a_worker_deletes_the_entries_older_than_the_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flagport.db'}"
    store = open_store(url)
    await store.open()
    for days, actor in ((400, "ancient"), (40, "old"), (5, "recent")):
        await store.commit(
            [], [AuditEntry(actor=actor, action="note", key="k", at=_days_ago(days))]
        )
    settings = Settings(store_url=url, audit_retention_days=30, audit_prune_interval=0.05)
    runtime = Runtime(settings, open_store(url))
    await runtime.start()
    try:

        async def actors() -> list[str]:
            return [e.actor for e in await store.audit(AuditQuery(limit=10))]

        for _ in range(100):
            if await actors() == ["recent"]:
                break
            await asyncio.sleep(0.05)
        assert await actors() == ["recent"]
        # Later entries, within the retention, stay through further rounds.
        await store.commit([], [AuditEntry(actor="now", action="note", key="k", at=_days_ago(0))])
        await asyncio.sleep(0.2)
        assert await actors() == ["now", "recent"]
    finally:
        await runtime.stop()
        await store.close()
