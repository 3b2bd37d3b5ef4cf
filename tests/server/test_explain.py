"""``POST /admin/v1/flags/{key}/explain`` against a live server (issue 4, item 5): the full
trace (each ancestor and prerequisite, each rule and its conditions, hash input, hash,
bucket, threshold, result and reason), checked against the bucketing spec by hand, and a
result always equal to what OFREP serves for the same context."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import mmh3
import pytest

from tests.server._admin import assert_problem
from tests.server._fixtures import create_flags, live_server
from tests.support.server import PORTAL_FLAGS, RunningServer

FLAGS: dict[str, dict[str, Any]] = {
    # Context-dependent, so it stays a gate (a gate that always passes with STATIC is
    # compiled away and would not show in the trace).
    "billing": {
        "enabled": True,
        "rules": [
            {
                "conditions": [{"op": "eq", "attribute": "plan", "values": ["blocked"]}],
                "variant": "off",
            }
        ],
    },
    "reports": {"enabled": True, "percentage": 40},
    "reports.export": {
        "enabled": True,
        "percentage": 100,
        "variants": {"csv": "csv", "xlsx": "xlsx", "none": None},
        "on_variant": "csv",
        "off_variant": "none",
        "weights": {"csv": 2, "xlsx": 1},
        "targets": {"xlsx": ["boss"]},
        "rules": [
            {
                "name": "beta companies",
                "conditions": [
                    {"op": "in", "attribute": "company_id", "values": [7, 8]},
                    {"op": "semver_gte", "attribute": "app_version", "values": ["2.0.0"]},
                ],
                "variant": "xlsx",
            },
            {
                "name": "half of the free plan",
                "conditions": [{"op": "eq", "attribute": "plan", "values": ["free"]}],
                "percentage": 50,
            },
        ],
        "prerequisites": [{"key": "billing"}],
    },
    "salted": {"enabled": True, "percentage": 12.345, "salt": "campaign-7", "bucket_by": "org"},
}

server = live_server(seed=PORTAL_FLAGS)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    create_flags(server, FLAGS)
    with server.admin(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as http:
        yield http


def explain(admin: httpx.Client, key: str, context: dict[str, Any]) -> dict[str, Any]:
    answer = admin.post(f"/admin/v1/flags/{key}/explain", json={"context": context})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def ofrep(client: httpx.Client, key: str, context: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": context})
    return {"status": answer.status_code, **answer.json()}


def spec_bucket(salt: str, unit: str, seed: int = 0) -> tuple[str, int, int]:
    hash_input = f"{salt}:{unit}"
    hashed = mmh3.hash(hash_input, seed, signed=False)
    return hash_input, hashed, (hashed * 100_000) >> 32


def test_trace_of_a_split_has_hash_bucket_threshold(admin: httpx.Client) -> None:
    trace = explain(admin, "salted", {"targetingKey": "ignored", "org": "org-42"})
    assert trace["key"] == "salted"
    assert trace["salt"] == "campaign-7"
    assert trace["snapshot_version"] >= 1
    steps = trace["steps"]
    assert steps[0] == {"step": "enabled", "value": True}
    split = steps[-1]
    assert split["step"] == "split"
    hash_input, hashed, bucket = spec_bucket("campaign-7", "org-42")
    assert split["bucket_by"] == "org"
    assert split["unit"] == "org-42"
    assert split["hash_input"] == hash_input
    assert split["hash"] == hashed
    assert split["bucket"] == bucket
    assert split["threshold"] == 12_345
    assert split["percentage"] == 12.345
    assert split["included"] is (bucket < 12_345)
    assert trace["result"]["reason"] == "SPLIT"
    assert trace["result"]["variant"] == ("on" if bucket < 12_345 else "off")


def units(included_by_parent: bool) -> Iterator[str]:
    for n in range(1000):
        if (spec_bucket("reports", f"u-{n}")[2] < 40_000) is included_by_parent:
            yield f"u-{n}"


def test_trace_names_ancestors_prerequisites_and_rules(admin: httpx.Client) -> None:
    unit = next(units(included_by_parent=True))
    context = {"targetingKey": unit, "company_id": 7, "app_version": "1.9.0", "plan": "free"}
    trace = explain(admin, "reports.export", context)
    gates = {gate["key"]: gate for gate in trace["gates"]}
    assert set(gates) == {"reports", "billing"}
    assert gates["reports"]["kind"] == "parent"
    assert gates["billing"]["kind"] == "prerequisite"
    parent_split = gates["reports"]["steps"][-1]
    assert parent_split["hash_input"] == f"reports:{unit}"
    assert parent_split["bucket"] == spec_bucket("reports", unit)[2]
    assert parent_split["threshold"] == 40_000
    assert gates["reports"]["passes"] is True
    assert gates["billing"]["passes"] is True
    assert gates["billing"]["steps"][1]["conditions"] == [False]
    rules = [step for step in trace["steps"] if step["step"] == "rule"]
    assert rules[0]["name"] == "beta companies"
    assert rules[0]["conditions"] == [True, False]  # company matches, version too old
    assert rules[0]["matched"] is False
    assert rules[1]["conditions"] == [True]
    assert rules[1]["matched"] is True
    split = rules[1]["split"]
    hash_input, hashed, bucket = spec_bucket("reports.export", unit)
    assert (split["hash_input"], split["hash"], split["bucket"]) == (hash_input, hashed, bucket)
    assert split["threshold"] == 50_000
    assert split["included"] is (bucket < 50_000)
    # A rule split without its own weights serves the on variant to included units.
    assert trace["result"]["variant"] == ("csv" if bucket < 50_000 else "none")
    assert trace["result"]["reason"] == "TARGETING_MATCH"

    # A unit the parent leaves out, and a blocked prerequisite: off, gated, and said so.
    out = explain(admin, "reports.export", {"targetingKey": next(units(False))})
    assert out["gates"][0]["passes"] is False
    assert out["result"]["variant"] == "none"
    assert out["result"]["metadata"] == {"gatedBy": "reports", "on": False}
    blocked = explain(admin, "reports.export", {**context, "plan": "blocked"})
    assert {g["key"]: g["passes"] for g in blocked["gates"]} == {"reports": True, "billing": False}
    assert blocked["result"]["metadata"] == {"gatedBy": "billing", "on": False}
    assert blocked["result"]["reason"] == "TARGETING_MATCH"


def test_trace_of_targets_and_a_disabled_ancestor(admin: httpx.Client) -> None:
    boss = explain(admin, "reports.export", {"targetingKey": "boss"})
    target_step = next(s for s in boss["steps"] if s["step"] == "targets")
    assert target_step["matched"] == "xlsx"
    if spec_bucket("reports", "boss")[2] < 40_000:
        assert boss["result"] == {
            "value": "xlsx",
            "variant": "xlsx",
            "reason": "TARGETING_MATCH",
            "metadata": {"on": True},
        }
    else:
        assert boss["result"]["metadata"] == {"gatedBy": "reports", "on": False}
    gated = explain(admin, "ui-improvements.dropdown-fixes", {"targetingKey": "u"})
    assert gated["gates"][0]["key"] == "ui-improvements"
    assert gated["gates"][0]["passes"] is False
    assert gated["result"]["reason"] == "DISABLED"
    assert gated["result"]["metadata"] == {"gatedBy": "ui-improvements"}


CONTEXTS: list[dict[str, Any]] = [
    {
        "targetingKey": f"user-{n}",
        "company_id": n % 10,
        "app_version": f"{n % 3}.{n % 5}.0",
        "plan": ("free", "pro")[n % 2],
        "org": f"org-{n}",
    }
    for n in range(40)
] + [{"targetingKey": "boss"}, {"targetingKey": "", "org": "o"}, {"targetingKey": "x", "org": 5}]


@pytest.mark.parametrize("key", [*FLAGS, "ui-improvements.mobile-navigation-fix"])
def test_explain_result_equals_ofrep(admin: httpx.Client, client: httpx.Client, key: str) -> None:
    for context in CONTEXTS:
        result = explain(admin, key, context)["result"]
        served = ofrep(client, key, context)
        if "error_code" in result:
            assert served["status"] == 400, (context, served)
            assert served["errorCode"] == result["error_code"], (context, served, result)
            continue
        assert served["status"] == 200, (context, served)
        assert served["variant"] == result["variant"], context
        assert served["value"] == result["value"], context
        assert served["reason"] == result["reason"], context
        assert served.get("metadata") == result.get("metadata"), context


def test_explain_errors(admin: httpx.Client) -> None:
    assert_problem(
        admin.post("/admin/v1/flags/no-such-flag/explain", json={"context": {}}),
        404,
        "no-such-flag",
    )
    assert_problem(admin.post("/admin/v1/flags/reports/explain", json={}), 400, "context")
    assert_problem(
        admin.post("/admin/v1/flags/reports/explain", json={"context": []}), 400, "context"
    )
    unit_missing = explain(admin, "reports", {})
    assert unit_missing["result"]["error_code"] == "TARGETING_KEY_MISSING"


def test_trace_of_a_weighted_split(admin: httpx.Client) -> None:
    unit = next(units(included_by_parent=True))
    trace = explain(admin, "reports.export", {"targetingKey": unit})
    split = trace["steps"][-1]
    assert split["step"] == "split"
    assert split["weights"] == {"csv": 2, "xlsx": 1}
    hash_input = f"reports.export:{unit}"
    point = (mmh3.hash(hash_input, 1, signed=False) * 3) >> 32
    assert (split["weight_point"], split["weight_total"]) == (point, 3)
    assert trace["result"]["variant"] == ("csv" if point < 2 else "xlsx")
    assert trace["result"]["reason"] == "SPLIT"
