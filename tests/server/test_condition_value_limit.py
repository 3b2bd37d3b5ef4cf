"""The admin API and the 10,000 condition values of a flag, its segments' included: a change
that takes a flag over is refused (a problem naming the flag and the limit) and changes
nothing; a flag stored over it under older limits is served, named by ``/readyz``, and
blocks no other change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from flagport.engine import MAX_CONDITION_VALUES, Flag, Rule
from flagport.engine.models import Condition, Operator
from flagport_server.app import create_app
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from flagport_server.stores.base import Mutation

ADMIN_TOKEN = "value-limit-admin-token-0123456789abcdef"
SEGMENT_VALUES = 3_000


def _conditions(count: int, attribute: str = "plan") -> list[dict[str, Any]]:
    return [
        {"attribute": attribute, "op": "in", "values": list(range(start, min(start + 1000, count)))}
        for start in range(0, count, 1000)
    ]


def _legacy_flag() -> Flag:
    """Stored under older limits: 11,000 values."""
    condition = Condition(op=Operator.IN, attribute="a", values=list(range(1000)))
    return Flag(enabled=True, rules=[Rule(conditions=[condition], variant="on")] * 11, version=1)


async def _store_legacy_flag(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.commit([Mutation("flag", "legacy", "put", _legacy_flag(), None)], [])
    finally:
        await store.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    directory: Path = tmp_path_factory.mktemp("value-limit")
    url = f"sqlite:///{directory / 'flagport.db'}"
    asyncio.run(_store_legacy_flag(url))
    with TestClient(create_app(Settings(store_url=url, admin_token=ADMIN_TOKEN))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        segment = {"conditions": _conditions(SEGMENT_VALUES)}
        assert client.put("/admin/v1/segments/big", json=segment).status_code in (200, 201)
        own = MAX_CONDITION_VALUES - SEGMENT_VALUES - 1  # with the in_segment value: the limit
        rules = [{"conditions": [c], "variant": "on"} for c in _conditions(own)]
        rules.append({"conditions": [{"op": "in_segment", "values": ["big"]}], "variant": "on"})
        created = client.post(
            "/admin/v1/flags", json={"key": "at-limit", "enabled": True, "rules": rules}
        )
        assert created.status_code == 201, created.text
        yield client


def test_a_segment_change_that_takes_a_flag_over_the_limit_is_refused(
    client: TestClient[Litestar],
) -> None:
    grown = {"conditions": _conditions(SEGMENT_VALUES + 1)}
    answer = client.put("/admin/v1/segments/big", json=grown)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert "'at-limit' holds 10001 condition values" in problem["detail"]
    assert "the limit is 10000" in problem["detail"]
    stored = client.get("/admin/v1/segments/big").json()
    assert sum(len(c["values"]) for c in stored["conditions"]) == SEGMENT_VALUES


def test_a_rule_change_that_takes_a_flag_over_the_limit_is_refused(
    client: TestClient[Litestar],
) -> None:
    before = client.get("/admin/v1/flags/at-limit").json()
    rules = [*before["rules"], {"conditions": _conditions(1, "country"), "variant": "on"}]
    answer = client.put("/admin/v1/flags/at-limit/rules", json={"rules": rules})
    assert answer.status_code == 400, answer.text
    assert "the limit is 10000" in answer.json()["detail"]
    assert client.get("/admin/v1/flags/at-limit").json()["version"] == before["version"]


def test_a_flag_stored_over_the_limit_is_served_named_and_blocks_no_other_change(
    client: TestClient[Litestar],
) -> None:
    served = client.post(
        "/ofrep/v1/evaluate/flags/legacy", json={"context": {"targetingKey": "u", "a": "7"}}
    )
    assert served.status_code == 200, served.text
    assert served.json()["variant"] == "on"
    warnings = client.get("/readyz").json()["warnings"]
    assert any("'legacy'" in w and "11000 condition values" in w for w in warnings), warnings
    answer = client.post("/admin/v1/flags", json={"key": "unrelated", "enabled": True})
    assert answer.status_code == 201, answer.text
