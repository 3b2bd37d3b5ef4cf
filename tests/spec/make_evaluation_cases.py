"""Write ``tests/spec/evaluation/*.json``: fixed evaluation cases for docs/spec.md section 2.

Run ``uv run --frozen python tests/spec/make_evaluation_cases.py``. Deterministic; the test
checks the committed files are exactly what this writes.

Expectations are written from the spec, not recorded from the engine: this script never
imports :mod:`flagport`. Where a case depends on a bucket, the script picks a unit whose
bucket it computed itself with ``mmh3`` (``(h * 100000) >> 32``, seed 1 for weights), so the
expected value follows from the arithmetic in docs/spec.md section 1.

A case is ``{name, key, context, now?, expected}``; ``expected`` holds the fields the spec
decides: ``reason``, ``errorCode``, ``value``/``variant`` when a value is served, ``metadata``
(``gatedBy``, and ``on`` for flags whose values do not say whether they are on: see
:func:`with_on`).
On an error the served value is not part of the contract (every client uses the caller's
default), so error cases leave ``value``/``variant`` out, except ``PARSE_ERROR`` of a flag that
failed to compile, which serves its off variant.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mmh3

OUT_DIR = Path(__file__).with_name("evaluation")
BUCKETS = 100_000


def h(salt: str, unit: str, seed: int = 0) -> int:
    return mmh3.hash(f"{salt}:{unit}".encode(), seed, signed=False)


def b0(salt: str, unit: str) -> int:
    return (h(salt, unit) * BUCKETS) >> 32


def point(salt: str, unit: str, total: int) -> int:
    return (h(salt, unit, 1) * total) >> 32


def find(pred: Callable[[str], bool], prefix: str = "user-") -> str:
    """The first unit ``<prefix>N`` satisfying ``pred`` (deterministic)."""
    for n in range(2_000_000):
        unit = f"{prefix}{n}"
        if pred(unit):
            return unit
    raise AssertionError("no unit found")  # pragma: no cover


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def ok(value: Any, variant: str, reason: str, gated_by: str | None = None) -> dict[str, Any]:
    return {
        "value": value,
        "variant": variant,
        "reason": reason,
        "errorCode": None,
        "metadata": None if gated_by is None else {"gatedBy": gated_by},
    }


def err(code: str, gated_by: str | None = None) -> dict[str, Any]:
    return {
        "reason": "ERROR",
        "errorCode": code,
        "metadata": None if gated_by is None else {"gatedBy": gated_by},
    }


ON = ("on", True)
OFF = ("off", False)


def on(reason: str, gated_by: str | None = None) -> dict[str, Any]:
    return ok(True, "on", reason, gated_by)


def off(reason: str, gated_by: str | None = None) -> dict[str, Any]:
    return ok(False, "off", reason, gated_by)


def case(
    name: str, key: str, context: dict[str, Any], expected: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    out = {"name": name, "key": key, "context": context}
    out.update(extra)
    out["expected"] = expected
    return out


# -- hierarchy --------------------------------------------------------------------------


def hierarchy() -> dict[str, Any]:
    doc = {
        "ui": {"enabled": True, "percentage": 50},
        "ui.nav": {"enabled": True},
        "ui.half": {"enabled": True, "percentage": 40},
        "ui.nested": {"enabled": True, "percentage": 30, "salt": "ui"},
        "ui.nested.deep": {"enabled": True},
        "ui.x.orphan": {"enabled": True},
        "legacy": {"enabled": False},
        "legacy.child": {"enabled": True},
        "legacy.child.grand": {"enabled": True, "percentage": 50},
        "static-parent": {"enabled": True},
        "static-parent.child": {"enabled": True},
        "static-parent.split": {"enabled": True, "percentage": 50},
        "zero": {"enabled": True, "percentage": 0},
        "zero.child": {"enabled": True},
        "on-parent": {"enabled": True},
        "on-parent.disabled-child": {"enabled": False},
    }
    parent_on = find(lambda u: b0("ui", u) < 30_000 and b0("ui.half", u) < 40_000)
    parent_on_half_off = find(lambda u: b0("ui", u) < 30_000 and b0("ui.half", u) >= 40_000)
    parent_off = find(lambda u: b0("ui", u) >= 50_000 and b0("ui.half", u) < 40_000)
    between = find(lambda u: 30_000 <= b0("ui", u) < 50_000)
    split_in = find(lambda u: b0("static-parent.split", u) < 50_000)
    split_out = find(lambda u: b0("static-parent.split", u) >= 50_000)
    cases = [
        case("parent split: included", "ui", {"targetingKey": parent_on}, on("SPLIT")),
        case("parent split: excluded", "ui", {"targetingKey": parent_off}, off("SPLIT")),
        case(
            "child at 100 % follows its parent (on): SPLIT from the chain",
            "ui.nav",
            {"targetingKey": parent_on},
            on("SPLIT"),
        ),
        case(
            "child at 100 % follows its parent (off): gated",
            "ui.nav",
            {"targetingKey": parent_off},
            off("SPLIT", "ui"),
        ),
        case(
            "independent child: both included", "ui.half", {"targetingKey": parent_on}, on("SPLIT")
        ),
        case(
            "independent child: parent on, own salt excludes",
            "ui.half",
            {"targetingKey": parent_on_half_off},
            off("SPLIT"),
        ),
        case(
            "independent child: parent excluded by split although own bucket < 40000",
            "ui.half",
            {"targetingKey": parent_off},
            off("SPLIT", "ui"),
        ),
        case(
            "nested child (salt = parent key): bucket < 30000 is on",
            "ui.nested",
            {"targetingKey": parent_on},
            on("SPLIT"),
        ),
        case(
            "nested child: 30000 <= parent bucket < 50000 is off, parent on",
            "ui.nested",
            {"targetingKey": between},
            off("SPLIT"),
        ),
        case(
            "nested child: parent off",
            "ui.nested",
            {"targetingKey": parent_off},
            off("SPLIT", "ui"),
        ),
        case(
            "grandchild under nested child: on",
            "ui.nested.deep",
            {"targetingKey": parent_on},
            on("SPLIT"),
        ),
        case(
            "grandchild: gated by the nearest off ancestor",
            "ui.nested.deep",
            {"targetingKey": between},
            off("SPLIT", "ui.nested"),
        ),
        case(
            "grandchild: gated by the outermost off ancestor",
            "ui.nested.deep",
            {"targetingKey": parent_off},
            off("SPLIT", "ui"),
        ),
        case(
            "missing intermediate key: nearest existing ancestor gates",
            "ui.x.orphan",
            {"targetingKey": parent_off},
            off("SPLIT", "ui"),
        ),
        case(
            "missing intermediate key: on when the ancestor is on",
            "ui.x.orphan",
            {"targetingKey": parent_on},
            on("SPLIT"),
        ),
        case(
            "child needs the parent's unit: TARGETING_KEY_MISSING, gated",
            "ui.nav",
            {},
            err("TARGETING_KEY_MISSING", "ui"),
        ),
        case(
            "disabled parent: DISABLED even without a unit",
            "legacy.child",
            {},
            off("DISABLED", "legacy"),
        ),
        case(
            "disabled grandparent gates a split grandchild without a unit",
            "legacy.child.grand",
            {},
            off("DISABLED", "legacy"),
        ),
        case("disabled parent itself", "legacy", {"targetingKey": "u"}, off("DISABLED")),
        case("STATIC chain: 100 % under 100 %", "static-parent.child", {}, on("STATIC")),
        case(
            "STATIC parent, split child included",
            "static-parent.split",
            {"targetingKey": split_in},
            on("SPLIT"),
        ),
        case(
            "STATIC parent, split child excluded",
            "static-parent.split",
            {"targetingKey": split_out},
            off("SPLIT"),
        ),
        case(
            "parent at 0 %: child off, STATIC, gated",
            "zero.child",
            {"targetingKey": "u"},
            off("STATIC", "zero"),
        ),
        case("disabled child under an on parent", "on-parent.disabled-child", {}, off("DISABLED")),
    ]
    return {
        "description": "Hierarchy: own salts (independent), salt = parent key (nested), "
        "disabled parents, parents excluded by split, reasons through the chain.",
        "document": {"bucketing": 1, "flags": doc},
        "cases": cases,
    }


# -- conditions -------------------------------------------------------------------------


def rule_flag(*conditions: dict[str, Any]) -> dict[str, Any]:
    """Enabled, 0 % by default: a matching rule serves on (TARGETING_MATCH), else off STATIC."""
    return {
        "enabled": True,
        "percentage": 0,
        "rules": [{"conditions": list(conditions), "variant": "on"}],
    }


def cond(attribute: str, op: str, *values: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "values": list(values)}


def conditions() -> dict[str, Any]:
    flags = {
        "op-in": rule_flag(cond("country", "in", "FR", "DE")),
        "op-in-numbers": rule_flag(cond("company_id", "in", 7, 12)),
        "op-not-in": rule_flag(cond("country", "not_in", "FR")),
        "op-eq-bool": rule_flag(cond("beta", "eq", True)),
        "op-neq": rule_flag(cond("plan", "neq", "free")),
        "op-starts-with": rule_flag(cond("email", "starts_with", "admin@", "root@")),
        "op-ends-with": rule_flag(cond("email", "ends_with", "@example.com")),
        "op-contains": rule_flag(cond("email", "contains", "staff")),
        "op-lt": rule_flag(cond("age", "lt", 18)),
        "op-lte": rule_flag(cond("age", "lte", 18)),
        "op-gt": rule_flag(cond("age", "gt", 65)),
        "op-gte": rule_flag(cond("score", "gte", 1000)),
        "op-semver-gte": rule_flag(cond("app_version", "semver_gte", "2.1.0")),
        "op-semver-lt": rule_flag(cond("app_version", "semver_lt", "2.0.0")),
        "op-semver-eq": rule_flag(cond("app_version", "semver_eq", "1.2.3")),
        "op-semver-gt": rule_flag(cond("app_version", "semver_gt", "1.0.0-alpha")),
        "op-semver-lte": rule_flag(cond("app_version", "semver_lte", "1.0.0-beta")),
        "op-semver-lt-numeric-pre": rule_flag(cond("app_version", "semver_lt", "1.0.0-beta.11")),
        "op-after-now": rule_flag(cond("$now", "after", "2026-03-01T00:00:00Z")),
        "op-before-now": rule_flag(cond("$now", "before", "2026-03-01T00:00:00+01:00")),
        "op-before-date-attr": rule_flag(cond("signup_date", "before", "2025-01-01")),
        "op-after-date-attr": rule_flag(cond("signup_date", "after", "2025-01-01T12:00:00Z")),
        "all-conditions": rule_flag(cond("country", "in", "FR"), cond("plan", "eq", "pro")),
        "first-rule-wins": {
            "enabled": True,
            "percentage": 0,
            "variants": {"on": True, "off": False, "fr": "bonjour"},
            "rules": [
                {"conditions": [cond("country", "in", "FR")], "variant": "fr"},
                {"conditions": [cond("plan", "eq", "pro")], "variant": "on"},
            ],
        },
        "rule-split": {
            "enabled": True,
            "percentage": 0,
            "rules": [{"conditions": [cond("plan", "eq", "pro")], "percentage": 50}],
        },
    }
    split_in = find(lambda u: b0("rule-split", u) < 50_000)
    split_out = find(lambda u: b0("rule-split", u) >= 50_000)
    launch = epoch("2026-03-01T00:00:00+00:00")
    tm = on("TARGETING_MATCH")
    no = off("STATIC")

    def c(
        key: str, context: dict[str, Any], expected: dict[str, Any], name: str, **extra: Any
    ) -> dict[str, Any]:
        return case(f"{key}: {name}", key, context, expected, **extra)

    cases = [
        c("op-in", {"country": "FR"}, tm, "listed value"),
        c("op-in", {"country": "US"}, no, "other value"),
        c("op-in", {}, no, "missing attribute never matches"),
        c("op-in", {"country": "fr"}, no, "case-sensitive"),
        c("op-in-numbers", {"company_id": "7"}, tm, "query-string '7' equals 7"),
        c("op-in-numbers", {"company_id": 12}, tm, "integer"),
        c("op-in-numbers", {"company_id": 8}, no, "other integer"),
        c("op-not-in", {"country": "US"}, tm, "not listed"),
        c("op-not-in", {"country": "FR"}, no, "listed"),
        c("op-not-in", {}, no, "missing attribute matches no operator, not even not_in"),
        c("op-eq-bool", {"beta": True}, tm, "true"),
        c("op-eq-bool", {"beta": "true"}, tm, "query-string 'true' equals true"),
        c("op-eq-bool", {"beta": False}, no, "false"),
        c("op-neq", {"plan": "pro"}, tm, "different"),
        c("op-neq", {"plan": "free"}, no, "equal"),
        c("op-starts-with", {"email": "root@corp.test"}, tm, "second prefix"),
        c("op-starts-with", {"email": "user@admin.test"}, no, "not a prefix"),
        c("op-ends-with", {"email": "jo@example.com"}, tm, "suffix"),
        c("op-ends-with", {"email": "jo@example.com.evil"}, no, "not a suffix"),
        c("op-contains", {"email": "jo.staff@corp.test"}, tm, "substring"),
        c("op-contains", {"email": "jo@corp.test"}, no, "no substring"),
        # String operators read at most 1,024 characters of a context string.
        c(
            "op-contains",
            {"email": "x" * 1019 + "staff"},
            tm,
            "a substring within the first 1,024 characters",
        ),
        c(
            "op-contains",
            {"email": "x" * 1020 + "staff"},
            no,
            "a substring that ends past the 1,024th character is not read",
        ),
        c("op-starts-with", {"email": "root@" + "x" * 2000}, tm, "a prefix of a long string"),
        c(
            "op-ends-with",
            {"email": "x" * 2000 + "@example.com"},
            tm,
            "a suffix of a long string: ends_with reads the last 1,024 characters",
        ),
        c("op-lt", {"age": "17"}, tm, "string number from a query string"),
        c("op-lt", {"age": 18}, no, "equal is not lower"),
        c("op-lt", {"age": "abc"}, no, "not a number"),
        c("op-lt", {"age": True}, no, "a boolean is not a number"),
        c("op-lt", {"age": "0" * 1022 + "17"}, tm, "a number string of 1,024 characters"),
        c("op-lt", {"age": "0" * 1023 + "17"}, no, "a longer string is not a number"),
        c("op-lte", {"age": 18}, tm, "equal"),
        c("op-lte", {"age": 18.5}, no, "greater float"),
        c("op-gt", {"age": "65.5"}, tm, "decimal string"),
        c("op-gt", {"age": 65}, no, "equal is not greater"),
        c("op-gte", {"score": "1e3"}, tm, "exponent string"),
        c("op-gte", {"score": 999.9}, no, "lower float"),
        c("op-semver-gte", {"app_version": "2.1.0"}, tm, "equal release"),
        c("op-semver-gte", {"app_version": "2.1.0-beta.1"}, no, "pre-release sorts before release"),
        c("op-semver-gte", {"app_version": "v2.10.0"}, tm, "numeric, not lexical; leading v"),
        c("op-semver-gte", {"app_version": "2.9"}, tm, "2.9 means 2.9.0"),
        c("op-semver-gte", {"app_version": "banana"}, no, "not a version"),
        c(
            "op-semver-gte",
            {"app_version": "2.1.0+" + "b" * 1019},
            no,
            "a string longer than 1,024 characters is not a version",
        ),
        c(
            "op-semver-gte",
            {"app_version": "2.1.0+" + "b" * 1018},
            tm,
            "a version of 1,024 characters",
        ),
        c("op-semver-lt", {"app_version": "2.0.0-rc.1"}, tm, "pre-release lower than release"),
        c("op-semver-lt", {"app_version": "2.0.0"}, no, "equal"),
        c("op-semver-eq", {"app_version": "1.2.3+build.5"}, tm, "build metadata ignored"),
        c("op-semver-eq", {"app_version": "1.2.3-alpha"}, no, "pre-release differs"),
        c("op-semver-gt", {"app_version": "1.0.0-alpha.1"}, tm, "longer pre-release is greater"),
        c("op-semver-gt", {"app_version": "1.0.0-alpha"}, no, "equal"),
        c("op-semver-lte", {"app_version": "1.0.0-alpha.beta"}, tm, "alpha.beta < beta"),
        c("op-semver-lte", {"app_version": "1.0.0-beta.2"}, no, "beta.2 > beta"),
        c("op-semver-lt-numeric-pre", {"app_version": "1.0.0-beta.2"}, tm, "2 < 11 numerically"),
        c("op-semver-lt-numeric-pre", {"app_version": "1.0.0-rc.1"}, no, "rc > beta"),
        c("op-after-now", {}, no, "one second before the launch", now=launch - 1),
        c("op-after-now", {}, tm, "one second after the launch", now=launch + 1),
        c("op-after-now", {}, no, "no now given: a schedule never matches"),
        c(
            "op-after-now",
            {"$now": "2030-01-01T00:00:00Z"},
            no,
            "a context attribute '$now' cannot move the schedule",
            now=launch - 1,
        ),
        c(
            "op-before-now",
            {},
            tm,
            "one second before 00:00+01:00",
            now=epoch("2026-02-28T22:59:59+00:00"),
        ),
        c(
            "op-before-now",
            {},
            no,
            "the same instant is not before",
            now=epoch("2026-02-28T23:00:00+00:00"),
        ),
        c("op-before-date-attr", {"signup_date": "2024-12-31"}, tm, "date-only string"),
        c("op-before-date-attr", {"signup_date": "2025-06-01T10:00:00Z"}, no, "later"),
        c("op-before-date-attr", {"signup_date": "not a date"}, no, "unparseable"),
        c("op-after-date-attr", {"signup_date": "2025-01-01T13:00:00+00:00"}, tm, "an hour later"),
        c(
            "op-after-date-attr",
            {"signup_date": "2025-01-01T12:30:00+01:00"},
            no,
            "11:30Z is earlier",
        ),
        c("all-conditions", {"country": "FR", "plan": "pro"}, tm, "both conditions"),
        c("all-conditions", {"country": "FR", "plan": "free"}, no, "one condition fails"),
        c(
            "first-rule-wins",
            {"country": "FR", "plan": "pro"},
            ok("bonjour", "fr", "TARGETING_MATCH"),
            "first matching rule",
        ),
        c("first-rule-wins", {"country": "US", "plan": "pro"}, tm, "second rule"),
        c("rule-split", {"plan": "pro", "targetingKey": split_in}, tm, "rule split includes"),
        c(
            "rule-split",
            {"plan": "pro", "targetingKey": split_out},
            off("TARGETING_MATCH"),
            "rule split excludes: off variant, still TARGETING_MATCH",
        ),
        c("rule-split", {"plan": "pro"}, err("TARGETING_KEY_MISSING"), "rule split needs a unit"),
        c("rule-split", {"plan": "free"}, no, "no rule: the flag's 0 % (no unit needed)"),
    ]
    return {
        "description": "Every rule condition operator (docs/spec.md section 2).",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


# -- segments and targets ---------------------------------------------------------------


def targeting() -> dict[str, Any]:
    segments = {
        "beta-companies": {
            "included": ["u-in", "42"],
            "excluded": ["u-out"],
            "conditions": [cond("company_id", "in", 7, 9)],
        },
        "staff": {"included": ["alice"]},
        "nobody": {},
    }
    flags = {
        "seg": rule_flag({"op": "in_segment", "values": ["beta-companies"]}),
        "seg-any": rule_flag({"op": "in_segment", "values": ["nobody", "staff"]}),
        "seg-unknown": rule_flag({"op": "in_segment", "values": ["no-such-segment"]}),
        "targeted": {
            "enabled": True,
            "percentage": 0,
            "variants": {"on": True, "off": False, "vip": "gold"},
            "targets": {"on": ["alice", "7"], "vip": ["carol"]},
            "rules": [{"conditions": [cond("plan", "eq", "pro")], "variant": "vip"}],
        },
        "targeted-disabled": {"enabled": False, "targets": {"on": ["alice"]}},
    }
    tm = on("TARGETING_MATCH")
    no = off("STATIC")
    cases = [
        case("segment: included key", "seg", {"targetingKey": "u-in"}, tm),
        case(
            "segment: integer targetingKey 42 matches included '42'",
            "seg",
            {"targetingKey": 42},
            tm,
        ),
        case(
            "segment: excluded key wins over matching conditions",
            "seg",
            {"targetingKey": "u-out", "company_id": 7},
            no,
        ),
        case("segment: conditions", "seg", {"targetingKey": "u", "company_id": "9"}, tm),
        case("segment: conditions fail", "seg", {"targetingKey": "u", "company_id": 8}, no),
        case("segment: conditions without a targetingKey", "seg", {"company_id": 7}, tm),
        case("segment list: any segment matches", "seg-any", {"targetingKey": "alice"}, tm),
        case(
            "segment without conditions matches nobody else", "seg-any", {"targetingKey": "bob"}, no
        ),
        case(
            "unknown segment: the flag fails to compile",
            "seg-unknown",
            {"targetingKey": "x"},
            {**off("ERROR"), "errorCode": "PARSE_ERROR"},
        ),
        case("targets: listed key", "targeted", {"targetingKey": "alice"}, tm),
        case("targets: integer targetingKey", "targeted", {"targetingKey": 7}, tm),
        case(
            "targets: other variant",
            "targeted",
            {"targetingKey": "carol"},
            ok("gold", "vip", "TARGETING_MATCH"),
        ),
        case("targets before rules", "targeted", {"targetingKey": "alice", "plan": "pro"}, tm),
        case(
            "rule after targets",
            "targeted",
            {"targetingKey": "bob", "plan": "pro"},
            ok("gold", "vip", "TARGETING_MATCH"),
        ),
        case("targets: not listed", "targeted", {"targetingKey": "bob"}, no),
        case(
            "kill switch beats targets",
            "targeted-disabled",
            {"targetingKey": "alice"},
            off("DISABLED"),
        ),
    ]
    return {
        "description": "Targets and segments (included, excluded, conditions).",
        "document": {"bucketing": 1, "flags": flags, "segments": segments},
        "cases": cases,
    }


# -- prerequisites ----------------------------------------------------------------------


def prerequisites() -> dict[str, Any]:
    flags = {
        "payments": {"enabled": True},
        "kill": {"enabled": False},
        "half": {"enabled": True, "percentage": 50},
        "checkout": {"enabled": True, "prerequisites": [{"key": "payments"}]},
        "checkout-killed": {"enabled": True, "prerequisites": [{"key": "kill"}]},
        "needs-half": {"enabled": True, "prerequisites": [{"key": "half"}]},
        "experiment": {
            "enabled": True,
            "variants": {"control": "A", "treatment": "B", "off": "none"},
            "on_variant": "control",
            "weights": {"control": 1, "treatment": 1},
        },
        "needs-treatment": {
            "enabled": True,
            "prerequisites": [{"key": "experiment", "variant": "treatment"}],
        },
        "needs-off": {"enabled": True, "prerequisites": [{"key": "kill", "variant": "off"}]},
        "cyc-a": {"enabled": True, "prerequisites": [{"key": "cyc-b"}]},
        "cyc-b": {"enabled": True, "prerequisites": [{"key": "cyc-a"}]},
        "self-loop": {"enabled": True, "prerequisites": [{"key": "self-loop"}]},
        "after-cycle": {"enabled": True, "prerequisites": [{"key": "cyc-a"}]},
        "parent-cycle": {"enabled": True, "prerequisites": [{"key": "parent-cycle.child"}]},
        "parent-cycle.child": {"enabled": True},
        "unknown-prereq": {"enabled": True, "prerequisites": [{"key": "nope"}]},
    }
    half_in = find(lambda u: b0("half", u) < 50_000)
    half_out = find(lambda u: b0("half", u) >= 50_000)
    treatment = find(lambda u: point("experiment", u, 2) >= 1)
    control = find(lambda u: point("experiment", u, 2) < 1)
    parse = {**off("ERROR"), "errorCode": "PARSE_ERROR"}
    cases = [
        case("prerequisite on (STATIC chain)", "checkout", {}, on("STATIC")),
        case(
            "prerequisite disabled: DISABLED, gated", "checkout-killed", {}, off("DISABLED", "kill")
        ),
        case(
            "prerequisite split on: SPLIT from the chain",
            "needs-half",
            {"targetingKey": half_in},
            on("SPLIT"),
        ),
        case(
            "prerequisite split off", "needs-half", {"targetingKey": half_out}, off("SPLIT", "half")
        ),
        case(
            "prerequisite needing a unit it does not get",
            "needs-half",
            {},
            err("TARGETING_KEY_MISSING", "half"),
        ),
        case(
            "weights: seed-1 point 1 of 2 is treatment",
            "experiment",
            {"targetingKey": treatment},
            ok("B", "treatment", "SPLIT"),
        ),
        case(
            "weights: seed-1 point 0 of 2 is control",
            "experiment",
            {"targetingKey": control},
            ok("A", "control", "SPLIT"),
        ),
        case(
            "prerequisite with variant: served",
            "needs-treatment",
            {"targetingKey": treatment},
            on("SPLIT"),
        ),
        case(
            "prerequisite with variant: other variant served",
            "needs-treatment",
            {"targetingKey": control},
            off("SPLIT", "experiment"),
        ),
        case(
            "prerequisite requiring the off variant: the gate passes",
            "needs-off",
            {"targetingKey": "u"},
            {"value": True, "variant": "on", "errorCode": None},
        ),
        case("cycle: PARSE_ERROR serving the off variant", "cyc-a", {}, parse),
        case("cycle: the other member too", "cyc-b", {}, parse),
        case("self-prerequisite is a cycle", "self-loop", {}, parse),
        case("cycle through a parent and its child", "parent-cycle.child", {}, parse),
        case("cycle through a child: the parent too", "parent-cycle", {}, parse),
        case(
            "flag downstream of a cycle: error, gated",
            "after-cycle",
            {},
            err("PARSE_ERROR", "cyc-a"),
        ),
        case("unknown prerequisite: PARSE_ERROR", "unknown-prereq", {}, parse),
        case("unknown flag", "no-such-flag", {"targetingKey": "u"}, err("FLAG_NOT_FOUND")),
    ]
    return {
        "description": "Prerequisites (with and without variant), cycles, weights.",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


# -- splits, zero values and units ------------------------------------------------------


def splits() -> dict[str, Any]:
    flags = {
        "rollout": {"enabled": True, "percentage": 12.345},
        "abc": {
            "enabled": True,
            "variants": {"a": "A", "b": "B", "c": "C", "off": ""},
            "on_variant": "a",
            "weights": {"a": 1, "b": 2, "c": 1},
        },
        "abc-half": {
            "enabled": True,
            "percentage": 50,
            "variants": {"a": 0, "b": 1, "off": -1},
            "on_variant": "a",
            "weights": {"a": 1, "b": 1},
        },
        "zero-pct": {"enabled": True, "percentage": 0},
        "zero-int": {"enabled": False, "variants": {"on": 1, "off": 0}},
        "zero-str": {"enabled": True, "percentage": 0, "variants": {"on": "x", "off": ""}},
        "zero-on-value": {"enabled": True, "variants": {"on": False, "off": True}},
        "floats": {"enabled": True, "variants": {"on": 1.5, "off": 0.0}},
        "ints": {"enabled": True, "variants": {"on": 2, "off": 0}},
        "objects": {"enabled": True, "variants": {"on": {"color": "blue", "n": 1}, "off": {}}},
        "half": {"enabled": True, "percentage": 50},
        "by-company": {"enabled": True, "percentage": 50, "bucket_by": "company_id"},
        "full-no-unit": {"enabled": True, "percentage": 100},
    }
    at = [find(lambda u, t=t: b0("rollout", u) == t) for t in (0, 12_344, 12_345)]
    abc = {
        "a": find(lambda u: point("abc", u, 4) == 0),
        "b": find(lambda u: point("abc", u, 4) in (1, 2)),
        "c": find(lambda u: point("abc", u, 4) == 3),
    }
    half_out = find(lambda u: b0("abc-half", u) >= 50_000)
    half_in_b = find(lambda u: b0("abc-half", u) < 50_000 and point("abc-half", u, 2) == 1)
    int_in = next(n for n in range(10_000) if b0("half", str(n)) < 50_000)
    int_out = next(n for n in range(10_000) if b0("half", str(n)) >= 50_000)
    neg = next(n for n in range(-1, -10_000, -1) if b0("half", str(n)) < 50_000)
    company_in = next(n for n in range(10_000) if b0("by-company", str(n)) < 50_000)
    company_out = next(n for n in range(10_000) if b0("by-company", str(n)) >= 50_000)
    cases = [
        case("12.345 %: bucket 0 is included", "rollout", {"targetingKey": at[0]}, on("SPLIT")),
        case(
            "12.345 %: bucket 12344 is the last included",
            "rollout",
            {"targetingKey": at[1]},
            on("SPLIT"),
        ),
        case(
            "12.345 %: bucket 12345 is excluded", "rollout", {"targetingKey": at[2]}, off("SPLIT")
        ),
        case(
            "weights 1:2:1, point 0 -> a", "abc", {"targetingKey": abc["a"]}, ok("A", "a", "SPLIT")
        ),
        case(
            "weights 1:2:1, point 1-2 -> b",
            "abc",
            {"targetingKey": abc["b"]},
            ok("B", "b", "SPLIT"),
        ),
        case(
            "weights 1:2:1, point 3 -> c", "abc", {"targetingKey": abc["c"]}, ok("C", "c", "SPLIT")
        ),
        case("weighted split needs a unit", "abc", {}, err("TARGETING_KEY_MISSING")),
        case(
            "weights at 50 %: excluded units get the off variant (-1)",
            "abc-half",
            {"targetingKey": half_out},
            ok(-1, "off", "SPLIT"),
        ),
        case(
            "weights at 50 %: included unit, weighted b (value 1)",
            "abc-half",
            {"targetingKey": half_in_b},
            ok(1, "b", "SPLIT"),
        ),
        case("zero value false at 0 % (STATIC, no unit needed)", "zero-pct", {}, off("STATIC")),
        case("zero value 0 when disabled", "zero-int", {}, ok(0, "off", "DISABLED")),
        case("zero value empty string", "zero-str", {"targetingKey": "u"}, ok("", "off", "STATIC")),
        case("on variant whose value is false", "zero-on-value", {}, ok(False, "on", "STATIC")),
        case("float values stay floats", "floats", {}, ok(1.5, "on", "STATIC")),
        case("int values stay ints", "ints", {}, ok(2, "on", "STATIC")),
        case("object values", "objects", {}, ok({"color": "blue", "n": 1}, "on", "STATIC")),
        case("100 % needs no unit", "full-no-unit", {}, on("STATIC")),
        case("missing unit", "half", {}, err("TARGETING_KEY_MISSING")),
        case(
            "empty unit means no unit", "half", {"targetingKey": ""}, err("TARGETING_KEY_MISSING")
        ),
        case(
            "null unit means no unit", "half", {"targetingKey": None}, err("TARGETING_KEY_MISSING")
        ),
        case("float unit", "half", {"targetingKey": 1.5}, err("INVALID_CONTEXT")),
        case(
            "integral float unit is still a float",
            "half",
            {"targetingKey": 7.0},
            err("INVALID_CONTEXT"),
        ),
        case("bool unit", "half", {"targetingKey": True}, err("INVALID_CONTEXT")),
        case("object unit", "half", {"targetingKey": {"id": 1}}, err("INVALID_CONTEXT")),
        case("array unit", "half", {"targetingKey": ["a"]}, err("INVALID_CONTEXT")),
        case(
            f"integer unit {int_in} buckets as '{int_in}' (included)",
            "half",
            {"targetingKey": int_in},
            on("SPLIT"),
        ),
        case(
            f"integer unit {int_out} buckets as '{int_out}' (excluded)",
            "half",
            {"targetingKey": int_out},
            off("SPLIT"),
        ),
        case(
            f"string unit '{int_out}' buckets like the integer",
            "half",
            {"targetingKey": str(int_out)},
            off("SPLIT"),
        ),
        case(f"negative integer unit {neg}", "half", {"targetingKey": neg}, on("SPLIT")),
        case(
            "bucket_by another attribute (included)",
            "by-company",
            {"targetingKey": "ignored", "company_id": company_in},
            on("SPLIT"),
        ),
        case(
            "bucket_by another attribute (excluded)",
            "by-company",
            {"company_id": str(company_out)},
            off("SPLIT"),
        ),
        case(
            "bucket_by attribute missing although targetingKey is set",
            "by-company",
            {"targetingKey": "u"},
            err("TARGETING_KEY_MISSING"),
        ),
    ]
    return {
        "description": "Percentages, weights (seed 1), zero values, value types, units.",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


# -- reasons through the chain ----------------------------------------------------------


def reasons() -> dict[str, Any]:
    flags = {
        "matched": {
            "enabled": True,
            "percentage": 0,
            "rules": [{"conditions": [cond("plan", "eq", "pro")], "variant": "on"}],
        },
        "matched.child": {"enabled": True},
        "matched.child.grand": {"enabled": True},
        "static": {"enabled": True},
        "static.targeted": {"enabled": True, "percentage": 0, "targets": {"on": ["alice"]}},
        "static.targeted.grand": {"enabled": True},
        "static.zero": {"enabled": True, "percentage": 0},
    }
    cases = [
        case(
            "parent TARGETING_MATCH, child STATIC on -> TARGETING_MATCH",
            "matched.child",
            {"plan": "pro"},
            on("TARGETING_MATCH"),
        ),
        case(
            "two levels: first non-STATIC reason of the chain",
            "matched.child.grand",
            {"plan": "pro"},
            on("TARGETING_MATCH"),
        ),
        case(
            "parent at 0 % through no rule: STATIC off, gated",
            "matched.child.grand",
            {"plan": "free"},
            off("STATIC", "matched"),
        ),
        case(
            "STATIC parent, targeted child",
            "static.targeted",
            {"targetingKey": "alice"},
            on("TARGETING_MATCH"),
        ),
        case(
            "STATIC grandparent, targeted parent, STATIC child -> TARGETING_MATCH",
            "static.targeted.grand",
            {"targetingKey": "alice"},
            on("TARGETING_MATCH"),
        ),
        case(
            "whole chain STATIC off",
            "static.targeted.grand",
            {"targetingKey": "bob"},
            off("STATIC", "static.targeted"),
        ),
        case("child off at 0 % under a STATIC parent", "static.zero", {}, off("STATIC")),
    ]
    return {
        "description": "Reasons through the chain: STATIC only if the whole chain is STATIC.",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


# -- off variants that are not named "off" ---------------------------------------------


def off_variants() -> dict[str, Any]:
    experiment = {"control": "A", "treatment": "B"}
    flags = {
        "experiment": {
            "enabled": True,
            "percentage": 50,
            "variants": experiment,
            "on_variant": "treatment",
            "off_variant": "control",
        },
        "experiment.child": {"enabled": True},
        "needs-experiment": {"enabled": True, "prerequisites": [{"key": "experiment"}]},
        "experiment-stopped": {
            "enabled": False,
            "variants": experiment,
            "on_variant": "treatment",
            "off_variant": "control",
        },
        "experiment-stopped.child": {"enabled": True},
        "pinned": {
            "enabled": True,
            "variants": experiment,
            "on_variant": "treatment",
            "off_variant": "control",
            "targets": {"control": ["alice"]},
        },
        "pinned.child": {"enabled": True},
        "named-off": {
            "enabled": True,
            "variants": {"off": "legacy", "none": ""},
            "on_variant": "off",
            "off_variant": "none",
        },
        "named-off.child": {"enabled": True},
        "yes-no": {
            "enabled": True,
            "percentage": 0,
            "variants": {"yes": True, "no": False},
            "on_variant": "yes",
            "off_variant": "no",
            "targets": {"yes": ["alice"]},
        },
        "dark-launch": {
            "enabled": True,
            "percentage": 0,
            "variants": {"on": True, "off": False, "dark": False},
            "rules": [{"conditions": [cond("plan", "eq", "pro")], "variant": "dark"}],
        },
        "dark-launch.child": {"enabled": True},
        "broken-experiment": {
            "enabled": True,
            "variants": experiment,
            "on_variant": "treatment",
            "off_variant": "control",
            "rules": [
                {"conditions": [cond("x", "in_segment", "no-such-segment")], "variant": "treatment"}
            ],
        },
    }
    treated = find(lambda u: b0("experiment", u) < 50_000)
    control = find(lambda u: b0("experiment", u) >= 50_000)
    cases = [
        case(
            "included: the on variant treatment",
            "experiment",
            {"targetingKey": treated},
            ok("B", "treatment", "SPLIT"),
        ),
        case(
            "excluded: the off variant control",
            "experiment",
            {"targetingKey": control},
            ok("A", "control", "SPLIT"),
        ),
        case("child of treatment: on", "experiment.child", {"targetingKey": treated}, on("SPLIT")),
        case(
            "child of control: gated",
            "experiment.child",
            {"targetingKey": control},
            off("SPLIT", "experiment"),
        ),
        case(
            "prerequisite serving treatment: passes",
            "needs-experiment",
            {"targetingKey": treated},
            on("SPLIT"),
        ),
        case(
            "prerequisite serving control: gated",
            "needs-experiment",
            {"targetingKey": control},
            off("SPLIT", "experiment"),
        ),
        case(
            "disabled: control, DISABLED",
            "experiment-stopped",
            {},
            ok("A", "control", "DISABLED"),
        ),
        case(
            "child of a disabled experiment: gated",
            "experiment-stopped.child",
            {},
            off("DISABLED", "experiment-stopped"),
        ),
        case(
            "targeted to control",
            "pinned",
            {"targetingKey": "alice"},
            ok("A", "control", "TARGETING_MATCH"),
        ),
        case(
            "not targeted: treatment",
            "pinned",
            {"targetingKey": "bob"},
            ok("B", "treatment", "STATIC"),
        ),
        case(
            "child of a unit targeted to control: gated",
            "pinned.child",
            {"targetingKey": "alice"},
            off("TARGETING_MATCH", "pinned"),
        ),
        case(
            "child of treatment: on, STATIC", "pinned.child", {"targetingKey": "bob"}, on("STATIC")
        ),
        case(
            "a variant named off that is not the off variant is on",
            "named-off",
            {},
            ok("legacy", "off", "STATIC"),
        ),
        case("its child is not gated", "named-off.child", {}, on("STATIC")),
        case(
            "true/false under other names: the value says it",
            "yes-no",
            {"targetingKey": "alice"},
            ok(True, "yes", "TARGETING_MATCH"),
        ),
        case(
            "true/false under other names: off",
            "yes-no",
            {"targetingKey": "bob"},
            ok(False, "no", "STATIC"),
        ),
        case(
            "a false value that is not the off variant is on",
            "dark-launch",
            {"plan": "pro"},
            ok(False, "dark", "TARGETING_MATCH"),
        ),
        case("the off variant of the same flag", "dark-launch", {"plan": "free"}, off("STATIC")),
        case(
            "child of the dark variant: not gated",
            "dark-launch.child",
            {"plan": "pro"},
            on("TARGETING_MATCH"),
        ),
        case(
            "child of the off variant: gated",
            "dark-launch.child",
            {"plan": "free"},
            off("STATIC", "dark-launch"),
        ),
        case(
            "a flag that fails to compile serves control with PARSE_ERROR",
            "broken-experiment",
            {"targetingKey": treated},
            {**ok("A", "control", "ERROR"), "errorCode": "PARSE_ERROR"},
        ),
    ]
    return {
        "description": "Off variants with other names (control): a flag is on unless it serves "
        "its own off_variant, whatever the variants are named or worth; answers of flags whose "
        "values do not say it carry metadata.on.",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


# -- anonymous visitors ------------------------------------------------------------------


def anonymous() -> dict[str, Any]:
    """A context without ``targetingKey`` (an anonymous visitor) is one with an empty one:
    each flag answers for itself, and only a flag that needs a unit (a split, or a child of
    one) is ``TARGETING_KEY_MISSING``. OFREP single and bulk send these contexts as they are
    (docs/spec.md section 4)."""
    flags = {
        "banner": {"enabled": True},
        "banner-off": {"enabled": False},
        "rollout": {"enabled": True, "percentage": 30},
        "rollout.child": {"enabled": True},
        "everyone": {"enabled": True, "percentage": 100},
        "experiment": {
            "enabled": True,
            "variants": {"a": "A", "b": "B", "off": ""},
            "on_variant": "a",
            "weights": {"a": 1, "b": 1},
        },
        "by-country": rule_flag(cond("country", "eq", "NL")),
    }
    needs_unit = err("TARGETING_KEY_MISSING")
    cases = []
    for label, context in (
        ("no context at all", {}),
        ("an empty targetingKey", {"targetingKey": ""}),
        ("attributes only", {"country": "NL", "plan": "free"}),
    ):
        matched = on("TARGETING_MATCH") if "country" in context else off("STATIC")
        cases += [
            case(f"{label}: a flag on for everyone", "banner", context, on("STATIC")),
            case(f"{label}: a disabled flag", "banner-off", context, off("DISABLED")),
            case(f"{label}: 100 % needs no unit", "everyone", context, on("STATIC")),
            case(f"{label}: a percentage needs a unit", "rollout", context, needs_unit),
            case(
                f"{label}: a child of a percentage needs its unit",
                "rollout.child",
                context,
                err("TARGETING_KEY_MISSING", "rollout"),
            ),
            case(f"{label}: a weighted split needs a unit", "experiment", context, needs_unit),
            case(f"{label}: a rule on an attribute", "by-country", context, matched),
        ]
    return {
        "description": "Anonymous visitors: no targetingKey behaves as an empty one, per flag.",
        "document": {"bucketing": 1, "flags": flags},
        "cases": cases,
    }


FILES = {
    "hierarchy": hierarchy,
    "conditions": conditions,
    "targeting": targeting,
    "prerequisites": prerequisites,
    "splits": splits,
    "reasons": reasons,
    "off-variants": off_variants,
    "anonymous": anonymous,
}

#: The variants of a flag that names none.
DEFAULT_VARIANTS = {"on": True, "off": False}


def with_on(data: dict[str, Any]) -> dict[str, Any]:
    """Add ``metadata.on`` to the served answers of flags whose values do not say whether
    they are on. A flag is on unless it serves its own off variant (the rule that gates its
    children); only when every value is ``true`` but the off variant's ``false`` does the
    value say so by itself."""
    flags = data["document"]["flags"]
    for item in data["cases"]:
        expected = item["expected"]
        flag = flags.get(item["key"])
        if flag is None or expected.get("errorCode") is not None:
            continue
        if "variant" not in expected or "metadata" not in expected:
            continue
        off_variant = flag.get("off_variant", "off")
        variants = flag.get("variants", DEFAULT_VARIANTS)
        if all(value is (name != off_variant) for name, value in variants.items()):
            continue
        metadata = {**(expected["metadata"] or {}), "on": expected["variant"] != off_variant}
        item["expected"] = {**expected, "metadata": metadata}
    return data


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    return {f"{name}.json": render(with_on(make())) for name, make in FILES.items()}


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
