"""The core admin API against a live server: flags CRUD with If-Match, state changes, kill,
delete, audit, tokens, propagation, bad input (a 4xx problem naming the field, the store
unchanged) and durability of acknowledged writes across ``kill -9``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server._fixtures import create_flags, live_server, raw_post, snapshot_version
from tests.support.server import RunningServer, running_server, start_server, wait_ready

FLAGS = "/admin/v1/flags"

server = live_server(
    flags={
        "checkout": {"description": "new checkout", "tags": ["shop"]},
        "checkout.express": {"enabled": True},
        "checkout.wallets": {"enabled": True, "tags": ["shop"]},
        "search": {"enabled": True, "percentage": 25, "tags": ["infra"]},
        "cyc-a": {},
        "cyc-b": {"prerequisites": [{"key": "cyc-a"}]},
    }
)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=10.0) as client:
        yield client


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def get_flag(admin: httpx.Client, key: str) -> httpx.Response:
    return admin.get(f"{FLAGS}/{key}")


# -- create, get, list -----------------------------------------------------------------------


def test_create_get_list(admin: httpx.Client) -> None:
    created = admin.post(FLAGS, json={"key": "banner", "reason": "marketing asked"})
    assert created.status_code == 201, created.text
    body = created.json()
    flag = body["flag"]
    assert flag["key"] == "banner"
    assert flag["enabled"] is False
    assert flag["percentage"] == 100
    assert flag["variants"] == {"on": True, "off": False}
    assert flag["version"] == 1
    assert isinstance(body["snapshot_version"], int)

    got = get_flag(admin, "banner")
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert got.json()["key"] == "banner"

    listed = admin.get(FLAGS).json()
    keys = [f["key"] for f in listed["flags"]]
    assert "banner" in keys
    assert keys == sorted(keys)
    assert listed["snapshot_version"] >= body["snapshot_version"]


def test_duplicate_create_is_409(server: RunningServer, admin: httpx.Client) -> None:
    before = snapshot_version(server)
    body = problem(admin.post(FLAGS, json={"key": "search", "percentage": 1}), 409)
    assert "search" in body["detail"]
    assert snapshot_version(server) == before
    assert get_flag(admin, "search").json()["percentage"] == 25


def test_missing_flag_is_404(admin: httpx.Client) -> None:
    problem(get_flag(admin, "nope"), 404)
    problem(admin.post(f"{FLAGS}/nope/enable", json={}), 404)
    problem(admin.post(f"{FLAGS}/nope/disable", json={}), 404)
    problem(admin.delete(f"{FLAGS}/nope"), 404)


# -- replace with If-Match -------------------------------------------------------------------


def test_put_with_if_match(server: RunningServer, admin: httpx.Client) -> None:
    create_flags(server, {"put-me": {"description": "v1"}})
    current = get_flag(admin, "put-me")
    etag = current.headers["etag"]
    replaced = admin.put(
        f"{FLAGS}/put-me",
        json={"description": "v2", "percentage": 40},
        headers={"If-Match": etag},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["flag"]["version"] == 2
    assert replaced.json()["flag"]["description"] == "v2"
    assert get_flag(admin, "put-me").headers["etag"] == '"2"'

    before = snapshot_version(server)
    stale = admin.put(f"{FLAGS}/put-me", json={"description": "v3"}, headers={"If-Match": etag})
    problem(stale, 412)
    missing = admin.put(f"{FLAGS}/put-me", json={"description": "v3"})
    assert "If-Match" in problem(missing, 428)["detail"]
    assert snapshot_version(server) == before
    assert get_flag(admin, "put-me").json()["description"] == "v2"


# -- state changes ---------------------------------------------------------------------------


def test_enable_disable(server: RunningServer, admin: httpx.Client) -> None:
    create_flags(server, {"toggle": {"percentage": 30}})
    enabled = admin.post(f"{FLAGS}/toggle/enable", json={"reason": "go"})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["flag"]["enabled"] is True
    assert enabled.json()["flag"]["percentage"] == 30  # the stored percentage
    at = admin.post(f"{FLAGS}/toggle/enable", json={"percentage": 12.5})
    assert at.json()["flag"]["percentage"] == 12.5
    disabled = admin.post(f"{FLAGS}/toggle/disable", json={"reason": "stop"})
    assert disabled.status_code == 200
    assert disabled.json()["flag"]["enabled"] is False
    assert disabled.json()["flag"]["percentage"] == 12.5  # disable only clears enabled
    assert disabled.json()["snapshot_version"] > at.json()["snapshot_version"]
    # An empty body is fine too.
    assert admin.post(f"{FLAGS}/toggle/enable").status_code == 200


def test_kill_by_keys_tag_and_all(server: RunningServer, admin: httpx.Client) -> None:
    create_flags(
        server,
        {
            "kill-a": {"enabled": True, "tags": ["blast"]},
            "kill-b": {"enabled": True, "tags": ["blast"]},
            "kill-c": {"enabled": True},
        },
    )
    by_keys = admin.post("/admin/v1/kill", json={"keys": ["kill-c"], "reason": "incident 1"})
    assert by_keys.status_code == 200, by_keys.text
    assert [f["key"] for f in by_keys.json()["flags"]] == ["kill-c"]
    by_tag = admin.post("/admin/v1/kill", json={"tag": "blast", "reason": "incident 2"})
    assert sorted(f["key"] for f in by_tag.json()["flags"]) == ["kill-a", "kill-b"]
    assert all(f["enabled"] is False for f in by_tag.json()["flags"])
    everything = admin.post("/admin/v1/kill", json={"all": True, "reason": "incident 3"})
    assert everything.status_code == 200
    assert all(f["enabled"] is False for f in admin.get(FLAGS).json()["flags"])
    # Re-enable what later tests read.
    for key in ("search", "checkout.express", "checkout.wallets"):
        assert admin.post(f"{FLAGS}/{key}/enable").status_code == 200

    before = snapshot_version(server)
    problem(admin.post("/admin/v1/kill", json={"reason": "what?"}), 400)
    problem(admin.post("/admin/v1/kill", json={"keys": ["kill-a"]}), 400)  # no reason
    problem(admin.post("/admin/v1/kill", json={"keys": ["kill-a", "ghost"], "reason": "x"}), 404)
    assert snapshot_version(server) == before


def test_delete_parent_needs_recursive(server: RunningServer, admin: httpx.Client) -> None:
    create_flags(server, {"old": {}, "old.one": {}, "old.two": {}, "lone": {}})
    before = snapshot_version(server)
    body = problem(admin.delete(f"{FLAGS}/old"), 409)
    assert "recursive" in body["detail"]
    assert snapshot_version(server) == before
    assert get_flag(admin, "old.one").status_code == 200

    gone = admin.delete(f"{FLAGS}/old", params={"recursive": "true"})
    assert gone.status_code == 200, gone.text
    assert sorted(gone.json()["deleted"]) == ["old", "old.one", "old.two"]
    for key in ("old", "old.one", "old.two"):
        assert get_flag(admin, key).status_code == 404
    assert admin.delete(f"{FLAGS}/lone").status_code == 200


# -- audit -----------------------------------------------------------------------------------


def test_every_change_is_audited_with_the_token_name(
    server: RunningServer, admin: httpx.Client
) -> None:
    created = admin.post("/admin/v1/tokens", json={"name": "release-bot", "scope": "admin"})
    assert created.status_code == 201, created.text
    bot = {"Authorization": f"Bearer {created.json()['secret']}"}
    with server.client(headers=bot, timeout=10.0) as client:
        steps = [
            client.post(FLAGS, json={"key": "audited", "reason": "r-create"}),
            client.post(f"{FLAGS}/audited/enable", json={"percentage": 5, "reason": "r-enable"}),
            client.put(
                f"{FLAGS}/audited",
                params={"reason": "r-put"},
                json={"enabled": True, "percentage": 7},
                headers={"If-Match": '"2"'},
            ),
            client.post(f"{FLAGS}/audited/disable", json={"reason": "r-disable"}),
            client.post("/admin/v1/kill", json={"keys": ["audited"], "reason": "r-kill"}),
            client.delete(f"{FLAGS}/audited", params={"reason": "r-delete"}),
        ]
    for step in steps:
        assert step.status_code in (200, 201), step.text
    entries = admin.get("/admin/v1/audit", params={"flag": "audited"}).json()["entries"]
    entries.reverse()  # oldest first
    assert [e["action"] for e in entries] == [
        "create",
        "enable",
        "update",
        "disable",
        "kill",
        "delete",
    ]
    assert [e["reason"] for e in entries] == [
        "r-create",
        "r-enable",
        "r-put",
        "r-disable",
        "r-kill",
        "r-delete",
    ]
    assert {e["actor"] for e in entries} == {"release-bot"}
    assert all(e["at"].endswith("Z") for e in entries)
    create, enable, update, disable, _kill, delete = entries
    # before/after are exported flag bodies: fields at their defaults are left out.
    assert "before" not in create
    assert create["after"].get("enabled", False) is False
    assert enable["before"].get("enabled", False) is False
    assert (enable["after"]["enabled"], enable["after"]["percentage"]) == (True, 5)
    assert update["before"]["percentage"] == 5
    assert update["after"]["percentage"] == 7
    assert disable["before"]["enabled"] is True
    assert disable["after"].get("enabled", False) is False
    assert "after" not in delete
    assert delete["before"]["percentage"] == 7
    by_actor = admin.get("/admin/v1/audit", params={"actor": "release-bot"}).json()["entries"]
    assert len(by_actor) >= 6


# -- tokens ----------------------------------------------------------------------------------


def test_tokens(server: RunningServer, admin: httpx.Client) -> None:
    created = admin.post("/admin/v1/tokens", json={"name": "portal", "scope": "evaluate"})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    token = created.json()["token"]
    assert token["scope"] == "evaluate"
    assert len(secret) >= 32

    listed = admin.get("/admin/v1/tokens")
    assert listed.status_code == 200
    assert secret not in listed.text
    mine = [t for t in listed.json()["tokens"] if t["id"] == token["id"]]
    assert mine == [token]
    assert all(set(t) <= {"id", "name", "scope", "created_at", "revoked_at"} for t in mine)

    evaluation = {"Authorization": f"Bearer {secret}"}
    with server.client(headers=evaluation, timeout=10.0) as client:
        problem(client.get(FLAGS), 403)
        answer = client.post(
            "/ofrep/v1/evaluate/flags/search", json={"context": {"targetingKey": "u"}}
        )
        assert answer.status_code == 200
    with server.client(headers={"X-API-Key": secret}, timeout=10.0) as client:
        problem(client.get(FLAGS), 403)

    admin_token = admin.post("/admin/v1/tokens", json={"name": "temp-admin", "scope": "admin"})
    admin_secret = admin_token.json()["secret"]
    with server.client(headers={"Authorization": f"Bearer {admin_secret}"}) as client:
        assert client.get(FLAGS).status_code == 200
        revoked = admin.delete(f"/admin/v1/tokens/{admin_token.json()['token']['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"]
        problem(client.get(FLAGS), 401)
    problem(admin.delete("/admin/v1/tokens/0000"), 404)

    with server.client(timeout=10.0) as anonymous:
        problem(anonymous.get(FLAGS), 401)
        problem(anonymous.get(FLAGS, headers={"Authorization": "Bearer wrong"}), 401)
        problem(anonymous.get(FLAGS, headers={"Authorization": "Basic abc"}), 401)


# -- propagation -----------------------------------------------------------------------------


def test_propagation(server: RunningServer, admin: httpx.Client) -> None:
    changed = admin.post(f"{FLAGS}/search/enable", json={"percentage": 26})
    version = changed.json()["snapshot_version"]
    # Workers report their applied version in a heartbeat right after applying it; the CLI
    # polls this endpoint the same way.
    started = time.monotonic()
    while True:
        answer = admin.get("/admin/v1/propagation", params={"version": version})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if body["complete"] or time.monotonic() - started > 2.0:
            break
        time.sleep(0.005)
    assert body["version"] == version
    assert body["complete"] is True
    assert body["stragglers"] == []
    assert len(body["workers"]) == 1
    assert body["workers"][0]["applied_version"] >= version

    future = admin.get("/admin/v1/propagation", params={"version": version + 1000}).json()
    assert future["complete"] is False
    assert len(future["stragglers"]) == 1

    problem(admin.get("/admin/v1/propagation"), 400)
    problem(admin.get("/admin/v1/propagation", params={"version": "ten"}), 400)


# -- bad input: a 4xx naming the problem, the store unchanged --------------------------------

LONG_KEY = "a" * 201

BAD_CREATES: list[tuple[str, bytes, str]] = [
    ("slash", b'{"key": "a/b"}', "key"),
    ("space", b'{"key": "a b"}', "key"),
    ("uppercase", b'{"key": "Checkout"}', "key"),
    ("dotdot", b'{"key": "checkout..x"}', "key"),
    ("only-dots", b'{"key": ".."}', "key"),
    ("leading-dot", b'{"key": ".checkout"}', "key"),
    ("201-chars", b'{"key": "' + LONG_KEY.encode() + b'"}', "key"),
    ("empty-key", b'{"key": ""}', "key"),
    ("no-key", b'{"enabled": true}', "key"),
    ("key-type", b'{"key": 7}', "key"),
    ("pct-negative", b'{"key": "bad-pct", "percentage": -1}', "percentage"),
    ("pct-over", b'{"key": "bad-pct", "percentage": 100.0001}', "percentage"),
    ("pct-decimals", b'{"key": "bad-pct", "percentage": 12.3456}', "percentage"),
    ("pct-string", b'{"key": "bad-pct", "percentage": "ten"}', "percentage"),
    ("pct-nan", b'{"key": "bad-pct", "percentage": NaN}', "json"),
    ("pct-infinity", b'{"key": "bad-pct", "percentage": Infinity}', "json"),
    ("pct-1e400", b'{"key": "bad-pct", "percentage": 1e400}', "json"),
    ("enabled-type", b'{"key": "bad-type", "enabled": "yes"}', "enabled"),
    ("unknown-field", b'{"key": "bad-field", "enabeld": true}', "enabeld"),
    ("on-variant", b'{"key": "bad-variant", "on_variant": "nope"}', "variant"),
    ("off-variant", b'{"key": "bad-variant", "off_variant": "nope"}', "variant"),
    ("weights", b'{"key": "bad-variant", "weights": {"zzz": 1}}', "weights"),
    ("targets", b'{"key": "bad-variant", "targets": {"zzz": ["u1"]}}', "variant"),
    ("array-value", b'{"key": "bad-value", "variants": {"on": [1], "off": false}}', "variant"),
    ("self-prerequisite", b'{"key": "bad-pre", "prerequisites": [{"key": "bad-pre"}]}', "cycle"),
    ("unknown-prereq", b'{"key": "bad-pre", "prerequisites": [{"key": "ghost"}]}', "ghost"),
    ("malformed", b'{"key": "bad-json"', "json"),
    ("not-object", b'["bad"]', "object"),
]


@pytest.mark.parametrize(
    ("body", "needle"), [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES]
)
def test_bad_create(server: RunningServer, admin: httpx.Client, body: bytes, needle: str) -> None:
    before = snapshot_version(server)
    flags_before = admin.get(FLAGS).json()["flags"]
    answer = raw_post(admin, FLAGS, body)
    assert 400 <= answer.status_code < 500, answer.text
    found = problem(answer, answer.status_code)
    named = f"{found.get('field') or ''} {found['detail']}".lower()
    assert needle.lower() in named, found
    assert snapshot_version(server) == before
    assert admin.get(FLAGS).json()["flags"] == flags_before


BAD_ENABLES: list[tuple[str, bytes]] = [
    ("negative", b'{"percentage": -1}'),
    ("over", b'{"percentage": 100.0001}'),
    ("decimals", b'{"percentage": 12.3456}'),
    ("string", b'{"percentage": "ten"}'),
    ("nan", b'{"percentage": NaN}'),
    ("unknown-field", b'{"percent": 10}'),
]


@pytest.mark.parametrize("body", [c[1] for c in BAD_ENABLES], ids=[c[0] for c in BAD_ENABLES])
def test_bad_enable(server: RunningServer, admin: httpx.Client, body: bytes) -> None:
    before = snapshot_version(server)
    flag_before = get_flag(admin, "search").json()
    found = problem(raw_post(admin, f"{FLAGS}/search/enable", body), 400)
    named = f"{found.get('field') or ''} {found['detail']}".lower()
    assert "percent" in named or "json" in named, found
    assert snapshot_version(server) == before
    assert get_flag(admin, "search").json() == flag_before


def test_prerequisite_cycle_through_put(server: RunningServer, admin: httpx.Client) -> None:
    before = snapshot_version(server)
    etag = get_flag(admin, "cyc-a").headers["etag"]
    answer = admin.put(
        f"{FLAGS}/cyc-a", json={"prerequisites": [{"key": "cyc-b"}]}, headers={"If-Match": etag}
    )
    found = problem(answer, 400)
    assert "cycle" in found["detail"]
    assert "prerequisites" in (found.get("field") or "")
    assert snapshot_version(server) == before
    assert get_flag(admin, "cyc-a").json()["prerequisites"] == []


def test_bad_put_bodies(server: RunningServer, admin: httpx.Client) -> None:
    before = snapshot_version(server)
    etag = get_flag(admin, "search").headers["etag"]
    for body, needle in [
        (b'{"on_variant": "nope"}', "variant"),
        (b'{"percentage": 12.3456}', "percentage"),
        (b'{"percentage": NaN}', "json"),
        (b"{", "json"),
    ]:
        answer = admin.put(
            f"{FLAGS}/search",
            content=body,
            headers={"If-Match": etag, "Content-Type": "application/json"},
        )
        found = problem(answer, 400)
        assert needle in f"{found.get('field') or ''} {found['detail']}".lower(), found
    problem(admin.put(f"{FLAGS}/search", json={}, headers={"If-Match": "three"}), 400)
    assert snapshot_version(server) == before


# -- durability ------------------------------------------------------------------------------


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    workdir = tmp_path / "durable"
    first = start_server(workdir, workers=2)
    try:
        with first.admin(timeout=10.0) as admin:
            created = admin.post(FLAGS, json={"key": "durable", "percentage": 42})
            assert created.status_code == 201
            enabled = admin.post(f"{FLAGS}/durable/enable", json={"reason": "before the crash"})
            assert enabled.status_code == 200
            acknowledged = enabled.json()["snapshot_version"]
    finally:
        first.kill()  # SIGKILL the whole process group, right after the acknowledgement
    with running_server(workdir, workers=1) as second:
        wait_ready(second)
        with second.admin(timeout=10.0) as admin:
            flag = admin.get(f"{FLAGS}/durable").json()
            assert (flag["enabled"], flag["percentage"]) == (True, 42)
            assert admin.get(FLAGS).json()["snapshot_version"] >= acknowledged
            actions = [e["action"] for e in admin.get("/admin/v1/audit").json()["entries"]]
            assert actions[:2] == ["enable", "create"]
        with second.client() as client:
            answer = client.post(
                "/ofrep/v1/evaluate/flags/durable", json={"context": {"targetingKey": "u"}}
            )
            assert answer.status_code == 200
            assert int(answer.headers["x-flagport-snapshot"]) >= acknowledged


LAX = [
    ("pct-numeric-string", FLAGS, b'{"key": "lax-a", "percentage": "10"}'),
    ("enabled-int", FLAGS, b'{"key": "lax-b", "enabled": 1}'),
    ("enabled-string", FLAGS, b'{"key": "lax-c", "enabled": "true"}'),
    ("enable-pct-string", f"{FLAGS}/search/enable", b'{"percentage": "5"}'),
]


@pytest.mark.parametrize(("path", "body"), [c[1:] for c in LAX], ids=[c[0] for c in LAX])
def test_wrong_json_types_are_refused(
    server: RunningServer, admin: httpx.Client, path: str, body: bytes
) -> None:
    before = snapshot_version(server)
    answer = raw_post(admin, path, body)
    assert answer.status_code == 400, answer.text
    assert snapshot_version(server) == before
