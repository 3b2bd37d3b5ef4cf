"""A write reads the store once and compiles the configuration once: the worker serves what
it just committed (the compile that validated the change) instead of reading the store back
and compiling it again (docs/adr/0018-served-snapshot-and-stats-pump.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from flagport.engine import CompiledSnapshot
from flagport_server.app import create_app
from flagport_server.settings import Settings
from flagport_server.stores.sqlite import SQLiteStore

ADMIN = {"Authorization": "Bearer admin-token-for-the-write-cost-test"}
FLAG = {
    "variants": {"on": True, "off": False},
    "on_variant": "on",
    "off_variant": "off",
    "enabled": True,
    "percentage": 50.0,
}


class Costs:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def during(self, client: TestClient[Litestar], method: str, path: str, **kw: Any) -> Any:
        """The loads and compiles one request made, and its answer."""
        self.counts.clear()
        answer = client.request(method, path, **{"headers": ADMIN, **kw})
        assert answer.status_code < 300, answer.text
        return dict(self.counts), answer


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Costs, Any]]:
    costs = Costs()
    # The background change watch and poll wait a minute: only the request reads the store.
    store = SQLiteStore(tmp_path / "flagport.db", poll_interval=60.0)
    load = store.load

    async def counted_load() -> Any:
        costs.counts["loads"] += 1
        return await load()

    monkeypatch.setattr(store, "load", counted_load)
    compile_once = CompiledSnapshot.__init__

    def counted_compile(self: CompiledSnapshot, *args: Any, **kwargs: Any) -> None:
        costs.counts["compiles"] += 1
        compile_once(self, *args, **kwargs)

    monkeypatch.setattr(CompiledSnapshot, "__init__", counted_compile)
    settings = Settings(
        admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
        poll_interval=60.0,
        heartbeat_interval=60.0,
        stats=False,
    )
    with TestClient(create_app(settings, store)) as client:
        for key in ("checkout", "search"):
            answer = client.post("/admin/v1/flags", headers=ADMIN, json={"key": key, **FLAG})
            assert answer.status_code == 201, answer.text
        yield costs, client


def _served_version(client: TestClient[Litestar]) -> int:
    answer = client.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {"targetingKey": "u1"}}
    )
    return int(answer.headers["x-flagport-snapshot"])


def test_a_replace_loads_once_and_compiles_once(served: tuple[Costs, Any]) -> None:
    costs, client = served
    version = client.get("/admin/v1/flags/checkout", headers=ADMIN).headers["etag"]
    counts, answer = costs.during(
        client,
        "PUT",
        "/admin/v1/flags/checkout",
        json={**FLAG, "percentage": 75.0},
        headers={**ADMIN, "If-Match": version},
    )
    assert counts == {"loads": 1, "compiles": 1}
    assert _served_version(client) == answer.json()["snapshot_version"]


def test_the_kill_switch_loads_once_and_compiles_once(served: tuple[Costs, Any]) -> None:
    costs, client = served
    counts, answer = costs.during(client, "POST", "/admin/v1/flags/checkout/disable")
    assert counts == {"loads": 1, "compiles": 1}
    assert _served_version(client) == answer.json()["snapshot_version"]
    evaluated = client.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {"targetingKey": "u1"}}
    )
    assert evaluated.json()["reason"] == "DISABLED"


def test_an_import_loads_once_and_compiles_once(served: tuple[Costs, Any]) -> None:
    costs, client = served
    document = {"flags": {"checkout": FLAG, "search": FLAG, "banner": {**FLAG, "percentage": 5.0}}}
    counts, answer = costs.during(client, "POST", "/admin/v1/snapshot", json=document)
    assert counts == {"loads": 1, "compiles": 1}
    assert answer.json()["applied"] is True
    assert _served_version(client) == answer.json()["snapshot_version"]
    banner = client.post(
        "/ofrep/v1/evaluate/flags/banner", json={"context": {"targetingKey": "u1"}}
    )
    assert banner.status_code == 200, banner.text
