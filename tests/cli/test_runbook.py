"""The release runbook, scripted with the real ``flags`` against a live 2-worker server.

After each ``flags enable/disable`` returns 0 every worker serves the change, so the next
evaluation (whichever worker answers it) must already agree with ``flagport.bucket``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from flagport import bucket
from tests.cli.conftest import Flags, plan_view
from tests.support.server import RunningServer, wait_until

UNITS = [str(n) for n in range(400)]
CHILDREN = (
    "ui-improvements.mobile-navigation-fix",
    "ui-improvements.dropdown-fixes",
    "ui-improvements.responsive-tables",
)


def served_on(server: RunningServer, key: str, units: list[str] = UNITS) -> set[str]:
    on = set()
    with server.client(timeout=10) as client:
        for unit in units:
            response = client.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": unit}}
            )
            assert response.status_code == 200, response.text
            if response.json()["value"] is True:
                on.add(unit)
    return on


def expected(salt: str, percentage: float) -> set[str]:
    return {u for u in UNITS if bucket(salt, u) < round(percentage * 1000)}


def test_rollout_10_50_100_disable_enable_same_cohort(flags: Flags, server: RunningServer) -> None:
    key = "checkout.redesign"
    created = flags.ok(
        "create",
        key,
        "--description",
        "New checkout",
        "--tag",
        "checkout",
        "--owner",
        "payments",
        "--reason",
        "runbook",
    )
    assert "created checkout.redesign: off at 100 %" in created.out
    assert served_on(server, key) == set()

    cohorts = {}
    for percentage in (10, 50, 100):
        result = flags.ok("enable", key, "--percentage", str(percentage), "--reason", "ramp")
        assert f"{key}: on at {percentage} %" in result.out
        assert "applied by 2 worker(s)" in result.out
        cohorts[percentage] = served_on(server, key)
        assert cohorts[percentage] == expected(key, percentage)
    assert cohorts[10] < cohorts[50] < cohorts[100] == set(UNITS)
    assert 20 < len(cohorts[10]) < 60
    assert 160 < len(cohorts[50]) < 240

    flags.ok("enable", key, "--percentage", "50", "--reason", "back to half")
    assert flags.ok("disable", key, "--reason", "errors up").out.startswith(f"{key}: off at 50 %")
    assert served_on(server, key) == set()
    again = flags.ok("enable", key, "--reason", "fixed")
    assert f"{key}: on at 50 %" in again.out
    assert "warning" not in again.err
    assert served_on(server, key) == cohorts[50]

    audit = flags.ok("audit", key, "--since", "1h", "--json")
    entries = json.loads(audit.out)["entries"]
    assert [e["action"] for e in entries][:3] == ["enable", "disable", "enable"]
    assert entries[1]["reason"] == "errors up"
    assert all(e["actor"] == "admin" for e in entries)


def test_portal_parent_drives_children_then_disable_by_tag(
    flags: Flags, server: RunningServer
) -> None:
    flags.ok("enable", "ui-improvements", "--percentage=10")
    parent = served_on(server, "ui-improvements")
    assert parent == expected("ui-improvements", 10)
    with server.client(timeout=10) as client:
        for unit in UNITS[:60]:
            body = client.post(
                "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": unit}}
            ).json()
            values = {item["key"]: item.get("value") for item in body["flags"]}
            for child in CHILDREN:
                assert values[child] is (unit in parent), (unit, child)

    explained = flags.ok("explain", CHILDREN[0], "--user", "7", "--attr", "plan=pro")
    unit_bucket = bucket("ui-improvements", "7")
    assert "hash input  'ui-improvements:7'" in explained.out
    assert f"bucket      {unit_bucket} of 100000" in explained.out
    assert "threshold   10000 (10 %)" in explained.out
    assert "parent ui-improvements" in explained.out
    verdict = "on (true)" if unit_bucket < 10000 else "off (false)"
    assert explained.out.rstrip().splitlines()[-1].strip().startswith(f"result      {verdict}")
    trace = json.loads(flags.ok("explain", CHILDREN[0], "-u", "7", "--json").out)
    assert trace["gates"][0]["steps"][1]["bucket"] == unit_bucket

    killed = flags.ok("disable", "--tag", "ui", "--reason", "incident 42")
    for key in ("ui-improvements", *CHILDREN, "enhanced-mobile-nav"):
        assert f"{key}: off" in killed.out
    assert "performance-monitoring" not in killed.out
    for key in ("ui-improvements", CHILDREN[1]):
        assert served_on(server, key, UNITS[:50]) == set()
    entry = json.loads(flags.ok("audit", "ui-improvements", "--json").out)["entries"][0]
    assert entry["reason"] == "incident 42"
    assert entry["after"].get("enabled", False) is False


def test_export_import_round_trip_and_drift(flags: Flags, tmp_path: Path) -> None:
    exported = tmp_path / "flags.yaml"
    flags.ok("export", "-o", str(exported))
    assert "ui-improvements.dropdown-fixes" in exported.read_text()
    assert flags.ok("export").out.strip() == exported.read_text().strip()

    same = flags.ok("diff", str(exported))
    assert "no drift" in same.out
    dry = flags.ok("import", str(exported), "--dry-run")
    assert "no changes" in dry.out
    flags.ok("import", str(exported), "--reason", "round trip")
    assert flags.ok("export").out.strip() == exported.read_text().strip()

    flags.ok("enable", "auth-improvements", "--percentage", "25", "--reason", "drift on purpose")
    drift = flags("diff", str(exported))
    assert drift.code == 1, str(drift)
    assert "~ flag auth-improvements" in drift.out
    assert "enabled: true -> false" in drift.out, drift.out
    assert "percentage: 25.0 -> 0.0" in drift.out
    as_json = flags("diff", str(exported), "--json")
    assert as_json.code == 1
    assert json.loads(as_json.out)["diff"]["flags"]["changed"] == ["auth-improvements"]

    preview = flags.ok("import", str(exported), "--dry-run")
    assert "~ flag auth-improvements" in preview.out
    assert "dry run: nothing applied" in preview.out
    assert flags("diff", str(exported)).code == 1
    applied = flags.ok("import", str(exported), "--reason", "back to the file")
    assert "applied (snapshot version" in applied.out
    assert flags("diff", str(exported)).code == 0


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_formats(flags: Flags, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{fmt}"
    flags.ok("export", "-o", str(target))
    text = target.read_text()
    assert text.lstrip().startswith("{") == (fmt == "json")
    assert flags.ok("diff", str(target)).code == 0


def test_enable_no_wait(flags: Flags, server: RunningServer) -> None:
    result = flags.ok("enable", "performance-monitoring", "-p", "30", "--no-wait")
    assert "applied by" not in result.out
    body = httpx.get(
        server.url + "/admin/v1/flags/performance-monitoring", headers=server.admin_headers
    ).json()
    assert body["enabled"] is True
    assert body["percentage"] == 30.0


def _statuses(server: RunningServer, key: str, units: list[str]) -> set[int]:
    """The OFREP statuses of ``key`` for ``units``, from whichever worker answers each."""
    with server.client(timeout=10) as client:
        return {
            client.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": unit}}
            ).status_code
            for unit in units
        }


def test_every_serving_change_is_served_by_both_workers_when_the_command_exits(
    flags: Flags, server: RunningServer, tmp_path: Path
) -> None:
    """Like ``enable``, every command that changes what is served waits until both workers
    apply it: the evaluations right after it exits, whichever worker answers, agree."""
    key = "search.facets"
    applied = "applied by 2 worker(s) on 1 instance(s)"
    created = flags.ok("create", key, "--enabled", "--percentage", "10", "--reason", "new")
    assert applied in created.out
    assert served_on(server, key) == expected(key, 10)

    outside = sorted(set(UNITS) - expected(key, 10))[:3]
    targeted = flags.ok("target", key, "--on", ",".join(outside))
    assert applied in targeted.out
    assert served_on(server, key) == expected(key, 10) | set(outside)

    started = flags.ok("rollout", "start", key, "--steps", "25,100", "--hold", "1h")
    assert applied in started.out
    # The server's driver takes the first step, after the plan's commit.
    assert wait_until(lambda: plan_view(flags, key)["percentage"] == 25, timeout=15.0)
    paused = flags.ok("rollout", "pause", key)
    assert applied in paused.out
    rolled_back = flags.ok("rollout", "abort", key, "--rollback", "--reason", "errors up")
    assert applied in rolled_back.out
    assert served_on(server, key) == set()

    document = json.loads(flags.ok("export", "--format", "json").out)
    document["flags"][key]["enabled"] = True
    document["flags"][key]["targets"] = {}
    changed = tmp_path / "flags.json"
    changed.write_text(json.dumps(document))
    imported = flags.ok("import", str(changed), "--reason", "back on")
    assert applied in imported.out
    assert served_on(server, key) == expected(key, 25)
    quiet = flags.ok("import", str(changed), "--json")  # nothing changed, nothing committed
    assert json.loads(quiet.out)["applied"] is False

    deleted = flags.ok("delete", key, "--yes")
    assert applied in deleted.out
    assert _statuses(server, key, UNITS[:40]) == {404}
    as_json = flags.ok("create", key, "--json")  # with --json: the answer only, still waited for
    assert json.loads(as_json.out)["flag"]["key"] == key
    assert "applied by" not in as_json.out
    assert _statuses(server, key, UNITS[:40]) == {200}  # known to both workers
