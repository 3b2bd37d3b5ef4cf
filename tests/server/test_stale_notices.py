"""The daily check for stale flags, in process on a real SQLite store with a real receiver:
the worker that delivers webhooks writes one ``flag.stale`` notice per newly stale flag (once
while it stays stale, however often the check runs), and each is a ``flag.stale`` event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from litestar.testing import TestClient

from flagport.engine import Flag
from flagport_server.app import create_app
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from flagport_server.stores.base import Mutation
from tests.support.receiver import Receiver
from tests.support.server import wait_until

ADMIN_TOKEN = "stale-admin-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONG_AGO = "2020-01-01T00:00:00Z"


async def _flags_created_long_ago(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.commit(
            [
                Mutation(
                    "flag",
                    key,
                    "put",
                    Flag(version=1, created_at=LONG_AGO, updated_at=LONG_AGO, tags=["checkout"]),
                    None,
                )
                for key in ("old-a", "old-b")
            ],
            [],
        )
    finally:
        await store.close()


def test_each_newly_stale_flag_gets_one_notice_delivered_as_flag_stale(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flagport.db'}"
    asyncio.run(_flags_created_long_ago(url))
    settings = Settings(
        store_url=url, admin_token=ADMIN_TOKEN, stale_check_interval=0.2, stale_days=1
    )
    with Receiver() as receiver, TestClient(create_app(settings)) as client:
        # A flag made today is too new to judge.
        fresh = {"key": "fresh", "tags": ["checkout"]}
        assert client.post("/admin/v1/flags", json=fresh, headers=HEADERS).status_code == 201
        made = client.post(
            "/admin/v1/webhooks",
            json={"url": receiver.url, "events": ["flag.stale"], "tag": "checkout"},
            headers=HEADERS,
        )
        assert made.status_code == 201, made.text
        received = receiver.wait_for(lambda r: len(r) >= 2)
        # Several more checks run meanwhile; none writes a second notice.
        checks_done = time.monotonic() + 1.0
        assert wait_until(lambda: time.monotonic() > checks_done, 2)
        audit = client.get("/admin/v1/audit", headers=HEADERS).json()["entries"]
    notices = [e for e in audit if e.get("kind") == "notice"]
    assert sorted(e["key"] for e in notices) == ["old-a", "old-b"]
    assert {e["action"] for e in notices} == {"flag.stale"}
    assert {e["reason"] for e in notices} == {"never evaluated (since stats were kept)"}
    events = [json.loads(d.body) for d in receiver.deliveries()]
    assert len(received) == len(events) == 2
    assert {e["event"] for e in events} == {"flag.stale"}
    assert sorted(e["key"] for e in events) == ["old-a", "old-b"]
    assert events[0]["actor"]["name"] == "driver"
