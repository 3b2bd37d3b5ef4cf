"""Every ``flags`` command against a live server: tables for people, API bodies with --json."""

from __future__ import annotations

import json
from pathlib import Path

from flagport import bucket
from tests.cli.conftest import Flags, run_flags
from tests.support.server import RunningServer, running_server


def test_list_and_show(flags: Flags) -> None:
    table = flags.ok("list").out.splitlines()
    assert table[0].split() == ["KEY", "STATE", "PERCENT", "TAGS", "OWNER", "DESCRIPTION"]
    assert any(line.startswith("ui-improvements.dropdown-fixes ") for line in table)
    body = json.loads(flags.ok("list", "--json").out)
    assert {"flags", "snapshot_version"} <= set(body)
    assert len(body["flags"]) == len(table) - 1
    assert json.loads(flags.ok("--json", "list").out)["flags"] == body["flags"]
    tagged = json.loads(flags.ok("list", "--tag", "monitoring", "--json").out)["flags"]
    assert {f["key"] for f in tagged} == {
        "performance-monitoring",
        "performance-monitoring.real-time-metrics",
        "performance-monitoring.enhanced-logging",
    }
    shown = flags.ok("show", "ui-improvements").out
    assert "owner           web-team" in shown
    assert "tags            ui, release-2026-12" in shown
    flag = json.loads(flags.ok("show", "ui-improvements", "--json").out)
    assert flag["key"] == "ui-improvements"
    assert flag["tags"] == ["ui", "release-2026-12"]


def test_create_with_every_option_then_delete(flags: Flags) -> None:
    created = json.loads(
        flags.ok(
            "create",
            "billing.invoices-v2",
            "--description",
            "Invoices v2",
            "--percentage",
            "12.5",
            "--tag",
            "billing",
            "--tag",
            "beta",
            "--bucket-by",
            "company_id",
            "--salt",
            "billing",
            "--owner",
            "finance",
            "--reason",
            "new",
            "--json",
        ).out
    )
    flag = created["flag"]
    assert flag["key"] == "billing.invoices-v2"
    assert (flag["enabled"], flag["percentage"], flag["bucket_by"], flag["salt"]) == (
        False,
        12.5,
        "company_id",
        "billing",
    )
    assert (flag["tags"], flag["owner"], flag["description"]) == (
        ["billing", "beta"],
        "finance",
        "Invoices v2",
    )
    flags.ok("create", "billing", "--enabled")
    refused = flags("delete", "billing")  # no terminal to confirm on
    assert refused.code == 2
    assert "--yes" in refused.err
    assert flags("delete", "billing", "--yes").code == 1  # a parent
    deleted = flags.ok("delete", "billing", "--recursive", "--yes", "--reason", "cleanup")
    assert "billing" in deleted.out
    assert "billing.invoices-v2" in deleted.out
    assert flags("show", "billing.invoices-v2").code == 1
    entry = json.loads(flags.ok("audit", "billing", "--json").out)["entries"][0]
    assert entry["action"] == "delete"
    assert entry["reason"] == "cleanup"


def test_target(flags: Flags, server: RunningServer) -> None:
    flags.ok("create", "targeted", "--percentage", "0", "--enabled")
    out = flags.ok("target", "targeted", "--on", "alice,bob", "--on", "carol", "--off", "dave").out
    assert "on: alice, bob, carol" in out
    assert "off: dave" in out
    flags.ok("target", "targeted", "--off", "bob", "--remove", "carol", "--reason", "moved")
    targets = json.loads(flags.ok("show", "targeted", "--json").out)["targets"]
    assert targets == {"on": ["alice"], "off": ["dave", "bob"]}
    with server.client() as client:

        def value(unit: str) -> object:
            return client.post(
                "/ofrep/v1/evaluate/flags/targeted", json={"context": {"targetingKey": unit}}
            ).json()["value"]

        assert [value(u) for u in ("alice", "bob", "zed")] == [True, False, False]
    explained = flags.ok("explain", "targeted", "--user", "alice").out
    assert "targets     targetingKey alice: matched -> on" in explained
    flags.ok("target", "targeted", "--clear")
    assert json.loads(flags.ok("show", "targeted", "--json").out)["targets"] == {}


def test_audit_filters(flags: Flags) -> None:
    flags.ok("enable", "enhanced-mobile-nav", "-p", "5", "--reason", "audit me")
    table = flags.ok("audit", "enhanced-mobile-nav", "--since", "30m").out.splitlines()
    assert table[0].split()[:6] == ["ID", "AT", "ACTOR", "TOKEN", "ACTION", "KEY"]
    assert "audit me" in table[1]
    assert "admin" in table[1]
    for since in ("1h", "7d", "90s", "1h30m", "2000-01-01T00:00:00Z"):
        assert json.loads(flags.ok("audit", "--since", since, "--json").out)["entries"]
    assert json.loads(flags.ok("audit", "--actor", "nobody", "--json").out)["entries"] == []
    page = json.loads(flags.ok("audit", "--limit", "1", "--json").out)
    assert len(page["entries"]) == 1
    assert page["next_before_id"] is not None


