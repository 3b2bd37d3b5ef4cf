"""``GET /admin/v1/stale``'s flags serving everyone alike, in process: what the engine knows
about each flag (``CompiledFlag.serves_everyone``), in the report's words."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from flagport.engine import Flag, Rule
from flagport.engine.models import Condition, Operator
from flagport_server.app import create_app
from flagport_server.settings import Settings
from flagport_server.stores import open_store
from flagport_server.stores.base import Mutation

ADMIN_TOKEN = "stale-admin-token-0123456789abcdef"
LONG_AGO = "2020-01-01T00:00:00Z"
A_RULE = Rule(
    conditions=[Condition(op=Operator.EQ, attribute="plan", values=["pro"])], variant="on"
)

FLAGS: dict[str, dict[str, Any]] = {
    "off": {"enabled": False, "percentage": 50},
    "everyone": {"enabled": True},
    "nobody": {"enabled": True, "percentage": 0},
    "half": {"enabled": True, "percentage": 50},
    "half.off": {"enabled": False},
    "ruled": {"enabled": True, "rules": [A_RULE]},
    "weighted": {
        "enabled": True,
        "variants": {"a": 1, "b": 2, "off": 0},
        "on_variant": "a",
        "weights": {"a": 1, "b": 1},
    },
}


async def _store_flags_created_long_ago(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        mutations = [
            Mutation(
                kind="flag",
                key=key,
                op="put",
                value=Flag(version=1, created_at=LONG_AGO, updated_at=LONG_AGO, **fields),
                expected_version=None,
            )
            for key, fields in FLAGS.items()
        ]
        await store.commit(mutations, [])
    finally:
        await store.close()


def test_the_stale_report_names_the_flags_whose_settings_serve_everyone_alike(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'flagport.db'}"
    asyncio.run(_store_flags_created_long_ago(url))
    settings = Settings(store_url=url, admin_token=ADMIN_TOKEN)
    with TestClient(create_app(settings)) as client:
        answer = client.get(
            "/admin/v1/stale",
            params={"days": 1},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    static = {item["key"]: item["why"] for item in answer.json()["static"]}
    assert static == {
        "off": "off for everyone (disabled) for 1 days or more",
        "half.off": "off for everyone (disabled) for 1 days or more",
        "everyone": "on for everyone (100 %) for 1 days or more",
        "nobody": "off for everyone (0 %) for 1 days or more",
    }
