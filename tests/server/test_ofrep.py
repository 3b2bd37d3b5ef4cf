"""OFREP v0.3 single and bulk plus ``GET /v1/evaluate`` against a live ``flags serve``.

docs/spec.md section 4 and ../shared/spec/ofrep/NOTES.md: reasons, ``variant`` and
``errorDetails`` always, floats as floats, bulk ETag and 304, error items in bulk, the
400/404/405/413 shapes, hostile bodies, and answers equal to the bucketing spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import mmh3
import pytest

import flagport
from tests.server._fixtures import live_server, raw_post, snapshot_version
from tests.support.server import PORTAL_FLAGS, RunningServer

SINGLE = "/ofrep/v1/evaluate/flags/"
BULK = "/ofrep/v1/evaluate/flags"
OFREP_REASONS = {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED"}
PORTAL_CHILDREN = (
    "ui-improvements.mobile-navigation-fix",
    "ui-improvements.dropdown-fixes",
    "ui-improvements.responsive-tables",
)

FLAGS: dict[str, dict[str, Any]] = {
    "split": {"enabled": True, "percentage": 37.5},
    "color": {
        "enabled": True,
        "variants": {"red": "#f00", "blue": "#00f"},
        "on_variant": "red",
        "off_variant": "blue",
    },
    "ratio": {"enabled": True, "variants": {"on": 1.0, "off": 0.5}},
    "limit": {"enabled": True, "variants": {"on": 7, "off": 0}},
    "theme": {
        "enabled": True,
        "variants": {"on": {"dark": True, "nested": {"n": 1.5, "list": [1, "x"]}}, "off": {}},
    },
    "weighted": {
        "enabled": True,
        "percentage": 80,
        "variants": {"a": "A", "b": "B", "c": "C", "off": "none"},
        "on_variant": "a",
        "weights": {"a": 1, "b": 2, "c": 1},
    },
    "targeted": {"enabled": True, "percentage": 0, "targets": {"on": ["vip"]}},
    "killed": {"enabled": False, "percentage": 50},
    "experiment": {
        "enabled": True,
        "percentage": 50,
        "variants": {"control": "A", "treatment": "B"},
        "on_variant": "treatment",
        "off_variant": "control",
    },
    "experiment.banner": {"enabled": True},
}

server = live_server(seed=PORTAL_FLAGS, flags=FLAGS)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as http:
        yield http


def single(client: httpx.Client, key: str, context: Any) -> httpx.Response:
    return client.post(SINGLE + key, json={"context": context})


# -- successes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "variant", "reason"),
    [
        ("color", "#f00", "red", "STATIC"),
        ("ratio", 1.0, "on", "STATIC"),
        ("limit", 7, "on", "STATIC"),
        ("theme", {"dark": True, "nested": {"n": 1.5, "list": [1, "x"]}}, "on", "STATIC"),
        ("killed", False, "off", "DISABLED"),
        ("auth-improvements", False, "off", "DISABLED"),
    ],
)
def test_single_success_shape(
    client: httpx.Client, key: str, value: Any, variant: str, reason: str
) -> None:
    answer = single(client, key, {"targetingKey": "user-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["key"] == key
    assert body["value"] == value
    assert type(body["value"]) is type(value)
    assert body["variant"] == variant
    assert body["reason"] == reason
    assert "errorCode" not in body


def test_floats_stay_floats_on_the_wire(client: httpx.Client) -> None:
    raw = single(client, "ratio", {"targetingKey": "u"}).content
    assert b'"value":1.0' in raw, raw
    raw = single(client, "limit", {"targetingKey": "u"}).content
    assert b'"value":7' in raw, raw
    assert b'"value":7.0' not in raw, raw
    raw = single(client, "theme", {"targetingKey": "u"}).content
    assert b'"n":1.5' in raw, raw


def test_reasons_split_targeting_static(client: httpx.Client) -> None:
    assert single(client, "targeted", {"targetingKey": "vip"}).json()["reason"] == (
        "TARGETING_MATCH"
    )
    other = single(client, "targeted", {"targetingKey": "nobody"}).json()
    assert (other["variant"], other["value"], other["reason"]) == ("off", False, "STATIC")
    assert single(client, "split", {"targetingKey": "u"}).json()["reason"] == "SPLIT"


def test_disabled_flag_needs_no_unit(client: httpx.Client) -> None:
    """A kill switch is served explicitly, even to a context without a unit."""
    answer = single(client, "killed", {"targetingKey": ""})
    assert answer.status_code == 200, answer.text
    assert answer.json()["reason"] == "DISABLED"


def test_hierarchy_gating_metadata(client: httpx.Client) -> None:
    body = single(client, "performance-monitoring.real-time-metrics", {"targetingKey": "u"}).json()
    assert body["value"] is False
    assert body["variant"] == "off"
    assert body["reason"] == "DISABLED"
    assert body["metadata"] == {"gatedBy": "performance-monitoring"}


def test_answers_say_on_when_the_values_do_not(client: httpx.Client) -> None:
    """``metadata.on`` (the flag serves anything but its own off variant) on the items of
    flags whose values are not plain on/off booleans, single and bulk alike; a plain on/off
    flag's answer stays as it was, its value says it."""
    treated = next(f"u{n}" for n in range(1000) if flagport.bucket("experiment", f"u{n}") < 50_000)
    control = next(f"u{n}" for n in range(1000) if flagport.bucket("experiment", f"u{n}") >= 50_000)
    expected = {
        (treated, "experiment"): ("treatment", {"on": True}),
        (control, "experiment"): ("control", {"on": False}),
        (treated, "experiment.banner"): ("on", None),
        (control, "experiment.banner"): ("off", {"gatedBy": "experiment"}),
        (treated, "color"): ("red", {"on": True}),
        (treated, "ratio"): ("on", {"on": True}),
    }
    for unit in (treated, control):
        bulk = client.post(BULK, json={"context": {"targetingKey": unit}})
        assert bulk.status_code == 200, bulk.text
        items = {item["key"]: item for item in bulk.json()["flags"]}
        for key in ("experiment", "experiment.banner"):
            body = single(client, key, {"targetingKey": unit}).json()
            assert body == items[key]
            assert (body["variant"], body.get("metadata")) == expected[(unit, key)], (unit, key)
    for key in ("color", "ratio"):
        body = single(client, key, {"targetingKey": treated}).json()
        assert (body["variant"], body.get("metadata")) == expected[(treated, key)], key
    weighted = single(client, "weighted", {"targetingKey": treated}).json()
    assert weighted["metadata"] == {"on": weighted["variant"] != "off"}
    raw = single(client, "killed", {"targetingKey": "u"}).content
    assert raw == b'{"key":"killed","reason":"DISABLED","variant":"off","value":false}'


