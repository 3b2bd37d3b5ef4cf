"""Config as code against a live server (issue 4, item 2): ``GET /admin/v1/snapshot`` exports
the document (volatile fields only with ``?volatile=true``), ``POST /admin/v1/snapshot``
imports it: a round trip has no diff, ``dry_run`` shows the diff without applying it, and an
import is all or nothing (a bad flag, a cycle or a duplicate key anywhere refuses the whole
document, naming it, with the snapshot version unchanged)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from flagport.document import MAX_DOCUMENT_BYTES
from tests.server._admin import assert_problem, evaluate, store_state
from tests.server._fixtures import live_server
from tests.support.documents import alias_bomb
from tests.support.server import PORTAL_FLAGS, RunningServer

server = live_server(seed=PORTAL_FLAGS)

SNAPSHOT = "/admin/v1/snapshot"
VOLATILE = {"version", "created_at", "updated_at"}
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as http:
        yield http


def export(admin: httpx.Client, **params: str) -> httpx.Response:
    answer = admin.get(SNAPSHOT, params=params)
    assert answer.status_code == 200, answer.text
    return answer


def import_(
    admin: httpx.Client,
    body: Any,
    *,
    dry_run: bool,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return admin.post(
        SNAPSHOT,
        content=content,
        params={"dry_run": str(dry_run).lower(), **params},
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def empty_diff(body: dict[str, Any]) -> bool:
    return all(not v for part in body["diff"].values() for v in part.values())


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


@pytest.fixture(scope="module", autouse=True)
def richer_config(admin: httpx.Client) -> None:
    """Segments, rules, targets, weights and prerequisites, so the round trip covers them."""
    segment = {
        "included": ["acme"],
        "conditions": [{"op": "semver_gte", "attribute": "app_version", "values": ["2.1.0"]}],
    }
    assert admin.put("/admin/v1/segments/early-adopters", json=segment).status_code == 201
    flag = {
        "key": "checkout-v2",
        "enabled": True,
        "percentage": 25.125,
        "owner": "payments",
        "variants": {"a": {"layout": "grid", "ratio": 1.0}, "b": 2, "off": None},
        "on_variant": "a",
        "weights": {"a": 3, "b": 1},
        "targets": {"b": ["qa-1"]},
        "rules": [
            {
                "name": "early",
                "percentage": 50,
                "conditions": [
                    {"op": "in_segment", "values": ["early-adopters"]},
                    {"op": "before", "attribute": "$now", "values": ["2999-01-01T00:00:00Z"]},
                ],
            }
        ],
        "prerequisites": [{"key": "auth-improvements"}],
        "tags": ["payments"],
    }
    assert admin.post("/admin/v1/flags", json=flag).status_code == 201, flag


def test_export_leaves_volatile_fields_out(admin: httpx.Client) -> None:
    document = export(admin).json()
    assert set(document) == {"bucketing", "flags", "segments"}
    assert document["bucketing"] == 1
    assert not VOLATILE & set(walk_keys(document["flags"]))
    assert not VOLATILE & set(walk_keys(document["segments"]))
    assert document["flags"]["checkout-v2"]["percentage"] == 25.125
    assert document["flags"]["checkout-v2"]["variants"]["a"] == {"layout": "grid", "ratio": 1.0}
    assert "early-adopters" in document["segments"]
    # Flat by full key: children are top-level entries, not nested.
    assert "ui-improvements.dropdown-fixes" in document["flags"]

    full = export(admin, volatile="true").json()
    assert full["version"] == admin.get("/admin/v1/flags").json()["snapshot_version"]
    for key, flag in full["flags"].items():
        assert flag["version"] >= 1, key
        assert flag["created_at"]
        assert flag["updated_at"]
    assert full["segments"]["early-adopters"]["version"] >= 1


@pytest.mark.parametrize("volatile", ["false", "true"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip_has_no_diff(admin: httpx.Client, fmt: str, volatile: str) -> None:
    before = store_state(admin)
    exported = export(admin, format=fmt, volatile=volatile)
    headers = YAML if fmt == "yaml" else {}
    if fmt == "yaml":
        assert exported.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(exported.content)["bucketing"] == 1
    for dry_run in (True, False):
        answer = import_(admin, exported.content, dry_run=dry_run, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert empty_diff(body), body
        assert body["dry_run"] is dry_run
        assert body["applied"] is False
        assert body["snapshot_version"] == before[0]
    assert store_state(admin) == before


def test_dry_run_shows_the_diff_then_import_applies_it(
    admin: httpx.Client, client: httpx.Client
) -> None:
    document = export(admin).json()
    wanted = copy.deepcopy(document)
    wanted["flags"]["auth-improvements"].update(enabled=True, percentage=100)
    del wanted["flags"]["enhanced-mobile-nav"]
    wanted["flags"]["dark-mode"] = {"enabled": True, "variants": {"on": "dark", "off": "light"}}
    wanted["segments"]["staff"] = {"included": ["alice"]}
    expected_diff = {
        "flags": {
            "added": ["dark-mode"],
            "changed": ["auth-improvements"],
            "removed": ["enhanced-mobile-nav"],
        },
        "segments": {"added": ["staff"], "changed": [], "removed": []},
    }
    before = store_state(admin)
    preview = import_(admin, wanted, dry_run=True)
    assert preview.status_code == 200, preview.text
    assert preview.json()["diff"] == expected_diff
    assert preview.json()["applied"] is False
    assert store_state(admin) == before
    assert evaluate(client, "enhanced-mobile-nav", {"targetingKey": "u"})[1] == "DISABLED"

    applied = import_(admin, wanted, dry_run=False, reason="release train 42")
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert body["diff"] == expected_diff
    assert body["applied"] is True
    assert body["snapshot_version"] == before[0] + 1  # one atomic commit
    assert evaluate(client, "dark-mode", {"targetingKey": "u"}) == ("on", "STATIC", "dark")
    assert evaluate(client, "auth-improvements", {"targetingKey": "u"})[0] == "on"
    gone = client.post(
        "/ofrep/v1/evaluate/flags/enhanced-mobile-nav", json={"context": {"targetingKey": "u"}}
    )
    assert gone.status_code == 404
    # What was imported is what is exported, and importing it again changes nothing.
    assert export(admin).json() == wanted
    again = import_(admin, wanted, dry_run=True).json()
    assert empty_diff(again), again
    # The import is in the audit log, one entry per key, with the reason.
    entries = admin.get("/admin/v1/audit", params={"flag": "dark-mode"}).json()["entries"]
    assert entries[0]["action"] == "import"
    assert entries[0]["reason"] == "release train 42"
    assert entries[0]["after"]["variants"] == {"on": "dark", "off": "light"}


def test_prune_false_keeps_unlisted_flags(admin: httpx.Client) -> None:
    before = store_state(admin)
    partial = {"flags": {"side-project": {"description": "kept alongside"}}}
    answer = import_(admin, partial, dry_run=False, prune="false")
    assert answer.status_code == 200, answer.text
    assert answer.json()["diff"]["flags"] == {
        "added": ["side-project"],
        "changed": [],
        "removed": [],
    }
    flags = export(admin).json()["flags"]
    assert "side-project" in flags
    assert set(json.loads(before[1])["flags"]) < set(flags)


def _bad_documents(
    base: dict[str, Any],
) -> list[tuple[str, bytes, dict[str, str], tuple[str, ...]]]:
    """(name, body, headers, words the problem must name), each bad in one spot only."""
    many = copy.deepcopy(base)
    for n in range(40):  # plenty of good flags that must not be applied either
        many["flags"][f"bulk.flag-{n:03d}"] = {"enabled": True}
    many["flags"]["bulk"] = {"enabled": True}

    def variant(doc: dict[str, Any]) -> bytes:
        doc = copy.deepcopy(doc)
        doc["flags"]["zz-bad-variant"] = {
            "enabled": True,
            "rules": [
                {"conditions": [{"op": "eq", "attribute": "a", "values": ["x"]}], "variant": "nope"}
            ],
        }
        return json.dumps(doc).encode()

    def cycle(doc: dict[str, Any]) -> bytes:
        doc = copy.deepcopy(doc)
        doc["flags"]["loop-a"] = {"prerequisites": [{"key": "loop-b"}]}
        doc["flags"]["loop-b"] = {"prerequisites": [{"key": "loop-c"}]}
        doc["flags"]["loop-c"] = {"prerequisites": [{"key": "loop-a"}]}
        return json.dumps(doc).encode()

    def wrong_type(doc: dict[str, Any]) -> bytes:
        doc = copy.deepcopy(doc)
        doc["flags"]["auth-improvements"]["rules"] = [
            {
                "conditions": [{"op": "semver_gt", "attribute": "v", "values": ["abc"]}],
                "variant": "on",
            }
        ]
        return json.dumps(doc).encode()

    def unknown_segment(doc: dict[str, Any]) -> bytes:
        doc = copy.deepcopy(doc)
        del doc["segments"]["early-adopters"]  # checkout-v2 still uses it
        return json.dumps(doc).encode()

    dup_json = json.dumps(many)[:-1] + ', "flags": {}}'
    dup_inner = json.dumps(many).replace(
        '"bulk": {"enabled": true}', '"bulk": {"enabled": true, "enabled": false}'
    )
    text = yaml.safe_dump(many, sort_keys=False)
    dup_yaml = text.replace("flags:\n", "flags:\n  ui-improvements: {}\n", 1)
    return [
        ("unknown variant", variant(many), {}, ("zz-bad-variant", "variant")),
        ("prerequisite cycle", cycle(many), {}, ("cycle", "loop-a", "loop-b", "loop-c")),
        ("semver abc", wrong_type(many), {}, ("auth-improvements", "abc")),
        ("unknown segment", unknown_segment(many), {}, ("early-adopters",)),
        ("duplicate key json", dup_json.encode(), {}, ("duplicate", "flags")),
        ("duplicate nested key json", dup_inner.encode(), {}, ("duplicate", "enabled")),
        ("duplicate key yaml", dup_yaml.encode(), YAML, ("duplicate", "ui-improvements")),
        (
            "bad key",
            json.dumps({**many, "flags": {**many["flags"], "Bad Key": {}}}).encode(),
            {},
            ("Bad Key",),
        ),
        (
            "alias bomb",
            alias_bomb().encode(),
            YAML,
            ("line 8, column 13", "aliases and anchors are not supported"),
        ),
        ("unused anchor", b"flags:\n  a: &a {}\n", YAML, ("line 2", "aliases and anchors")),
        ("not json", b'{"flags": {', {}, ("JSON",)),
        ("not yaml", b"flags: [unclosed", YAML, ("YAML",)),
        ("array", b"[]", {}, ()),
        ("future bucketing", json.dumps({**many, "bucketing": 2}).encode(), {}, ("bucketing",)),
    ]


def test_bad_imports_refused_atomically(admin: httpx.Client, client: httpx.Client) -> None:
    base = export(admin).json()
    before = store_state(admin)
    for name, body, headers, mentions in _bad_documents(base):
        for dry_run in (True, False):
            answer = import_(admin, body, dry_run=dry_run, headers=headers)
            assert answer.status_code == 400, (name, answer.text)
            assert_problem(answer, 400, *mentions)
            assert store_state(admin) == before, name
    bulk = client.post(
        "/ofrep/v1/evaluate/flags/bulk.flag-000", json={"context": {"targetingKey": "u"}}
    )
    assert bulk.status_code == 404


def test_large_import_is_one_commit(admin: httpx.Client, client: httpx.Client) -> None:
    document = export(admin).json()
    for n in range(300):
        document["flags"][f"generated.f{n:03d}"] = {"enabled": n % 2 == 0, "tags": ["gen"]}
    document["flags"]["generated"] = {"enabled": True}
    version = store_state(admin)[0]
    answer = import_(admin, document, dry_run=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["snapshot_version"] == version + 1
    assert len(answer.json()["diff"]["flags"]["added"]) == 301
    assert evaluate(client, "generated.f002", {"targetingKey": "u"})[0] == "on"
    assert evaluate(client, "generated.f003", {"targetingKey": "u"})[1] == "DISABLED"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"inner": value}
    return value


def test_only_values_every_export_format_can_write_are_accepted(admin: httpx.Client) -> None:
    """A 400-level nested variant used to be accepted, then made the YAML export of the whole
    configuration fail. It is refused at commit; the deepest value accepted round-trips."""
    before = store_state(admin)
    too_deep = {"key": "deep-config", "variants": {"on": _nested(400), "off": {}}}
    assert_problem(admin.post("/admin/v1/flags", json=too_deep), 400, "nested")
    huge_int = {"key": "deep-config", "variants": {"on": {"n": 2**70}, "off": {}}}
    assert admin.post("/admin/v1/flags", json=huge_int).status_code == 400
    assert store_state(admin) == before

    deepest = {"key": "deep-config", "variants": {"on": _nested(31), "off": {}}}
    created = admin.post("/admin/v1/flags", json=deepest)
    assert created.status_code == 201, created.text
    exported = export(admin, format="yaml")
    assert yaml.safe_load(exported.content)["flags"]["deep-config"]["variants"]["on"]
    again = import_(admin, exported.content, dry_run=True, headers=YAML)
    assert again.status_code == 200, again.text
    assert empty_diff(again.json())
    assert admin.delete("/admin/v1/flags/deep-config").status_code == 200


def test_an_import_over_the_document_limit_is_refused(admin: httpx.Client) -> None:
    before = store_state(admin)
    body = b"{}" + b" " * (MAX_DOCUMENT_BYTES - 1)  # one byte over
    for headers in ({}, YAML):
        answer = import_(admin, body, dry_run=False, headers=headers)
        assert answer.status_code == 413, answer.text[:200]
    assert store_state(admin) == before
