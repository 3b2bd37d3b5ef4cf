"""Segments through the admin API against a live server (issue 4, item 1): create, read,
list, replace (with an optional If-Match), delete; a segment in use cannot be deleted (409
naming the flags); edits change what the flags using it serve; bad segments are refused
naming the field, leaving the store unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flagport.engine.models import MAX_TARGETS, MAX_VALUES
from tests.server._admin import assert_problem, evaluate, store_state
from tests.server._fixtures import live_server
from tests.support.server import RunningServer

server = live_server()

SEGMENTS = "/admin/v1/segments"
BETA = {
    "description": "Beta companies",
    "included": ["acme-1"],
    "excluded": ["evil-1"],
    "conditions": [{"op": "in", "attribute": "company_id", "values": [7, 8]}],
}


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as http:
        yield http


def use_segment(admin: httpx.Client, flag: str, segment: str) -> None:
    rule = {"conditions": [{"op": "in_segment", "values": [segment]}], "variant": "on"}
    answer = admin.post(
        "/admin/v1/flags", json={"key": flag, "enabled": True, "percentage": 0, "rules": [rule]}
    )
    assert answer.status_code == 201, answer.text


def test_segment_crud(admin: httpx.Client) -> None:
    created = admin.put(f"{SEGMENTS}/beta", json=BETA, params={"reason": "first beta wave"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["segment"] == {
        **BETA,
        "key": "beta",
        "version": 1,
        "updated_at": body["segment"]["updated_at"],
    }
    version = body["snapshot_version"]

    got = admin.get(f"{SEGMENTS}/beta")
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert got.json()["included"] == ["acme-1"]
    listed = admin.get(SEGMENTS).json()
    assert [s["key"] for s in listed["segments"]] == ["beta"]
    assert listed["snapshot_version"] == version

    changed = {**BETA, "included": ["acme-1", "acme-2"]}
    replaced = admin.put(f"{SEGMENTS}/beta", json=changed, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["segment"]["version"] == 2
    assert replaced.json()["snapshot_version"] == version + 1
    # Without If-Match a replace is last-writer-wins; a stale one is 412 and changes nothing.
    before = store_state(admin)
    stale = admin.put(f"{SEGMENTS}/beta", json=BETA, headers={"If-Match": '"1"'})
    assert_problem(stale, 412, "version 2")
    assert store_state(admin) == before

    deleted = admin.delete(f"{SEGMENTS}/beta")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == ["beta"]
    assert_problem(admin.get(f"{SEGMENTS}/beta"), 404, "beta")
    assert_problem(admin.delete(f"{SEGMENTS}/beta"), 404, "beta")
    assert admin.get(SEGMENTS).json()["segments"] == []


def test_segment_edits_change_evaluations(admin: httpx.Client, client: httpx.Client) -> None:
    assert admin.put(f"{SEGMENTS}/pilot", json=BETA).status_code == 201
    use_segment(admin, "pilot-feature", "pilot")
    on, off = ("on", "TARGETING_MATCH", True), ("off", "STATIC", False)
    assert evaluate(client, "pilot-feature", {"targetingKey": "acme-1"}) == on
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": 7}) == on
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": "8"}) == on
    assert evaluate(client, "pilot-feature", {"targetingKey": "evil-1", "company_id": 7}) == off
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": 9}) == off
    narrowed = {
        "included": [],
        "conditions": [{"op": "eq", "attribute": "company_id", "values": [9]}],
    }
    assert admin.put(f"{SEGMENTS}/pilot", json=narrowed).status_code == 200
    assert evaluate(client, "pilot-feature", {"targetingKey": "acme-1"}) == off
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": 7}) == off
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": 9}) == on
    # No conditions and nobody included: the segment matches no one.
    assert admin.put(f"{SEGMENTS}/pilot", json={}).status_code == 200
    assert evaluate(client, "pilot-feature", {"targetingKey": "x", "company_id": 9}) == off


def test_segment_in_use_cannot_be_deleted(admin: httpx.Client) -> None:
    assert admin.put(f"{SEGMENTS}/enterprise", json=BETA).status_code == 201
    use_segment(admin, "sso", "enterprise")
    use_segment(admin, "audit-export", "enterprise")
    before = store_state(admin)
    problem = assert_problem(
        admin.delete(f"{SEGMENTS}/enterprise"), 409, "enterprise", "audit-export", "sso"
    )
    assert "in use" in problem["detail"] or "used by" in problem["detail"]
    assert store_state(admin) == before
    # Once no flag uses it, it goes.
    for flag in ("sso", "audit-export"):
        assert admin.put(f"/admin/v1/flags/{flag}/rules", json={"rules": []}).status_code == 200
    assert admin.delete(f"{SEGMENTS}/enterprise").status_code == 200


BAD_SEGMENTS: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("bad-key", "Bad_Key", {}, ("key",)),
    (
        "lt-string",
        "s1",
        {"conditions": [{"op": "lt", "attribute": "a", "values": ["x"]}]},
        ("values[0]",),
    ),
    (
        "semver-abc",
        "s1",
        {"conditions": [{"op": "semver_gte", "attribute": "v", "values": ["abc"]}]},
        ("abc",),
    ),
    (
        "before-yesterday",
        "s1",
        {"conditions": [{"op": "before", "attribute": "d", "values": ["yesterday"]}]},
        ("yesterday",),
    ),
    (
        "nested-segment",
        "s1",
        {"conditions": [{"op": "in_segment", "values": ["other"]}]},
        ("conditions",),
    ),
    (
        "oversized-values",
        "s1",
        {"conditions": [{"op": "in", "attribute": "a", "values": list(range(MAX_VALUES + 1))}]},
        ("values",),
    ),
    (
        "too-many-targets",
        "s1",
        {"included": [f"u{n}" for n in range(MAX_TARGETS + 1)]},
        ("included",),
    ),
    ("unknown-field", "s1", {"regex": ".*"}, ("regex",)),
    ("included-not-strings", "s1", {"included": [1, 2]}, ("included",)),
]


@pytest.mark.parametrize(
    ("key", "body", "mentions"), [b[1:] for b in BAD_SEGMENTS], ids=[b[0] for b in BAD_SEGMENTS]
)
def test_bad_segment_refused(
    admin: httpx.Client, key: str, body: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    before = store_state(admin)
    assert_problem(admin.put(f"{SEGMENTS}/{key}", json=body), 400, *mentions)
    assert store_state(admin) == before


def test_rule_naming_an_unknown_segment_refused(admin: httpx.Client) -> None:
    before = store_state(admin)
    rule = {"conditions": [{"op": "in_segment", "values": ["ghost"]}], "variant": "on"}
    answer = admin.post("/admin/v1/flags", json={"key": "haunted", "rules": [rule]})
    assert_problem(answer, 400, "ghost", "rules[0]")
    assert store_state(admin) == before