def test_evaluation_headers(server: RunningServer, client: httpx.Client) -> None:
    version = snapshot_version(server)
    for answer in (
        single(client, "color", {"targetingKey": "u"}),
        client.post(BULK, json={"context": {"targetingKey": "u"}}),
        client.get("/v1/evaluate/color", params={"targetingKey": "u"}),
        single(client, "missing-flag", {"targetingKey": "u"}),
    ):
        assert int(answer.headers["x-flagport-snapshot"]) >= version
        assert answer.headers["x-flagport-worker"].isdigit()


# -- errors ----------------------------------------------------------------------------------


def _assert_failure(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["errorCode"] == code, body
    assert isinstance(body["errorDetails"], str), body
    assert body["errorDetails"], body
    assert "value" not in body
    return body  # type: ignore[no-any-return]


def test_flag_not_found(client: httpx.Client) -> None:
    body = _assert_failure(
        single(client, "no-such-flag", {"targetingKey": "u"}), 404, ("FLAG_NOT_FOUND")
    )
    assert body["key"] == "no-such-flag"
    _assert_failure(client.get("/v1/evaluate/no-such-flag?targetingKey=u"), 404, "FLAG_NOT_FOUND")
    # Keys outside the grammar (the Python provider does not percent-encode "/").
    _assert_failure(single(client, "Bad/Key", {"targetingKey": "u"}), 404, "FLAG_NOT_FOUND")


def test_targeting_key_absent_is_an_empty_one(client: httpx.Client) -> None:
    """An anonymous visitor: per-flag answers, TARGETING_KEY_MISSING only for the flags that
    need a unit, never for the whole bulk request (docs/spec.md section 4)."""
    color = single(client, "color", {"plan": "pro"})
    assert color.status_code == 200, color.text
    assert color.content == single(client, "color", {"targetingKey": "", "plan": "pro"}).content
    body = _assert_failure(single(client, "split", {"plan": "pro"}), 400, "TARGETING_KEY_MISSING")
    assert body["key"] == "split"
    for context in ({}, {"plan": "pro"}):
        anonymous = client.post(BULK, json={"context": context})
        assert anonymous.status_code == 200, anonymous.text
        empty = client.post(BULK, json={"context": {**context, "targetingKey": ""}})
        assert anonymous.json()["flags"] == empty.json()["flags"]
        items = {item["key"]: item for item in anonymous.json()["flags"]}
        assert items["split"]["errorCode"] == "TARGETING_KEY_MISSING"
        assert items["color"]["reason"] == "STATIC"
        assert items["killed"]["reason"] == "DISABLED"


@pytest.mark.parametrize("bad", [7, 1.5, True, None, ["a"], {"id": 1}])
def test_targeting_key_not_a_string(client: httpx.Client, bad: Any) -> None:
    _assert_failure(single(client, "color", {"targetingKey": bad}), 400, "INVALID_CONTEXT")
    _assert_failure(
        client.post(BULK, json={"context": {"targetingKey": bad}}), 400, "INVALID_CONTEXT"
    )


def test_flag_needing_a_unit_without_one(client: httpx.Client) -> None:
    """Single: 400 TARGETING_KEY_MISSING. Bulk: an error item; the others evaluate."""
    body = _assert_failure(
        single(client, "split", {"targetingKey": ""}), 400, ("TARGETING_KEY_MISSING")
    )
    assert body["key"] == "split"
    answer = client.post(BULK, json={"context": {"targetingKey": ""}})
    assert answer.status_code == 200, answer.text
    items = {item["key"]: item for item in answer.json()["flags"]}
    for key in ("split", "weighted"):
        assert items[key]["errorCode"] == "TARGETING_KEY_MISSING"
        assert items[key]["errorDetails"]
        assert "value" not in items[key]
    assert items["color"] == {
        "key": "color",
        "value": "#f00",
        "variant": "red",
        "reason": "STATIC",
        "metadata": {"on": True},
    }
    assert items["killed"]["reason"] == "DISABLED"
    assert items["targeted"]["reason"] == "STATIC"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"context": "u"}',
        b'{"context": []}',
        b'{"context": null}',
        b"{}",
        b'"context"',
        b'{"context": {"targetingKey": "u"}',
        b"\xff\xfe",
    ],
    ids=repr,
)
def test_malformed_body_is_invalid_context(client: httpx.Client, body: bytes) -> None:
    for path in (SINGLE + "color", BULK):
        answer = raw_post(client, path, body)
        _assert_failure(answer, 400, "INVALID_CONTEXT")


