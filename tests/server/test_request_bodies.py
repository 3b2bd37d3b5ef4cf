"""Request input hardening (issue 13), on an app in process: the answers to bodies that are not
JSON (415 problem details, 400 ``INVALID_CONTEXT`` on OFREP), clear messages for an empty body
and a lone surrogate, the import's JSON rule on every admin body, reasons capped in bodies and
in the query string, integers a store cannot keep, ``If-Match`` on a segment that does not
exist, and bounded exposure reports. The walk of every JSON operation is
tests/server/test_body_walker.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.settings import Settings

ADMIN_TOKEN = "bodies-admin-token-0123456789abcdef"
JSON = {"Content-Type": "application/json"}
DOCUMENT = {
    "flags": {
        "bodies-flag": {"enabled": True, "percentage": 50},
        "bodies-other": {"enabled": True},
    },
    "segments": {"bodies-segment": {"included": ["u1"]}},
}

Client = TestClient[Litestar]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    directory: Path = tmp_path_factory.mktemp("bodies")
    settings = Settings(
        store_url=f"sqlite:///{directory / 'flagport.db'}",
        admin_token=ADMIN_TOKEN,
        stats_flush_interval=0.25,
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        answer = client.post("/admin/v1/snapshot", json=DOCUMENT)
        assert answer.status_code == 200, answer.text
        yield client


def problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def version(client: Client) -> int:
    return int(client.get("/admin/v1/flags").json()["snapshot_version"])


# -- media types -----------------------------------------------------------------------------

CONTEXT = b'{"context": {"targetingKey": "u1"}}'


@pytest.mark.parametrize(
    ("content_type", "named"),
    [("text/plain", "'text/plain'"), (None, "needs Content-Type: application/json")],
)
def test_ofrep_refuses_a_body_that_is_not_json_with_invalid_context(
    client: Client, content_type: str | None, named: str
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    single = client.post("/ofrep/v1/evaluate/flags/bodies-flag", content=CONTEXT, headers=headers)
    assert single.status_code == 400, single.text
    body = single.json()
    assert body["key"] == "bodies-flag"
    assert body["errorCode"] == "INVALID_CONTEXT"
    assert named in body["errorDetails"]
    bulk = client.post("/ofrep/v1/evaluate/flags", content=CONTEXT, headers=headers)
    assert bulk.status_code == 400, bulk.text
    assert bulk.json()["errorCode"] == "INVALID_CONTEXT"
    assert named in bulk.json()["errorDetails"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/exposures", b'{"exposures": []}'),
        ("/admin/v1/kill", b'{"all": true, "reason": "csrf"}'),
        ("/admin/v1/snapshot", b"{}"),
    ],
)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_other_routes_refuse_it_with_415(
    client: Client, path: str, body: bytes, content_type: str
) -> None:
    before = version(client)
    found = problem(client.post(path, content=body, headers={"Content-Type": content_type}), 415)
    assert found["title"] == "Unsupported media type"
    assert repr(content_type) in found["detail"]
    assert version(client) == before


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8", "Application/JSON"])
def test_json_with_a_utf8_charset_is_json(client: Client, content_type: str) -> None:
    answer = client.post(
        "/ofrep/v1/evaluate/flags", content=CONTEXT, headers={"Content-Type": content_type}
    )
    assert answer.status_code == 200, answer.text


def test_the_import_reads_json_and_yaml_by_their_type(client: Client) -> None:
    as_yaml = b"flags:\n  bodies-flag: {enabled: true, percentage: 50}\n"
    answer = client.post(
        "/admin/v1/snapshot",
        content=as_yaml,
        params={"dry_run": "true"},
        headers={"Content-Type": "application/yaml"},
    )
    assert answer.status_code == 200, answer.text
    # YAML sent as JSON is read as JSON (and refused as such), never guessed.
    found = problem(
        client.post(
            "/admin/v1/snapshot", content=as_yaml, params={"dry_run": "true"}, headers=JSON
        ),
        400,
    )
    assert "invalid JSON" in found["detail"]


# -- what a body that cannot be read gets called ---------------------------------------------


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_an_empty_body_is_called_empty(client: Client, body: bytes) -> None:
    ofrep = client.post("/ofrep/v1/evaluate/flags", content=body, headers=JSON)
    assert ofrep.status_code == 400
    assert ofrep.json()["errorCode"] == "INVALID_CONTEXT"
    assert ofrep.json()["errorDetails"] == "the request body is empty: a JSON value is required"
    admin = problem(client.post("/admin/v1/kill", content=body, headers=JSON), 400)
    assert admin["detail"] == "the request body is empty: a JSON value is required"


@pytest.mark.parametrize(
    "text", ['"\\ud800"', '"\\ud800x"', '"a\\udc00"', '"\\ud800\\u0041"', '"\\ud83d"']
)
def test_a_lone_surrogate_is_called_by_its_name(client: Client, text: str) -> None:
    escape = text[1:].split("\\")[1][:5]
    for path in ("/ofrep/v1/evaluate/flags", "/admin/v1/flags/bodies-flag/explain"):
        body = b'{"context": {"targetingKey": ' + text.encode() + b"}}"
        answer = client.post(path, content=body, headers=JSON)
        assert answer.status_code == 400, answer.text
        assert "truncated" not in answer.text
        assert f"\\\\{escape} is a lone UTF-16 surrogate" in answer.text, answer.text
    before = version(client)
    document = b'{"flags": {"x": {"description": ' + text.encode() + b"}}}"
    found = problem(client.post("/admin/v1/snapshot", content=document, headers=JSON), 400)
    assert f"\\{escape} is a lone UTF-16 surrogate" in found["detail"]
    assert version(client) == before


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine(client: Client) -> None:
    for key in ('"\\ud83d\\ude00"', '"\\\\ud800"'):
        body = b'{"context": {"targetingKey": ' + key.encode() + b"}}"
        answer = client.post("/admin/v1/flags/bodies-flag/explain", content=body, headers=JSON)
        assert answer.status_code == 200, answer.text


# -- one JSON rule for the import and every admin body ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ('"enabled": true, "enabled": false', "duplicate key 'enabled'"),
        ('"percentage": -0.0', "negative zero (-0.0) is not allowed"),
        ('"percentage": 1e400', "number 1e400 is out of range"),
        ('"percentage": NaN', "NaN is not valid JSON"),
    ],
)
def test_admin_bodies_follow_the_import_json_rule(client: Client, fields: str, named: str) -> None:
    before = version(client)
    document = '{"flags": {"bodies-new": {' + fields + "}}}"
    imported = problem(
        client.post("/admin/v1/snapshot", content=document.encode(), headers=JSON), 400
    )
    assert named in imported["detail"]
    created = problem(
        client.post(
            "/admin/v1/flags",
            content=('{"key": "bodies-new", ' + fields + "}").encode(),
            headers=JSON,
        ),
        400,
    )
    assert created["detail"] == imported["detail"]
    current = client.get("/admin/v1/flags/bodies-flag")
    replaced = problem(
        client.put(
            "/admin/v1/flags/bodies-flag",
            content=("{" + fields + "}").encode(),
            headers={**JSON, "If-Match": current.headers["etag"]},
        ),
        400,
    )
    assert replaced["detail"] == imported["detail"]
    assert version(client) == before


# -- reasons ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "named"),
    [
        ("x" * 1001, "of length <= 1000"),
        ("line one\r\nforged: entry", "without control characters"),
        ("bell\x07", "without control characters"),
        ("escape \x1b[31m red", "without control characters"),
        ("trailing newline\n", "without control characters"),
    ],
)
def test_a_reason_is_capped_in_the_body_and_the_query_string(
    client: Client, reason: str, named: str
) -> None:
    before = version(client)
    for answer, field in [
        (client.post("/admin/v1/flags/bodies-flag/disable", json={"reason": reason}), "$.reason"),
        (client.post("/admin/v1/kill", json={"all": True, "reason": reason}), "$.reason"),
        (client.delete("/admin/v1/flags/bodies-other", params={"reason": reason}), "reason"),
        (client.delete("/admin/v1/segments/bodies-segment", params={"reason": reason}), "reason"),
        (client.post("/admin/v1/snapshot", json=DOCUMENT, params={"reason": reason}), "reason"),
    ]:
        found = problem(answer, 400)
        assert named in found["detail"], found
        assert found["field"] == field
    assert version(client) == before
    assert client.get("/admin/v1/flags/bodies-other").status_code == 200


def test_a_reason_of_1000_characters_is_kept(client: Client) -> None:
    reason = "é" * 1000
    answer = client.post("/admin/v1/flags/bodies-other/enable", params={"reason": reason})
    assert answer.status_code == 200, answer.text
    answer = client.post("/admin/v1/flags/bodies-other/enable", json={"reason": reason})
    assert answer.status_code == 200, answer.text
    entry = client.get("/admin/v1/audit", params={"limit": 1}).json()["entries"][0]
    assert entry["reason"] == reason


def test_a_token_name_has_no_control_characters(client: Client) -> None:
    for name in ("ci\r\nadmin", "ci\n"):
        found = problem(client.post("/admin/v1/tokens", json={"name": name, "scope": "sdk"}), 400)
        assert "letters, digits" in found["detail"], found
        assert found["field"] == "$.name"


# -- integers a store cannot keep, and a since of 400 digits ---------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/admin/v1/audit", {"before_id": str(2**63)}, "before_id"),
        ("/admin/v1/audit", {"before_id": "9" * 400}, "before_id"),
        ("/admin/v1/propagation", {"version": str(2**64)}, "version"),
        ("/admin/v1/flags/bodies-flag/stats", {"since": "9" * 400 + "h"}, "since"),
        ("/admin/v1/flags/bodies-flag/stats", {"since": "1" * 5000 + "d"}, "since"),
        ("/admin/v1/audit", {"since": "9" * 400}, "since"),
    ],
)
def test_absurd_numbers_are_refused_not_500(
    client: Client, path: str, params: dict[str, str], field: str
) -> None:
    found = problem(client.get(path, params=params), 400)
    assert found["field"] == field, found


def test_the_largest_audit_id_a_client_can_hold_is_fine(client: Client) -> None:
    answer = client.get("/admin/v1/audit", params={"before_id": str(2**53 - 1)})
    assert answer.status_code == 200, answer.text


# -- If-Match on a segment -------------------------------------------------------------------


def test_if_match_on_a_segment_that_does_not_exist_is_412(client: Client) -> None:
    before = version(client)
    found = problem(
        client.put("/admin/v1/segments/bodies-missing", json={}, headers={"If-Match": '"1"'}), 412
    )
    assert "'bodies-missing' does not exist" in found["detail"]
    assert client.get("/admin/v1/segments/bodies-missing").status_code == 404
    assert version(client) == before
    # Without If-Match it is created; with the right one replaced; with a stale one refused.
    assert client.put("/admin/v1/segments/bodies-missing", json={}).status_code == 201
    updated = client.put(
        "/admin/v1/segments/bodies-missing", json={"included": ["a"]}, headers={"If-Match": '"1"'}
    )
    assert updated.status_code == 200, updated.text
    stale = client.put("/admin/v1/segments/bodies-missing", json={}, headers={"If-Match": '"1"'})
    problem(stale, 412)
    assert client.delete("/admin/v1/segments/bodies-missing").status_code == 200


# -- exposures -------------------------------------------------------------------------------


def _stats(client: Client, key: str) -> dict[str, Any]:
    answer = client.get(f"/admin/v1/flags/{key}/stats", params={"since": "1h"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _counted(client: Client, key: str, evaluations: int) -> dict[str, Any]:
    """``key``'s stats once the server has written ``evaluations`` of it to the store."""
    deadline = time.monotonic() + 10
    while (stats := _stats(client, key))["total_evaluations"] < evaluations:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    return stats


