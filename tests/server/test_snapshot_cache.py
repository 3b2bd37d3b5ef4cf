"""The snapshot cache (``--snapshot-cache``) a newer release wrote is still read: fields
this release does not know are ignored (docs/adr/0011-upgrades.md), so a worker rolled back
to this release starts from it when the store cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.settings import Settings

ADMIN_TOKEN = "admin-token-for-the-snapshot-cache-test"


def _newer_cache(path: Path) -> None:
    flag = {
        "variants": {"on": True, "off": False},
        "on_variant": "on",
        "off_variant": "off",
        "enabled": True,
        "percentage": 100.0,
        "version": 3,
        "a_field_from_a_newer_release": {"guard": "error-rate"},
    }
    cache = {
        "store_id": "store-written-by-a-newer-release",
        "document": {
            "bucketing": 1,
            "flags": {"new-checkout": flag},
            "segments": {},
            "version": 7,
            "monitors": [],
        },
        "applied_at": 1_700_000_000.0,
        "unreadable_flags": {},
        "unreadable_segments": {},
        "rollouts": {"new-checkout": {"stage": 2}},
    }
    path.write_text(json.dumps(cache))


def test_a_cache_with_fields_from_a_newer_release_is_served(tmp_path: Path) -> None:
    cache = tmp_path / "snapshot-cache.json"
    _newer_cache(cache)
    # A store that cannot be opened (its directory is a file): the cache is all there is.
    (tmp_path / "not-a-directory").write_text("")
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'not-a-directory' / 'flagport.db'}",
        snapshot_cache=str(cache),
        admin_token=ADMIN_TOKEN,
        stats=False,
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/ofrep/v1/evaluate/flags/new-checkout", json={"context": {"targetingKey": "u1"}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["value"] is True
        assert answer.headers["x-flagport-snapshot"] == "7"
