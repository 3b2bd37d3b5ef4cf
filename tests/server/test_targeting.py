"""Targeting through the admin API against a live server (issue 4, item 1).

Targets, rules with every condition operator of docs/spec.md section 2, prerequisites, variants
and weights, and deleting (a parent only with ``?recursive=true``), each checked by what OFREP
then serves. Bad input (unknown variant or segment, wrong value types, oversized lists) is a
4xx problem naming the field and leaves the store unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import mmh3
import pytest

from flagport.engine.models import MAX_VALUES
from tests.server._admin import assert_problem, evaluate, store_state
from tests.server._fixtures import live_server
from tests.support.server import RunningServer

server = live_server()

ON = ("on", "TARGETING_MATCH", True)
OFF = ("off", "STATIC", False)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client(timeout=10.0) as http:
        yield http


def make_flag(admin: httpx.Client, key: str, **fields: Any) -> dict[str, Any]:
    answer = admin.post("/admin/v1/flags", json={"key": key, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def put_rules(admin: httpx.Client, key: str, rules: list[dict[str, Any]]) -> httpx.Response:
    return admin.put(f"/admin/v1/flags/{key}/rules", json={"rules": rules})


# -- every condition operator ---------------------------------------------------------------

# (op, attribute, values, contexts that match, contexts that do not)
OPERATORS: list[tuple[str, str | None, list[Any], list[Any], list[Any]]] = [
    ("in", "plan", ["gold", "silver"], ["gold", "silver"], ["bronze", "", None]),
    ("not_in", "plan", ["banned"], ["gold", ""], ["banned", None]),
    ("eq", "company_id", [7], [7, "7"], [8, "07", None]),
    ("neq", "company_id", [7], [8, "x"], [7, "7", None]),
    ("starts_with", "email", ["admin@"], ["admin@acme.com"], ["bob@acme.com", None]),
    ("ends_with", "email", ["@acme.com"], ["bob@acme.com"], ["bob@acme.org", None]),
    ("contains", "email", ["acme"], ["x@acme.org"], ["x@example.org", None]),
    ("lt", "age", [18], [17, "17", 17.9], [18, 19, "abc", None]),
    ("lte", "age", [18], [18, 17], [18.5, 19]),
    ("gt", "age", [18], [19, 18.5, "19"], [18, 17, None]),
    ("gte", "age", [18], [18, 100], [17.9, 0]),
    ("semver_eq", "app_version", ["1.2.3"], ["1.2.3", "v1.2.3"], ["1.2.4", "1.2.3-rc.1"]),
    ("semver_lt", "app_version", ["2.0.0"], ["1.9.9", "2.0.0-rc.1"], ["2.0.0", "10.0.0", "x"]),
    ("semver_lte", "app_version", ["2.0.0"], ["2.0.0", "1.0"], ["2.0.1"]),
    ("semver_gt", "app_version", ["2.0.0"], ["2.0.1", "10.0.0"], ["2.0.0", "2.0.0-rc.1", "1.99"]),
    ("semver_gte", "app_version", ["2.0.0"], ["2.0.0", "3.0"], ["1.99.99"]),
    (
        "before",
        "signed_up",
        ["2030-01-01T00:00:00Z"],
        ["2029-12-31T23:59:59Z", "2020-01-01"],
        ["2030-01-01T00:00:01Z", "yesterday", None],
    ),
    (
        "after",
        "signed_up",
        ["2030-01-01T00:00:00Z"],
        ["2030-01-01T00:00:01Z", "2031-06-01"],
        ["2029-12-31T23:59:59Z", "soon"],
    ),
]


@pytest.mark.parametrize(
    ("op", "attribute", "values", "matching", "other"), OPERATORS, ids=[o[0] for o in OPERATORS]
)
def test_rule_operator_changes_evaluation(
    admin: httpx.Client,
    client: httpx.Client,
    op: str,
    attribute: str,
    values: list[Any],
    matching: list[Any],
    other: list[Any],
) -> None:
    key = f"op-{op.replace('_', '-')}"
    make_flag(admin, key, enabled=True, percentage=0)
    context = {"targetingKey": "u1", attribute: matching[0]}
    assert evaluate(client, key, context) == OFF  # no rule yet
    rule = {"conditions": [{"op": op, "attribute": attribute, "values": values}], "variant": "on"}
    answer = put_rules(admin, key, [rule])
    assert answer.status_code == 200, answer.text
    assert answer.json()["flag"]["rules"] == [rule]
    for value in matching:
        assert evaluate(client, key, {"targetingKey": "u1", attribute: value}) == ON, value
    for value in other:
        ctx = {"targetingKey": "u1"} if value is None else {"targetingKey": "u1", attribute: value}
        assert evaluate(client, key, ctx) == OFF, value
    # Clearing the rules turns it back.
    assert put_rules(admin, key, []).status_code == 200
    assert evaluate(client, key, context) == OFF


def test_a_scheduled_change_is_not_hidden_by_a_304(
    admin: httpx.Client, client: httpx.Client
) -> None:
    """A `$now` rule changes a flag's answer without a new version: a bulk answer's ETag
    covers it, so a client revalidating after the moment gets the new answer, not a 304."""
    at = time.time() + 1.5
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    make_flag(admin, "launch-at", enabled=True, percentage=0)
    rules = [
        {
            "conditions": [{"op": "after", "attribute": "$now", "values": [moment]}],
            "variant": "on",
            "name": "launched",
        }
    ]
    assert put_rules(admin, "launch-at", rules).status_code == 200
    body = {"context": {"targetingKey": "u"}}

    def launch_at(answer: httpx.Response) -> Any:
        return next(f["value"] for f in answer.json()["flags"] if f["key"] == "launch-at")

    before = client.post("/ofrep/v1/evaluate/flags", json=body)
    assert launch_at(before) is False
    etag = before.headers["etag"]
    again = client.post("/ofrep/v1/evaluate/flags", json=body, headers={"If-None-Match": etag})
    assert again.status_code == 304  # nothing moved yet
    time.sleep(max(0.0, at - time.time()) + 0.3)
    after = client.post("/ofrep/v1/evaluate/flags", json=body, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert launch_at(after) is True
    assert after.headers["etag"] != etag


def test_now_schedules_use_the_server_clock(admin: httpx.Client, client: httpx.Client) -> None:
    """``$now`` is the evaluation time; a context attribute named ``$now`` cannot move it."""
    make_flag(admin, "scheduled", enabled=True, percentage=0)
    rules = [
        {
            "conditions": [{"op": "after", "attribute": "$now", "values": ["2999-01-01"]}],
            "variant": "off",
            "name": "far future",
        },
        {
            "conditions": [{"op": "after", "attribute": "$now", "values": ["2000-01-01"]}],
            "variant": "on",
            "name": "launched",
        },
    ]
    assert put_rules(admin, "scheduled", rules).status_code == 200
    assert evaluate(client, "scheduled", {"targetingKey": "u"}) == ON
    sneaky = {"targetingKey": "u", "$now": "3000-01-01T00:00:00Z"}
    assert evaluate(client, "scheduled", sneaky) == ON


def test_in_segment_rule(admin: httpx.Client, client: httpx.Client) -> None:
    segment = {
        "included": ["vip"],
        "excluded": ["mallory"],
        "conditions": [{"op": "ends_with", "attribute": "email", "values": ["@acme.com"]}],
    }
    assert admin.put("/admin/v1/segments/acme-staff", json=segment).status_code == 201
    make_flag(admin, "staff-tools", enabled=True, percentage=0)
    rule = {"conditions": [{"op": "in_segment", "values": ["acme-staff"]}], "variant": "on"}
    assert put_rules(admin, "staff-tools", [rule]).status_code == 200
    assert evaluate(client, "staff-tools", {"targetingKey": "vip"}) == ON
    assert evaluate(client, "staff-tools", {"targetingKey": "a", "email": "a@acme.com"}) == ON
    excluded = {"targetingKey": "mallory", "email": "m@acme.com"}
    assert evaluate(client, "staff-tools", excluded) == OFF
    assert evaluate(client, "staff-tools", {"targetingKey": "b", "email": "b@x.org"}) == OFF


def test_rules_all_conditions_first_match_and_rule_split(
    admin: httpx.Client, client: httpx.Client
) -> None:
    make_flag(
        admin,
        "checkout",
        enabled=True,
        percentage=0,
        variants={"a": "A", "b": "B", "off": "none"},
        on_variant="a",
    )
    rules = [
        {
            "name": "both",
            "variant": "b",
            "conditions": [
                {"op": "eq", "attribute": "plan", "values": ["pro"]},
                {"op": "gte", "attribute": "seats", "values": [10]},
            ],
        },
        {
            "name": "pro",
            "variant": "a",
            "conditions": [{"op": "eq", "attribute": "plan", "values": ["pro"]}],
        },
        {
            "name": "half of free",
            "percentage": 50,
            "conditions": [{"op": "eq", "attribute": "plan", "values": ["free"]}],
        },
    ]
    assert put_rules(admin, "checkout", rules).status_code == 200
    ctx = {"targetingKey": "u", "plan": "pro", "seats": 12}
    assert evaluate(client, "checkout", ctx) == ("b", "TARGETING_MATCH", "B")
    ctx["seats"] = 3
    assert evaluate(client, "checkout", ctx) == ("a", "TARGETING_MATCH", "A")
    served = {}
    for n in range(60):
        unit = f"user-{n}"
        variant, reason, _ = evaluate(client, "checkout", {"targetingKey": unit, "plan": "free"})
        assert reason == "TARGETING_MATCH"
        bucket = (mmh3.hash(f"checkout:{unit}", 0, signed=False) * 100_000) >> 32
        assert variant == ("a" if bucket < 50_000 else "off"), unit
        served[variant] = served.get(variant, 0) + 1
    assert set(served) == {"a", "off"}
    assert evaluate(client, "checkout", {"targetingKey": "u", "plan": "x"}) == (
        "off",
        "STATIC",
        "none",
    )


def test_targets_win_over_rules_and_disabled_wins_over_targets(
    admin: httpx.Client, client: httpx.Client
) -> None:
    make_flag(admin, "beta-ui", enabled=True, percentage=100)
    rule = {"conditions": [{"op": "eq", "attribute": "plan", "values": ["free"]}], "variant": "off"}
    assert put_rules(admin, "beta-ui", [rule]).status_code == 200
    answer = admin.put(
        "/admin/v1/flags/beta-ui/targets", json={"targets": {"on": ["42"], "off": ["13"]}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["flag"]["targets"] == {"on": ["42"], "off": ["13"]}
    assert evaluate(client, "beta-ui", {"targetingKey": "42", "plan": "free"}) == ON
    assert evaluate(client, "beta-ui", {"targetingKey": "13"}) == ("off", "TARGETING_MATCH", False)
    assert evaluate(client, "beta-ui", {"targetingKey": "7", "plan": "free"})[0] == "off"
    assert evaluate(client, "beta-ui", {"targetingKey": "7"}) == ("on", "STATIC", True)
    assert admin.post("/admin/v1/flags/beta-ui/disable", json={}).status_code == 200
    assert evaluate(client, "beta-ui", {"targetingKey": "42"}) == ("off", "DISABLED", False)
    assert admin.put("/admin/v1/flags/beta-ui/targets", json={"targets": {}}).status_code == 200


# -- prerequisites ---------------------------------------------------------------------------


def test_prerequisites_gate_and_name_the_gate(admin: httpx.Client, client: httpx.Client) -> None:
    make_flag(admin, "billing-v2", enabled=False)
    make_flag(
        admin,
        "invoice-pdf",
        enabled=True,
        prerequisites=[{"key": "billing-v2"}],
    )
    ctx = {"targetingKey": "u1"}
    answer = client.post("/ofrep/v1/evaluate/flags/invoice-pdf", json={"context": ctx}).json()
    assert (answer["variant"], answer["reason"]) == ("off", "DISABLED")
    assert answer["metadata"] == {"gatedBy": "billing-v2"}
    assert admin.post("/admin/v1/flags/billing-v2/enable", json={}).status_code == 200
    assert evaluate(client, "invoice-pdf", ctx) == ("on", "STATIC", True)
    # A prerequisite naming a variant: on only while billing-v2 serves exactly that variant.
    make_flag(
        admin, "pricing", enabled=True, variants={"old": 1, "new": 2, "off": 0}, on_variant="old"
    )
    make_flag(
        admin, "pricing-banner", enabled=True, prerequisites=[{"key": "pricing", "variant": "new"}]
    )
    assert evaluate(client, "pricing-banner", ctx)[0] == "off"
    flag = admin.get("/admin/v1/flags/pricing")
    body = {k: v for k, v in flag.json().items() if k != "key"}
    body["on_variant"] = "new"
    answer = admin.put(
        "/admin/v1/flags/pricing", json=body, headers={"If-Match": flag.headers["etag"]}
    )
    assert answer.status_code == 200, answer.text
    assert evaluate(client, "pricing-banner", ctx) == ("on", "STATIC", True)


def test_bad_prerequisites_refused(admin: httpx.Client) -> None:
    make_flag(admin, "pre-a")
    make_flag(admin, "pre-b", prerequisites=[{"key": "pre-a"}])
    before = store_state(admin)
    answer = admin.post("/admin/v1/flags", json={"key": "pre-c", "prerequisites": [{"key": "x"}]})
    assert_problem(answer, 400, "prerequisites")
    flag = admin.get("/admin/v1/flags/pre-a")
    body = {k: v for k, v in flag.json().items() if k != "key"}
    body["prerequisites"] = [{"key": "pre-b"}]
    cycle = admin.put(
        "/admin/v1/flags/pre-a", json=body, headers={"If-Match": flag.headers["etag"]}
    )
    assert_problem(cycle, 400, "cycle", "pre-a", "pre-b")
    body["prerequisites"] = [{"key": "pre-b", "variant": "nope"}]
    bad = admin.put("/admin/v1/flags/pre-a", json=body, headers={"If-Match": flag.headers["etag"]})
    assert bad.status_code == 400, bad.text
    assert store_state(admin) == before
    # A flag that is another's prerequisite cannot be deleted from under it.
    assert_problem(admin.delete("/admin/v1/flags/pre-a"), 409, "pre-b")


# -- variants and weights --------------------------------------------------------------------


def test_variants_and_weights(admin: httpx.Client, client: httpx.Client) -> None:
    make_flag(
        admin,
        "layout",
        enabled=True,
        percentage=80,
        variants={"grid": "g", "list": "l", "cards": {"size": 2.5}, "off": "classic"},
        on_variant="grid",
        weights={"grid": 1, "list": 2, "cards": 1},
    )
    seen = set()
    for n in range(80):
        unit = f"u{n}"
        variant, reason, value = evaluate(client, "layout", {"targetingKey": unit})
        assert reason == "SPLIT"
        salted = f"layout:{unit}"
        bucket = (mmh3.hash(salted, 0, signed=False) * 100_000) >> 32
        if bucket >= 80_000:
            expected = "off"
        else:
            point = (mmh3.hash(salted, 1, signed=False) * 4) >> 32
            expected = "grid" if point < 1 else "list" if point < 3 else "cards"
        assert variant == expected, unit
        assert (
            value == {"grid": "g", "list": "l", "cards": {"size": 2.5}, "off": "classic"}[variant]
        )
        seen.add(variant)
    assert seen == {"grid", "list", "cards", "off"}
    # Re-weighting moves everyone included onto the only weighted variant.
    flag = admin.get("/admin/v1/flags/layout")
    body = {k: v for k, v in flag.json().items() if k != "key"}
    body.update(percentage=100, weights={"grid": 0, "list": 0, "cards": 5})
    answer = admin.put(
        "/admin/v1/flags/layout", json=body, headers={"If-Match": flag.headers["etag"]}
    )
    assert answer.status_code == 200, answer.text
    for n in range(20):
        assert evaluate(client, "layout", {"targetingKey": f"u{n}"})[0] == "cards"


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"weights": {"nope": 1}}, ("weights",)),
        ({"weights": {"on": -1}}, ("weights",)),
        ({"weights": {"on": 2**31, "off": 1}}, ("weights",)),
        ({"on_variant": "nope"}, ("on_variant",)),
        ({"off_variant": "nope"}, ("off_variant",)),
        ({"variants": {"on": [1, 2], "off": False}}, ("variants",)),
        ({"percentage": 100.5}, ("percentage",)),
        ({"percentage": 10.0001}, ("percentage",)),
        ({"targets": {"nope": ["u"]}}, ("targets", "nope")),
    ],
)
def test_bad_variants_refused(
    admin: httpx.Client, fields: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    before = store_state(admin)
    assert_problem(
        admin.post("/admin/v1/flags", json={"key": "bad-variants", **fields}), 400, *mentions
    )
    assert store_state(admin) == before


# -- bad rules: 4xx naming the field, store unchanged ----------------------------------------


def _cond(op: str, values: list[Any], attribute: str | None = "a") -> dict[str, Any]:
    condition: dict[str, Any] = {"op": op, "values": values}
    if attribute is not None:
        condition["attribute"] = attribute
    return condition


BAD_RULES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "unknown-segment",
        {"conditions": [_cond("in_segment", ["nope"], None)], "variant": "on"},
        ("nope", "conditions[0]"),
    ),
    (
        "unknown-variant",
        {"conditions": [_cond("eq", ["x"])], "variant": "nope"},
        ("nope", "rules[1].variant"),
    ),
    (
        "unknown-weight-variant",
        {"conditions": [_cond("eq", ["x"])], "weights": {"nope": 1}},
        ("weights",),
    ),
    ("lt-string", {"conditions": [_cond("lt", ["ten"])], "variant": "on"}, ("values[0]",)),
    ("gte-bool", {"conditions": [_cond("gte", [True])], "variant": "on"}, ("values[0]",)),
    (
        "semver-abc",
        {"conditions": [_cond("semver_gt", ["1.0.0", "abc"])], "variant": "on"},
        ("abc", "values[1]"),
    ),
    (
        "before-yesterday",
        {"conditions": [_cond("before", ["yesterday"])], "variant": "on"},
        ("yesterday", "values[0]"),
    ),
    ("after-number", {"conditions": [_cond("after", [12])], "variant": "on"}, ("values[0]",)),
    (
        "starts-with-int",
        {"conditions": [_cond("starts_with", [1])], "variant": "on"},
        ("values[0]",),
    ),
    ("in-object", {"conditions": [_cond("in", [{"a": 1}])], "variant": "on"}, ("values",)),
    ("empty-values", {"conditions": [_cond("in", [])], "variant": "on"}, ("values",)),
    ("no-attribute", {"conditions": [_cond("eq", ["x"], None)], "variant": "on"}, ("attribute",)),
    ("unknown-op", {"conditions": [_cond("regex", [".*"])], "variant": "on"}, ("op",)),
    (
        "oversized",
        {"conditions": [_cond("in", list(range(MAX_VALUES + 1)))], "variant": "on"},
        ("values", str(MAX_VALUES)),
    ),
    ("bad-percentage", {"conditions": [_cond("eq", ["x"])], "percentage": 101}, ("percentage",)),
    ("extra-field", {"conditions": [], "variant": "on", "regex": ".*"}, ("regex",)),
]


@pytest.mark.parametrize(
    ("rule", "mentions"), [(r, m) for _, r, m in BAD_RULES], ids=[name for name, _, _ in BAD_RULES]
)
def test_bad_rule_refused_store_unchanged(
    admin: httpx.Client, client: httpx.Client, rule: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    if admin.get("/admin/v1/flags/guarded").status_code == 404:
        make_flag(admin, "guarded", enabled=True, percentage=0)
        good = {"conditions": [_cond("eq", ["yes"])], "variant": "on"}
        assert put_rules(admin, "guarded", [good]).status_code == 200
    before = store_state(admin)
    answer = put_rules(admin, "guarded", [{"conditions": [], "variant": "on"}, rule])
    problem = assert_problem(answer, 400, *mentions)
    assert "rules[1]" in (problem.get("field") or ""), problem
    assert store_state(admin) == before
    assert evaluate(client, "guarded", {"targetingKey": "u", "a": "yes"}) == ON


def test_values_at_the_limit_accepted(admin: httpx.Client, client: httpx.Client) -> None:
    make_flag(admin, "big-list", enabled=True, percentage=0)
    values = [f"company-{n}" for n in range(MAX_VALUES)]
    answer = put_rules(admin, "big-list", [{"conditions": [_cond("in", values)], "variant": "on"}])
    assert answer.status_code == 200, answer.text
    assert evaluate(client, "big-list", {"targetingKey": "u", "a": "company-999"}) == ON
    assert evaluate(client, "big-list", {"targetingKey": "u", "a": "company-1000"}) == OFF


def test_regex_like_values_are_literal(admin: httpx.Client, client: httpx.Client) -> None:
    """Values are never patterns: ``.*`` and ``(a+)+$`` match only themselves."""
    make_flag(admin, "literal", enabled=True, percentage=0)
    rule = {"conditions": [_cond("contains", [".*", "(a+)+$"])], "variant": "on"}
    assert put_rules(admin, "literal", [rule]).status_code == 200
    assert evaluate(client, "literal", {"targetingKey": "u", "a": "anything"}) == OFF
    assert evaluate(client, "literal", {"targetingKey": "u", "a": "x.*y"}) == ON
    assert evaluate(client, "literal", {"targetingKey": "u", "a": "a" * 5000 + "!"}) == OFF


def test_targeting_on_unknown_flag_is_404(admin: httpx.Client) -> None:
    assert_problem(admin.put("/admin/v1/flags/nope/rules", json={"rules": []}), 404, "nope")
    assert_problem(admin.put("/admin/v1/flags/nope/targets", json={"targets": {}}), 404, "nope")


# -- delete ----------------------------------------------------------------------------------


def test_delete_parent_only_recursive(admin: httpx.Client, client: httpx.Client) -> None:
    make_flag(admin, "reports", enabled=True)
    make_flag(admin, "reports.export", enabled=True)
    make_flag(admin, "reports.export.csv", enabled=True)
    before = store_state(admin)
    conflict = admin.delete("/admin/v1/flags/reports")
    assert_problem(conflict, 409, "reports.export", "recursive")
    assert store_state(admin) == before
    assert evaluate(client, "reports.export.csv", {"targetingKey": "u"})[0] == "on"
    # A leaf goes on its own.
    leaf = admin.delete("/admin/v1/flags/reports.export.csv")
    assert leaf.status_code == 200, leaf.text
    assert leaf.json()["deleted"] == ["reports.export.csv"]
    answer = admin.delete("/admin/v1/flags/reports", params={"recursive": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["deleted"] == ["reports", "reports.export"]
    assert body["snapshot_version"] > before[0]
    for key in ("reports", "reports.export"):
        assert admin.get(f"/admin/v1/flags/{key}").status_code == 404
        gone = client.post(
            f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "u"}}
        )
        assert gone.status_code == 404
        assert gone.json()["errorCode"] == "FLAG_NOT_FOUND"
    assert_problem(admin.delete("/admin/v1/flags/reports"), 404, "reports")