def test_tokens(flags: Flags, server: RunningServer) -> None:
    created = flags.ok("token", "create", "ci-deployer", "--scope", "admin")
    secret = created.out.strip()
    assert "shown only now" in created.err
    assert flags("list", token=secret).code == 0
    listed = json.loads(flags.ok("token", "list", "--json").out)["tokens"]
    mine = next(t for t in listed if t["name"] == "ci-deployer")
    assert "secret" not in mine
    assert "ci-deployer" in flags.ok("token", "list").out
    assert "revoked token ci-deployer" in flags.ok("token", "revoke", mine["id"]).out
    assert flags("list", token=secret).code == 4
    body = json.loads(flags.ok("token", "create", "app", "--scope", "evaluate", "--json").out)
    assert body["token"]["scope"] == "evaluate"
    with server.client() as client:
        assert (
            client.get(
                "/admin/v1/flags", headers={"Authorization": f"Bearer {body['secret']}"}
            ).status_code
            == 403
        )


def test_status(flags: Flags, server: RunningServer, tmp_path: Path) -> None:
    out = flags.ok("status").out
    assert f"server      {server.url}: ok" in out
    assert "store       sqlite (ok)" in out
    assert "workers     2 live on 1 instance(s)" in out
    body = json.loads(flags.ok("status", "--json").out)
    assert body["readyz"]["status"] == "ok"
    assert len(body["propagation"]["workers"]) == 2
    without_token = flags("status", token=None, cwd=tmp_path)
    assert without_token.code == 0
    assert "workers     unknown" in without_token.out


def test_kill_all_and_json_write_bodies(flags: Flags, server: RunningServer) -> None:
    flags.ok("enable", "performance-monitoring", "-p", "100")
    body = json.loads(flags.ok("kill", "--all", "--reason", "drill", "--json").out)
    assert all(not f["enabled"] for f in body["flags"])
    assert body["snapshot_version"] >= 1
    status = json.loads(flags.ok("status", "--json").out)
    applied = {w["applied_version"] for w in status["propagation"]["workers"]}
    assert min(applied) >= body["snapshot_version"]
    several = flags.ok("disable", "ui-improvements", "auth-improvements").out
    assert "ui-improvements: off" in several
    assert "auth-improvements: off" in several
    entry = json.loads(flags.ok("audit", "auth-improvements", "--json").out)["entries"][0]
    assert "no reason given" in entry["reason"]
    with server.client() as client:
        item = client.post(
            "/ofrep/v1/evaluate/flags/performance-monitoring",
            json={"context": {"targetingKey": "1"}},
        ).json()
    assert item["reason"] == "DISABLED"


def test_enable_at_zero_warns(flags: Flags) -> None:
    flags.ok("create", "zero", "--percentage", "0")
    result = flags.ok("enable", "zero")
    assert "warning: zero is enabled at 0 %" in result.err


def test_unix_socket_and_version(tmp_path: Path) -> None:
    with running_server(tmp_path / "uds", uds=True) as live:
        url = f"unix://{live.uds}"
        flags_out = run_flags("list", url=url)
        assert flags_out.code == 0, str(flags_out)
        assert run_flags("create", "over-uds", url=url).code == 0
        assert run_flags("disable", "over-uds", url=url).code == 0
    assert run_flags("--version", url=None).out.startswith("flags, version")
    assert "Exit codes" in run_flags("--help", url=None).out


def test_explain_shows_rules_and_conditions(flags: Flags, server: RunningServer) -> None:
    flags.ok("create", "ruled", "--enabled", "--percentage", "0")
    rules = [
        {
            "name": "pros",
            "conditions": [
                {"attribute": "plan", "op": "eq", "values": ["pro"]},
                {"attribute": "country", "op": "in", "values": ["FR", "DE"]},
            ],
            "variant": "on",
        },
        {"conditions": [{"attribute": "age", "op": "gte", "values": [18]}], "percentage": 50},
    ]
    with server.admin() as client:
        assert client.put("/admin/v1/flags/ruled/rules", json={"rules": rules}).is_success
    out = flags.ok(
        "explain",
        "ruled",
        "--user",
        "u1",
        "--attr",
        "plan=free",
        "--attr",
        "country=FR",
        "--attr",
        "age:=30",
    ).out
    assert "rule 0 pros  conditions [false, true]: no match" in out
    assert "plan eq pro: false" in out
    assert 'country in ["FR", "DE"]: true' in out
    assert "age gte 18: true" in out
    assert "threshold   50000 (50 %)" in out
    assert f"bucket      {bucket('ruled', 'u1')} of 100000" in out
    pro = flags.ok("explain", "ruled", "-u", "u1", "--attr", "plan=pro", "--attr", "country=DE")
    assert "result      on (true), reason TARGETING_MATCH" in pro.out