def test_other_methods_get_405(client: httpx.Client) -> None:
    for method, path in [
        ("GET", SINGLE + "color"),
        ("PUT", SINGLE + "color"),
        ("DELETE", SINGLE + "color"),
        ("GET", BULK),
        ("PATCH", BULK),
        ("POST", "/v1/evaluate/color"),
        ("TRACE", BULK),
    ]:
        answer = client.request(method, path, json={"context": {"targetingKey": "u"}})
        assert answer.status_code == 405, (method, path, answer.text)
        assert "POST" in answer.headers["allow"] or "GET" in answer.headers["allow"]
        assert answer.json()["errorDetails"]


def test_ten_megabyte_body_is_refused(client: httpx.Client) -> None:
    payload = b'{"context": {"targetingKey": "u", "blob": "' + b"x" * 10_000_000 + b'"}}'
    for path in (SINGLE + "color", BULK):
        answer = raw_post(client, path, payload)
        assert answer.status_code == 413, answer.text[:200]
        assert answer.json()["errorDetails"]


@pytest.mark.parametrize("shape", ["list", "object"])
def test_context_nested_1000_deep(client: httpx.Client, shape: str) -> None:
    opening, closing = ("[", "]") if shape == "list" else ('{"a":', "}")
    deep = opening * 1000 + "1" + closing * 1000
    payload = ('{"context": {"targetingKey": "u", "deep": ' + deep + "}}").encode()
    for path in (SINGLE + "color", SINGLE + "split", BULK):
        answer = raw_post(client, path, payload)
        assert 400 <= answer.status_code < 500, answer.text[:300]
        assert answer.json()["errorDetails"]
    # The server is still fine afterwards.
    assert single(client, "color", {"targetingKey": "u"}).status_code == 200


