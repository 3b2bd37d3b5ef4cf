"""``flags rollout``: against a real server (subprocess, SQLite store, the portal's flags)
whose driver runs on real time. Bad options exit 2 before any request, refusals that need
the flag exit 1, nothing changes either way; a person's change pauses a plan in the same
commit, naming it (docs/spec.md, "Guarded rollouts")."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from flagport_cli._errors import UsageProblem
from flagport_cli.main import cli
from tests.cli.conftest import Flags, plan_view
from tests.support.server import ADMIN_TOKEN, PORTAL_FLAGS, RunningServer, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("server"), seed=PORTAL_FLAGS, workers=1) as live:
        yield live


def plans(flags: Flags) -> list[dict[str, Any]]:
    """Read over HTTP (cheaper than the CLI: the commands under test are the CLI's)."""
    with flags.server.admin() as admin:
        body: list[dict[str, Any]] = admin.get("/admin/v1/rollouts").json()["plans"]
    return body


def flag(flags: Flags, key: str) -> dict[str, Any]:
    with flags.server.admin() as admin:
        found: dict[str, Any] = admin.get(f"/admin/v1/flags/{key}").json()
    return found


def wait_for(flags: Flags, key: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = plan_view(flags, key)
        if found["status"] == status or time.monotonic() > deadline:
            assert found["status"] == status, found
            return found
        time.sleep(0.2)


BAD_OPTIONS = [
    (["--steps", "10,5,50"], "steps must increase"),
    (["--steps", "10,150"], "at most 100"),
    (["--steps", "10.1234,50"], "more than 3 decimals"),
    (["--hold", "0s"], "positive"),
    (["--hold", "-5m"], "invalid duration"),
    (["--guard", "error_rate >> 5% over 5m"], "at column 13"),
    (["--start-at", "2020-01-01T02:00+01:00"], "in the past"),
    (["--start-at", "02:00", "--tz", "Mars/Olympus"], "unknown time zone"),
    (["--window", "02:00-02:00", "--tz", "Europe/Berlin"], "is empty"),
    (["--guard", "runbook"], "needs a health url"),
    (["--guard", "health_failures >= 3", "--health-url", "ftp://x/h"], "http(s)"),
]


def test_bad_options_exit_2_naming_the_problem_and_change_nothing(flags: Flags) -> None:
    # One through the executable; the rest in-process (the same command, no interpreter
    # start each): the error is the UsageProblem `flags` exits 2 with.
    result = flags("rollout", "start", "enhanced-mobile-nav", *BAD_OPTIONS[0][0])
    assert result.code == 2, str(result)
    assert f"flags: rollout start: {BAD_OPTIONS[0][1]}" in result.err
    runner = CliRunner()
    for options, message in BAD_OPTIONS:
        args = ["--url", flags.server.url, "rollout", "start", "enhanced-mobile-nav", *options]
        ran = runner.invoke(cli, args, env={"FLAGPORT_TOKEN": ADMIN_TOKEN})
        assert isinstance(ran.exception, UsageProblem), (options, ran.output, ran.exception)
        assert ran.exception.exit_code == 2
        assert message in ran.exception.message.lower(), (options, ran.exception.message)
    assert not [p for p in plans(flags) if p["key"] == "enhanced-mobile-nav"]


def test_refusals_that_need_the_flag_exit_1(flags: Flags, server: RunningServer) -> None:
    with server.admin() as admin:
        made = admin.post(
            "/admin/v1/flags",
            json={
                "key": "theme",
                "variants": {"a": 1, "b": 2, "c": 3},
                "weights": {"a": 1, "b": 1, "c": 1},
                "on_variant": "a",
                "off_variant": "b",
            },
        )
        assert made.status_code == 201, made.text
        raised = admin.post("/admin/v1/flags/auth-improvements/enable", json={"percentage": 30})
        assert raised.status_code == 200, raised.text
    unknown = flags("rollout", "start", "no-such-flag")
    assert (unknown.code, "not found" in unknown.err) == (1, True), str(unknown)
    weighted = flags("rollout", "start", "theme")
    assert (weighted.code, "weights" in weighted.err) == (1, True), str(weighted)
    below = flags("rollout", "start", "auth-improvements", "--steps", "10,50")
    assert (below.code, "30" in below.err) == (1, True), str(below)
    assert not [p for p in plans(flags) if p["key"] in ("theme", "auth-improvements")]


def test_a_plan_runs_a_person_pauses_it_resume_and_abort(flags: Flags) -> None:
    key = "ui-improvements"
    started = flags.ok(
        "rollout", "start", key, "--steps", "10,50", "--hold", "1h", "--reason", "release 7"
    )
    assert "steps 10 %, 50 %" in started.out
    again = flags("rollout", "start", key)
    assert (again.code, "already has a plan" in again.err) == (1, True), str(again)
    running = wait_for(flags, key, "running")
    assert running["step"] == 1
    assert running["percentage"] == 10.0
    shown = flag(flags, key)
    assert shown["enabled"]
    assert shown["percentage"] == 10.0
    human = flags.ok("rollout", "status", key)
    assert "running, step 1/2 (10 %)" in human.out
    # ``flags stats`` shows the plan, and the step in the changes.
    stats = flags.ok("stats", key).out
    assert "rollout     running, step 1/2 (10 %), next in " in stats, stats
    assert "plan-start" in flags.ok("audit", key).out
    other = flags.ok("stats", "ui-improvements.dropdown-fixes").out
    assert "rollout " not in other
    # A child's change does not touch the parent's plan; the parent's own change pauses it.
    with flags.server.admin() as admin:
        admin.post("/admin/v1/flags/ui-improvements.dropdown-fixes/enable", json={})
    assert plan_view(flags, key)["status"] == "running"
    flags.ok("enable", key, "--percentage", "20")
    paused = plan_view(flags, key)
    assert paused["status"] == "paused"
    assert paused["plan"]["reason"] == f"flag {key!r} changed by admin"
    with flags.server.admin() as admin:
        entries = admin.get("/admin/v1/audit", params={"key": key}).json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["plan-pause", "enable"]  # newest first, one commit
    assert entries[0]["snapshot_version"] == entries[1]["snapshot_version"]
    resumed = json.loads(flags.ok("rollout", "resume", key, "--json").out)["plan"]
    assert resumed["status"] == "running"
    assert resumed["percentage"] == 20.0
    wrong = flags("rollout", "resume", key)
    assert (wrong.code, "running" in wrong.err) == (1, True), str(wrong)
    flags.ok("rollout", "abort", key, "--rollback", "--reason", "not today")
    assert plan_view(flags, key)["status"] == "aborted"
    assert not flag(flags, key)["enabled"]


def test_a_change_to_a_prerequisite_or_ancestor_pauses_the_plan(flags: Flags) -> None:
    key = "performance-monitoring.real-time-metrics"
    flags.ok("rollout", "start", key, "--steps", "100", "--hold", "1h")
    wait_for(flags, key, "running")
    flags.ok("disable", "performance-monitoring")
    paused = plan_view(flags, key)
    assert paused["status"] == "paused"
    assert "ancestor 'performance-monitoring'" in paused["plan"]["reason"]
    # Deleting the plan's flag aborts the plan.
    with flags.server.admin() as admin:
        assert admin.delete(f"/admin/v1/flags/{key}").status_code == 200
        found = admin.get("/admin/v1/rollouts").json()["plans"]
    assert [p["status"] for p in found if p["key"] == key] == ["aborted"]


def test_status_lists_every_guard_reading(flags: Flags) -> None:
    key = "enhanced-mobile-nav"
    flags.ok(
        "rollout",
        "start",
        key,
        "--hold",
        "1h",
        "--guard",
        "error_rate > 5% over 5m",
        "--guard",
        "p95_latency > 1.5s over 5m",
    )
    found = wait_for(flags, key, "running")
    assert [g["verdict"] for g in found["guards"]] == ["not enough data"] * 2
    assert found["guards"][0]["evidence"]["rule"] == "error_rate > 5% over 5m"
    text = flags.ok("rollout", "status", key).out
    assert "error_rate > 5% over 5m" in text
    assert "not enough data" in text
    listed = flags.ok("rollout", "list").out
    assert re.search(r"^enhanced-mobile-nav +running +1/4 +10 % +in \d", listed, re.M), listed
