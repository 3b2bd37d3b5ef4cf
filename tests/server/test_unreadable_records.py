"""What a store holds can never take the kill switch away.

Limits apply when something is committed: the store's own ``commit`` refuses a flag or a
segment over a limit, whoever calls it. Reading stays lenient: a flag stored under older,
looser limits still loads (and ``/readyz`` warns), fields a newer release wrote are ignored,
and only a record that cannot be decoded (not JSON, wrong types, not UTF-8) or whose key is
outside the grammar is unreadable. An
unreadable flag is served as ``PARSE_ERROR``, left out of the SDK feed and exports, named in
``/readyz``; every other flag is served, the kill switch turns every other flag off and says
which it could not reach; ``flags delete`` and ``flags import`` repair it.

The store-level tests run on every backend; the live-server story on SQLite and Redis, with
records written straight into the store as a bug, an old release or a hand edit would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from flagport.engine import Condition, Flag, Operator, Prerequisite, Rule, Segment
from flagport.engine._limits import (
    MAX_DESCRIPTION_LENGTH,
    MAX_ENCODED_BYTES,
    MAX_OWNER_LENGTH,
    MAX_SALT_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_VALUE_DEPTH,
)
from flagport.engine.models import MAX_RULES, MAX_TARGETS
from flagport_server.errors import InvalidInput
from flagport_server.services import utc_now
from flagport_server.stores.base import Mutation, Store
from tests.cli.conftest import run_flags
from tests.server._fixtures import create_flags
from tests.support.redis import shared_redis
from tests.support.server import RunningServer, running_server, wait_until
from tests.support.stores import Backend, RedisBackend, SQLiteBackend

pytestmark = pytest.mark.anyio


def _rule(index: int = 0) -> Rule:
    return Rule(
        conditions=[Condition(op=Operator.EQ, attribute="plan", values=[f"p{index}"])], variant="on"
    )


def _nested(depth: int) -> Any:
    value: Any = True
    for _ in range(depth):
        value = {"inner": value}
    return value


#: (what, flag, the field the error must name)
OVER_LIMIT_FLAGS = [
    ("too many rules", Flag(rules=[_rule(i) for i in range(MAX_RULES + 1)]), "rules"),
    ("long description", Flag(description="d" * (MAX_DESCRIPTION_LENGTH + 1)), "description"),
    ("line break in description", Flag(description="ok\nFORGED"), "description"),
    ("escape in owner", Flag(owner="\x1b[31mroot"), "owner"),
    ("long owner", Flag(owner="o" * (MAX_OWNER_LENGTH + 1)), "owner"),
    ("long salt", Flag(salt="s" * (MAX_SALT_LENGTH + 1)), "salt"),
    ("long tag", Flag(tags=["t" * (MAX_TAG_LENGTH + 1)]), "tags[0]"),
    ("too many tags", Flag(tags=[f"t{i}" for i in range(MAX_TAGS + 1)]), "tags"),
    (
        "deeply nested value",
        Flag(variants={"on": _nested(MAX_VALUE_DEPTH + 5), "off": False}),
        'variants["on"]',
    ),
    ("huge value", Flag(variants={"on": {"x": "v" * MAX_ENCODED_BYTES}, "off": False}), "$"),
    (
        "too many targets",
        Flag(targets={"on": [f"u{i}" for i in range(MAX_TARGETS + 1)]}),
        'targets["on"]',
    ),
    ("integer beyond 64 bits", Flag(variants={"on": {"n": 2**64}, "off": False}), "variants"),
]


async def _version(store: Store) -> int:
    return (await store.snapshot_version())[1]


# -- the store contract: limits at commit ---------------------------------------------------


@pytest.mark.parametrize(
    ("what", "flag", "field"), OVER_LIMIT_FLAGS, ids=[c[0] for c in OVER_LIMIT_FLAGS]
)
async def test_commit_refuses_a_flag_over_a_limit(
    store: Store, what: str, flag: Flag, field: str
) -> None:
    before = await _version(store)
    with pytest.raises(InvalidInput) as refused:
        await store.commit([Mutation("flag", "big", "put", flag, None)], [])
    named = field.split("[", maxsplit=1)[0].strip("$")
    assert named in (refused.value.path or ""), (what, refused.value.path)
    assert await _version(store) == before
    assert "big" not in (await store.load()).document.flags


async def test_commit_refuses_a_segment_over_a_limit(store: Store) -> None:
    before = await _version(store)
    too_many = Segment(included=[f"u{i}" for i in range(MAX_TARGETS + 1)])
    forged = Segment(description="beta\r\n2026-01-01 INFO forged")
    for segment in (too_many, forged):
        with pytest.raises(InvalidInput):
            await store.commit([Mutation("segment", "beta", "put", segment, None)], [])
    assert await _version(store) == before


async def test_commit_refuses_an_invalid_key(store: Store) -> None:
    with pytest.raises(InvalidInput, match="invalid key"):
        await store.commit([Mutation("flag", "Bad Key\n", "put", Flag(), None)], [])


async def test_a_flag_over_a_new_limit_still_loads_and_can_be_disabled(
    store: Store, store_backend: Backend
) -> None:
    legacy = Flag(enabled=True, rules=[_rule(i) for i in range(MAX_RULES + 1)], version=1)
    store_backend.write_raw("flag", "legacy", msgspec.json.encode(legacy).decode())
    loaded = (await store.load()).document.flags["legacy"]
    assert len(loaded.rules) == MAX_RULES + 1
    off = msgspec.structs.replace(loaded, enabled=False, version=2)
    # Any other change is refused for the limit; the kill switch is not.
    with pytest.raises(InvalidInput):
        await store.commit([Mutation("flag", "legacy", "put", off, 1)], [])
    on = msgspec.structs.replace(off, enabled=True)
    with pytest.raises(InvalidInput, match="disabled"):
        await store.commit([Mutation("flag", "legacy", "put", on, 1, kill_switch=True)], [])
    await store.commit([Mutation("flag", "legacy", "put", off, 1, kill_switch=True)], [])
    assert (await store.load()).document.flags["legacy"].enabled is False


async def test_load_names_what_cannot_be_decoded_and_reads_the_rest(
    store: Store, store_backend: Backend
) -> None:
    good = Flag(enabled=True, version=1, created_at=utc_now())
    await store.commit([Mutation("flag", "good", "put", good, None)], [])
    store_backend.write_raw("flag", "not-json", "{this is not json")
    store_backend.write_raw("flag", "wrong-type", '{"rules": 7, "surprise": 1}')
    store_backend.write_raw("segment", "bad-segment", "[1, 2]")
    # A key no commit takes (a restore from a hand-edited file, redis-cli), and a byte that
    # is not UTF-8: each its own unreadable record (on Redis the second failed the load).
    store_backend.write_raw("flag", "Bad Key", '{"enabled": true, "version": 1}')
    store_backend.write_raw("flag", "not-utf8", b'{"enabled": true, "owner": "\xff"}')
    state = await store.load()
    assert list(state.document.flags) == ["good"]
    assert sorted(state.unreadable_flags) == ["Bad Key", "not-json", "not-utf8", "wrong-type"]
    assert "invalid key" in state.unreadable_flags["Bad Key"]
    assert "rules" in state.unreadable_flags["wrong-type"]
    assert list(state.unreadable_segments) == ["bad-segment"]
    assert state.document.segments == {}


async def test_fields_a_newer_release_wrote_are_ignored_not_unreadable(
    store: Store, store_backend: Backend
) -> None:
    """An older server sharing the store with a newer one keeps serving the flags the newer
    one wrote: their new fields are ignored, at any depth, and the rest is read as ever."""
    flag = {
        "enabled": True,
        "percentage": 50,
        "rules": [
            {
                "conditions": [{"op": "eq", "attribute": "plan", "values": ["pro"], "new": 1}],
                "variant": "on",
                "new_rule_field": {"x": [1]},
            }
        ],
        "prerequisites": [{"key": "base", "new": True}],
        "version": 3,
        "rollout_plan": {"steps": [10, 50, 100]},
    }
    store_backend.write_raw("flag", "newer", json.dumps(flag), 3)
    segment = {"included": ["u1"], "conditions": [], "version": 2, "audience_size": 12}
    store_backend.write_raw("segment", "beta", json.dumps(segment), 2)
    state = await store.load()
    assert state.unreadable_flags == {}
    assert state.unreadable_segments == {}
    rule = Rule(
        conditions=[Condition(op=Operator.EQ, attribute="plan", values=["pro"])], variant="on"
    )
    assert state.document.flags["newer"] == Flag(
        enabled=True,
        percentage=50,
        rules=[rule],
        prerequisites=[Prerequisite(key="base")],
        version=3,
    )
    assert state.document.segments["beta"] == Segment(included=["u1"], version=2)


# -- a live server over a store holding an unreadable flag -----------------------------------

FLAGS = {
    "ui": {"enabled": True},
    "ui.child": {"enabled": True},
    "other": {"enabled": True, "tags": ["web"]},
}


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path)
    return RedisBackend(shared_redis().url)


def _evaluate(client: httpx.Client, key: str) -> dict[str, Any]:
    answer = client.post(
        f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "u1"}}
    )
    body: dict[str, Any] = answer.json()
    return body


def _readyz(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _serves_unreadable(client: httpx.Client, keys: list[str]) -> bool:
    return _readyz(client)["unreadable"]["flags"] == keys


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "server", store=backend.url) as running:
        create_flags(running, FLAGS)
        yield running


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    """For what the admin service decides alike on every backend (the store-level tests
    above cover each backend's commit)."""
    return SQLiteBackend(tmp_path)


@pytest.fixture
def sqlite_server(sqlite_backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "server", store=sqlite_backend.url) as running:
        create_flags(running, FLAGS)
        yield running


def test_an_unreadable_flag_is_served_in_error_and_the_kill_switch_still_works(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    backend.write_raw("flag", "ui", '{"enabled": true, "rules": "garbage", "new_field": 1}', 2)
    # What a newer server sharing the store wrote is served, its new field ignored.
    backend.write_raw("flag", "newer", '{"enabled": true, "version": 1, "new_field": [1]}', 1)
    with server.admin(timeout=10.0) as admin:
        assert wait_until(lambda: _serves_unreadable(admin, ["ui"]), 10.0)
        assert _evaluate(admin, "newer")["value"] is True
        assert admin.get("/v1/snapshot").json()["flags"]["newer"]["enabled"] is True

        # Served as that flag in error; its child stays gated by it; the rest is served.
        assert _evaluate(admin, "ui")["errorCode"] == "PARSE_ERROR"
        assert _evaluate(admin, "ui.child")["errorCode"] == "PARSE_ERROR"
        assert _evaluate(admin, "other")["variant"] == "on"
        bulk = admin.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u1"}})
        items = {item["key"]: item for item in bulk.json()["flags"]}
        assert items["ui"]["errorCode"] == "PARSE_ERROR"
        assert items["other"]["value"] is True

        # Named in /readyz; left out of the SDK feed (child too) and of the export.
        readyz = _readyz(admin)
        assert any(
            "ui" in warning and "cannot be read" in warning for warning in readyz["warnings"]
        )
        feed = admin.get("/v1/snapshot").json()["flags"]
        assert "ui" not in feed
        assert "ui.child" not in feed
        assert "other" in feed
        export = admin.get("/admin/v1/snapshot").json()["flags"]
        assert "ui" not in export
        assert "ui.child" in export

        # Admin reads answer; a change to it says how to repair it, never 500.
        listing = admin.get("/admin/v1/flags").json()
        assert list(listing["unreadable"]) == ["ui"]
        refused = admin.post("/admin/v1/flags/ui/enable", json={})
        assert refused.status_code == 409, refused.text
        assert "flags delete ui" in refused.json()["detail"]
        assert admin.get("/admin/v1/flags/ui").status_code == 409

    # The kill switch: every other flag off, exit 1 naming the one it could not reach.
    killed = run_flags("kill", "--all", "--reason", "incident", url=server.url)
    assert killed.code == 1, killed
    assert "ui" in killed.err
    assert "not disabled" in killed.err
    with server.admin(timeout=10.0) as admin:
        assert _evaluate(admin, "other")["reason"] == "DISABLED"
        assert _evaluate(admin, "ui.child")["errorCode"] == "PARSE_ERROR"
        by_tag = admin.post("/admin/v1/kill", json={"tag": "web", "reason": "again"})
        assert by_tag.status_code == 200, by_tag.text
        assert by_tag.json()["unreadable"] == ["ui"]

    # A restart serves every other flag (it used to refuse to become ready at all).
    server.stop()
    with running_server(tmp_path / "restarted", store=backend.url) as restarted:
        with restarted.admin(timeout=10.0) as admin:
            assert _readyz(admin)["unreadable"]["flags"] == ["ui"]
            assert _evaluate(admin, "other")["reason"] == "DISABLED"

        # `flags import` repairs it.
        document = tmp_path / "flags.json"
        document.write_text(json.dumps({"flags": {**FLAGS, "ui": {"enabled": True}}}))
        imported = run_flags("import", str(document), url=restarted.url)
        assert imported.code == 0, imported
        with restarted.admin(timeout=10.0) as admin:
            assert wait_until(lambda: _serves_unreadable(admin, []), 10.0)
            assert _evaluate(admin, "ui.child")["value"] is True

        # So does `flags delete`.
        backend.write_raw("flag", "ui", "not json at all", 9)
        with restarted.admin(timeout=10.0) as admin:
            assert wait_until(lambda: _serves_unreadable(admin, ["ui"]), 10.0)
        deleted = run_flags("delete", "ui", "--recursive", "--yes", url=restarted.url)
        assert deleted.code == 0, deleted
        with restarted.admin(timeout=10.0) as admin:
            assert wait_until(lambda: _serves_unreadable(admin, []), 10.0)
            assert _evaluate(admin, "ui")["errorCode"] == "FLAG_NOT_FOUND"
            entries = admin.get("/admin/v1/audit", params={"flag": "ui"}).json()["entries"]
            assert entries[0]["action"] == "delete"


def test_a_flag_the_store_would_refuse_is_never_committed(sqlite_server: RunningServer) -> None:
    """The original finding: 101 rules through PUT .../rules were committed, and from then on
    every admin call (flags disable --all included) answered 500."""
    rules = [
        {"conditions": [{"op": "eq", "attribute": "plan", "values": [f"p{i}"]}], "variant": "on"}
        for i in range(MAX_RULES + 1)
    ]
    with sqlite_server.admin(timeout=10.0) as admin:
        version = admin.get("/admin/v1/flags").json()["snapshot_version"]
        answer = admin.put("/admin/v1/flags/other/rules", json={"rules": rules})
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"].endswith(".rules")
        assert admin.get("/admin/v1/flags").json()["snapshot_version"] == version
        killed = admin.post("/admin/v1/kill", json={"all": True, "reason": "drill"})
        assert killed.status_code == 200, killed.text
        assert killed.json()["unreadable"] == []


def test_a_stored_flag_over_a_new_limit_is_served_warned_and_disabled(
    sqlite_server: RunningServer, sqlite_backend: Backend
) -> None:
    legacy = {"enabled": True, "description": "x" * (MAX_DESCRIPTION_LENGTH + 500), "version": 5}
    sqlite_backend.write_raw("flag", "legacy", json.dumps(legacy), 5)
    with sqlite_server.admin(timeout=10.0) as admin:
        assert wait_until(lambda: _evaluate(admin, "legacy").get("value") is True, 10.0)
        warnings = _readyz(admin)["warnings"]
        assert any("legacy" in w and "over a limit" in w for w in warnings), warnings
        started = time.monotonic()
        off = admin.post("/admin/v1/flags/legacy/disable", json={"reason": "incident"})
        assert off.status_code == 200, off.text
        assert _evaluate(admin, "legacy")["reason"] == "DISABLED"
        assert time.monotonic() - started < 5