# -- bulk ------------------------------------------------------------------------------------


def test_bulk_shape_and_etag(server: RunningServer, client: httpx.Client) -> None:
    context = {"targetingKey": "user-7", "plan": "pro"}
    answer = client.post(BULK, json={"context": context})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    keys = [item["key"] for item in body["flags"]]
    assert set(FLAGS) <= set(keys)
    assert "ui-improvements.dropdown-fixes" in keys
    for item in body["flags"]:
        assert item["reason"] in OFREP_REASONS
        assert isinstance(item["variant"], str)
        assert item["variant"]
    assert any(
        stream["type"] == "sse" and "/v1/stream" in json.dumps(stream)
        for stream in body["eventStreams"]
    )
    etag = answer.headers["etag"]
    match = re.fullmatch(r'"(\d+)-([0-9a-zA-Z]+)"', etag)
    assert match, etag
    assert int(match.group(1)) == int(answer.headers["x-flagport-snapshot"])

    # Same context (keys in another order): 304 with the ETag sent back verbatim.
    reordered = {"plan": "pro", "targetingKey": "user-7"}
    again = client.post(BULK, json={"context": reordered}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    # Another context: another ETag, full answer.
    other = client.post(
        BULK, json={"context": {"targetingKey": "user-8"}}, headers={"If-None-Match": etag}
    )
    assert other.status_code == 200
    assert other.headers["etag"] != etag
    # A stale ETag after a change: full answer, new version in the ETag.
    with server.admin(timeout=10.0) as admin:
        changed = admin.post("/admin/v1/flags/limit/enable", json={"reason": "etag test"})
        assert changed.status_code == 200, changed.text
    after = client.post(BULK, json={"context": context}, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    assert after.headers["etag"].startswith(f'"{changed.json()["snapshot_version"]}-')


@pytest.mark.parametrize("value", ["", "yesterday", "-5", "1.5", "2026-13-40T00:00:00Z"])
def test_bulk_malformed_last_modified(client: httpx.Client, value: str) -> None:
    answer = client.post(
        BULK, params={"flagConfigLastModified": value}, json={"context": {"targetingKey": "u"}}
    )
    body = _assert_failure(answer, 400, "INVALID_CONTEXT")
    assert "flagConfigLastModified" in body["errorDetails"]


@pytest.mark.parametrize("value", ["1771622898", "2026-02-20T21:28:18Z", "0"])
def test_bulk_valid_last_modified(client: httpx.Client, value: str) -> None:
    answer = client.post(
        BULK,
        params={"flagConfigLastModified": value, "flagConfigEtag": "abc"},
        json={"context": {"targetingKey": "u"}},
    )
    assert answer.status_code == 200, answer.text


# -- GET /v1/evaluate ------------------------------------------------------------------------


def test_get_evaluate_same_body_as_single(client: httpx.Client) -> None:
    for key in ("color", "split", "weighted", "theme", "killed", "ui-improvements.dropdown-fixes"):
        posted = single(client, key, {"targetingKey": "user-42", "company_id": "7"})
        got = client.get(f"/v1/evaluate/{key}", params={"targetingKey": "user-42", "company_id": 7})
        assert got.status_code == posted.status_code == 200
        assert got.content == posted.content


def test_get_evaluate_without_unit(client: httpx.Client) -> None:
    answer = client.get("/v1/evaluate/split")
    _assert_failure(answer, 400, "TARGETING_KEY_MISSING")


# -- bucketing: served answers equal the spec -------------------------------------------------


def _units(n: int) -> list[str]:
    return [f"user-{i}" for i in range(n)] + ["ü-Σ-用户", "", "0", "-3", "ejOoVL", "6LvT0"]


def _expected_weighted(unit: str) -> str:
    if flagport.bucket("weighted", unit) >= 80_000:
        return "off"
    point = (mmh3.hash(f"weighted:{unit}", 1, False) * 4) >> 32
    return "a" if point < 1 else "b" if point < 3 else "c"


def test_single_answers_equal_bucketing(client: httpx.Client) -> None:
    units = [u for u in _units(1000) if u]
    included = 0
    for unit in units:
        body = single(client, "split", {"targetingKey": unit}).json()
        expected = flagport.bucket("split", unit) < 37_500
        # Independently of the engine: MurmurHash3_x86_32, unsigned, scaled to 100,000.
        assert (
            flagport.bucket("split", unit) == (mmh3.hash(f"split:{unit}", 0, False) * 100_000) >> 32
        )
        assert body["value"] is expected, unit
        assert body["variant"] == ("on" if expected else "off")
        assert body["reason"] == "SPLIT"
        included += expected
    assert 0.33 < included / len(units) < 0.42


def test_bulk_answers_equal_bucketing(client: httpx.Client) -> None:
    seen: dict[str, int] = {}
    for unit in _units(3000)[:-6] + _units(0):
        if not unit:
            continue
        answer = client.post(BULK, json={"context": {"targetingKey": unit}})
        items = {item["key"]: item for item in answer.json()["flags"]}
        variant = _expected_weighted(unit)
        assert items["weighted"]["variant"] == variant, unit
        assert items["weighted"]["value"] == {"a": "A", "b": "B", "c": "C", "off": "none"}[variant]
        assert items["weighted"]["reason"] == "SPLIT"
        assert items["split"]["value"] is (flagport.bucket("split", unit) < 37_500), unit
        seen[variant] = seen.get(variant, 0) + 1
    total = sum(seen.values())
    # 80 % included, split 1:2:1.
    assert 0.17 < seen["off"] / total < 0.23
    assert 0.37 < seen["b"] / total < 0.43


def test_portal_children_follow_parent_at_ten_percent(
    server: RunningServer, client: httpx.Client
) -> None:
    """The runbook: enabling ``ui-improvements`` at 10 % turns all three children on for the
    same ~10 % of units: exactly those with ``bucket("ui-improvements", unit) < 10000``."""
    with server.admin(timeout=10.0) as admin:
        answer = admin.post(
            "/admin/v1/flags/ui-improvements/enable",
            json={"percentage": 10, "reason": "runbook step 1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["flag"]["percentage"] == 10
    units = [f"customer-{i}" for i in range(3000)]
    on = 0
    for unit in units:
        items = {
            item["key"]: item
            for item in client.post(BULK, json={"context": {"targetingKey": unit}}).json()["flags"]
        }
        expected = flagport.bucket("ui-improvements", unit) < 10_000
        assert items["ui-improvements"]["value"] is expected, unit
        for child in PORTAL_CHILDREN:
            assert items[child]["value"] is expected, (child, unit)
            assert items[child]["reason"] == "SPLIT"
        # Children of the still-disabled parent stay off.
        assert items["performance-monitoring.real-time-metrics"]["value"] is False
        on += expected
    assert 0.085 < on / len(units) < 0.115