def _new_flag(client: Client, key: str) -> None:
    """A flag only this test counts (bulk evaluations elsewhere count every flag there is)."""
    answer = client.post("/admin/v1/flags", json={"key": key, "enabled": True, "percentage": 50})
    assert answer.status_code == 201, answer.text


def test_exposure_counts_are_bounded_per_item_and_per_batch(client: Client) -> None:
    _new_flag(client, "bodies-bounded")
    item = {"key": "bodies-bounded", "variant": "on", "count": 1_000_000}
    answer = client.post("/v1/exposures", json={"exposures": [item, {**item, "count": 10**12}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["counted"], body["evaluations"]) == (1, 1_000_000)
    assert [r["index"] for r in body["rejected"]] == [1]
    assert "count must be at most 1,000,000, got 1,000,000,000,000" in body["rejected"][0]["error"]
    assert client.post("/v1/exposures", json={"exposures": [item] * 9}).status_code == 200
    found = problem(client.post("/v1/exposures", json={"exposures": [item] * 11}), 400)
    assert "11,000,000 evaluations in one batch: at most 10,000,000" in found["detail"]
    assert found["field"] == "$.exposures"
    stats = _counted(client, "bodies-bounded", 10_000_000)
    assert stats["total_evaluations"] == 10_000_000
    assert stats["total_reported_evaluations"] == 10_000_000
    assert stats["reported_evaluations"] == {"on": 10_000_000}


def test_stats_keep_reported_exposures_apart_from_served_evaluations(client: Client) -> None:
    _new_flag(client, "bodies-reported")
    for unit in ("a", "b", "c"):
        answer = client.post(
            "/ofrep/v1/evaluate/flags/bodies-reported", json={"context": {"targetingKey": unit}}
        )
        assert answer.status_code == 200, answer.text
    exposure = {"key": "bodies-reported", "variant": "off", "count": 5, "units": ["d"]}
    answer = client.post("/v1/exposures", json={"exposures": [exposure]})
    assert answer.json()["counted"] == 1, answer.text
    stats = _counted(client, "bodies-reported", 8)
    assert stats["total_evaluations"] == 8
    assert stats["total_reported_evaluations"] == 5
    assert stats["reported_evaluations"] == {"off": 5}
    assert stats["units_seen"] == 4


def test_an_exposure_key_that_can_name_no_flag_refuses_the_batch(client: Client) -> None:
    bad = {"key": "bodies-flag\r\nforged", "variant": "on", "count": 1}
    found = problem(client.post("/v1/exposures", json={"exposures": [bad]}), 400)
    assert found["field"] == "$.exposures[0].key"


def test_a_long_unit_is_one_unit_whichever_way_it_comes(client: Client) -> None:
    _new_flag(client, "bodies-long-unit")
    context = {"targetingKey": "L" * 60_000}
    single = client.post("/ofrep/v1/evaluate/flags/bodies-long-unit", json={"context": context})
    assert single.status_code == 200, single.text
    variant = single.json()["variant"]
    assert client.post("/ofrep/v1/evaluate/flags", json={"context": context}).status_code == 200
    exposure = {"key": "bodies-long-unit", "variant": variant, "count": 1, "units": ["L" * 60_000]}
    assert client.post("/v1/exposures", json={"exposures": [exposure]}).json()["counted"] == 1
    stats = _counted(client, "bodies-long-unit", 3)
    assert stats["units_seen"] == 1
    assert stats["unique_units"] == {variant: 1}
