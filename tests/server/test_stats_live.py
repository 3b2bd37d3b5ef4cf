"""Adoption stats on real servers (issue 9): exact counts across workers and restarts, a wrk
run counted without sampling, exposures from a ``LocalClient``, the admin report and its bad
input, ``flags stats`` / ``flags stale``. The store-level contract (unique counts within
2 %, minute and hour boundaries) is tests/server/test_stats_store.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flagport import LocalClient
from tests.support.server import (
    PORTAL_FLAGS,
    RunningServer,
    flags_executable,
    running_server,
    start_server,
    wait_until,
)
from tests.support.tools import require_tool

KEY = "ui-improvements"
CHILD = "ui-improvements.mobile-navigation-fix"


def _stats(server: RunningServer, key: str = KEY, since: str = "1h") -> dict[str, Any]:
    with server.admin(timeout=10.0) as admin:
        answer = admin.get(f"/admin/v1/flags/{key}/stats", params={"since": since})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _enable(server: RunningServer, key: str, percentage: float) -> None:
    with server.admin(timeout=10.0) as admin:
        answer = admin.post(f"/admin/v1/flags/{key}/enable", json={"percentage": percentage})
    assert answer.status_code == 200, answer.text


def _evaluate(server: RunningServer, units: range, bulk_every: int = 0) -> tuple[int, int]:
    """Single evaluations of KEY for each unit (a bulk one every ``bulk_every``), each on a
    fresh connection so that both workers serve; (evaluations of KEY, workers seen)."""
    workers: set[str] = set()
    for index, unit in enumerate(units):
        body = {"context": {"targetingKey": f"user-{unit}"}}
        bulk = bulk_every and index % bulk_every == 0
        path = "/ofrep/v1/evaluate/flags" if bulk else f"/ofrep/v1/evaluate/flags/{KEY}"
        with server.client(timeout=5.0) as client:
            answer = client.post(path, json=body)
        assert answer.status_code == 200, answer.text
        workers.add(answer.headers["x-flagport-worker"])
    return len(units), len(workers)


def test_exact_counts_across_two_workers_and_a_restart(tmp_path: Path) -> None:
    workdir = tmp_path / "server"
    server = start_server(workdir, workers=2, seed=PORTAL_FLAGS)
    try:
        _enable(server, KEY, 30)
        _enable(server, CHILD, 100)
        first, workers = _evaluate(server, range(300), bulk_every=10)
        assert workers == 2
    finally:
        server.stop()  # graceful: the lifespan writes what is still in memory
    assert server.process.returncode is not None
    server = start_server(workdir, workers=2)
    try:
        second, _ = _evaluate(server, range(200, 400))
        server.stop()
        server = start_server(workdir, workers=2)
        body = _stats(server)
        child = _stats(server, CHILD)
    finally:
        server.stop()
    assert body["total_evaluations"] == first + second == 500
    assert sum(body["evaluations"].values()) == 500
    # 400 distinct units (200 of them evaluated twice), within HyperLogLog's error.
    assert abs(body["units_seen"] - 400) <= 8
    assert 0.2 < body["adoption"] < 0.4
    assert body["enabled"] == sum(v for k, v in body["unique_units"].items() if k != "off")
    assert body["state"] == {
        "enabled": True,
        "percentage": 30.0,
        "version": body["state"]["version"],
        "variants": ["on", "off"],
        "on_variant": "on",
        "off_variant": "off",
    }
    assert len(body["changes"]) == 1
    assert body["changes"][0]["summary"].endswith(" -> 30 %")
    # The child at 100 % under its parent at 30 %: evaluated by the 30 bulk requests, on
    # exactly for the parent's cohort.
    assert child["total_evaluations"] == 30
    assert child["units_seen"] == 30
    assert 0 < child["enabled"] < 30


def _wrk_requests(output: str) -> int:
    match = re.search(r"(\d+) requests in", output)
    assert match, output
    return int(match.group(1))


#: Responses after which the wrk script stops its thread (well before its time limit).
WRK_RESPONSES = 1500


@pytest.mark.parametrize("shape", ["single", "bulk"])
def test_counts_equal_the_requests_wrk_completed(tmp_path: Path, shape: str) -> None:
    tool = require_tool("wrk")
    script = tmp_path / "post.lua"
    # Stopped by the script after a number of responses, not by the clock: a time limit can
    # fall while a request is on the wire, which the server answers and counts but wrk does
    # not. wrk counts a response before calling ``response``; the stopped thread sends
    # nothing more.
    script.write_text(
        "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
        "local n = 0\nlocal answered = 0\n"
        "request = function()\n  n = n + 1\n"
        '  return wrk.format(nil, nil, nil, \'{"context":{"targetingKey":"u\' .. n .. \'"}}\')\n'
        "end\n"
        "response = function(status, headers, body)\n  answered = answered + 1\n"
        f"  if answered >= {WRK_RESPONSES} then wrk.thread:stop() end\n"
        "end\n"
    )
    with running_server(tmp_path / "server", workers=2, seed=PORTAL_FLAGS) as server:
        url = f"{server.url}/ofrep/v1/evaluate/flags" + (f"/{KEY}" if shape == "single" else "")
        # wrk's main thread sleeps for the whole -d even once its thread has stopped; an
        # interrupt ends that sleep and wrk prints its summary.
        load = subprocess.Popen(
            [tool, "-t1", "-c1", "-d120s", "-s", str(script), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def counted() -> bool:
                return _stats(server)["total_evaluations"] >= WRK_RESPONSES

            wait_until(counted, 60.0, 0.5)
        finally:
            load.send_signal(signal.SIGINT)
            output = load.communicate(timeout=30)[0]
        completed = _wrk_requests(output)
        assert completed == WRK_RESPONSES, output
        assert "Non-2xx" not in output, output
        time.sleep(3)  # one more flush: anything beyond wrk's count would show up now
        body = _stats(server)
    assert body["total_evaluations"] == completed, output
    assert abs(body["units_seen"] - completed) <= max(4, completed * 0.02)


def test_local_client_exposures_add_up_with_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", workers=2, seed=PORTAL_FLAGS) as server:
        _enable(server, KEY, 50)
        served, _ = _evaluate(server, range(40))
        client = LocalClient(server.url, report_interval=0.2)
        try:
            assert client.wait_ready(5.0)
            on = sum(client.is_enabled(KEY, {"targetingKey": f"local-{i}"}) for i in range(100))
            assert 20 < on < 80
            details = client.details(KEY, False, {"targetingKey": "user-1"})
            assert details.variant in ("on", "off")
            client.is_enabled("no-such-flag", {"targetingKey": "x"})  # not reported
        finally:
            client.close()  # reports what is left
        expected = served + 101

        def counted() -> bool:
            return _stats(server)["total_evaluations"] >= expected

        assert wait_until(counted, 10.0, 0.2)
        body = _stats(server)
        metrics = server.client().get("/metrics").text
    assert body["total_evaluations"] == expected
    assert abs(body["units_seen"] - 140) <= 3  # user-1 was seen by both
    assert body["enabled"] >= on - 3
    assert 'flagport_exposures_total{flag="ui-improvements",variant="on"}' in metrics


EXPOSURE_CASES = [
    ({"key": "no-such-flag", "variant": "on", "count": 1}, "unknown flag 'no-such-flag'"),
    ({"key": KEY, "variant": "purple", "count": 1}, "has no variant 'purple'"),
    ({"key": KEY, "variant": "on", "count": -3}, "count must be at least 0, got -3"),
    (
        {"key": KEY, "variant": "on", "count": 1, "units": [f"u{i}" for i in range(1001)]},
        "1001 units: at most 1000 per item",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_server(tmp_path_factory.mktemp("stats"), seed=PORTAL_FLAGS) as running:
        yield running


def test_exposure_batches_reject_bad_items_and_count_the_rest(server: RunningServer) -> None:
    # Units no other test of this module's server reports: tests run in any order.
    fresh = uuid.uuid4().hex
    units = [f"{fresh}-a", f"{fresh}-b", int(fresh[:12], 16)]
    good = {"key": CHILD, "variant": "on", "count": 7, "units": units}
    before = _stats(server, CHILD)
    evaluations_before = before["total_evaluations"]
    units_before = before["unique_units"].get("on", 0)
    items = [good] + [item for item, _ in EXPOSURE_CASES]
    with server.client(timeout=10.0) as client:
        answer = client.post("/v1/exposures", json={"exposures": items})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["counted"] == 1
        assert body["evaluations"] == 7
        rejected = body["rejected"]
        assert [r["index"] for r in rejected] == [1, 2, 3, 4]
        for rejection, (_, text) in zip(rejected, EXPOSURE_CASES, strict=True):
            assert text in rejection["error"], rejection
        too_many = {"exposures": [good] * 1001}
        answer = client.post("/v1/exposures", json=too_many)
        assert answer.status_code == 400
        assert "at most 1000 per batch" in answer.json()["detail"]
        huge = b'{"exposures": [' + b'{"key": "x", "variant": "on", "count": 1},' * 30000
        json_type = {"Content-Type": "application/json"}
        answer = client.post("/v1/exposures", content=huge + b"{}]}", headers=json_type)
        assert answer.status_code == 413
        answer = client.post(
            "/v1/exposures", content=b'{"exposures": [{"key": 1}]}', headers=json_type
        )
        assert answer.status_code == 400
        answer = client.post("/v1/exposures", content=b"not json", headers=json_type)
        assert answer.status_code == 400
    assert wait_until(
        lambda: _stats(server, CHILD)["total_evaluations"] >= evaluations_before + 7, 10.0, 0.2
    )
    assert _stats(server, CHILD)["unique_units"]["on"] == units_before + 3


@pytest.mark.parametrize(
    ("since", "status", "text"),
    [
        ("yesterday", 400, "since must be a duration such as 1h, 24h or 7d"),
        ("2999-01-01T00:00:00Z", 400, "is in the future"),
        ("8d", 400, "more than 7 days back"),
        ("7d", 200, None),
        ("90m", 200, None),
    ],
)
def test_stats_since(server: RunningServer, since: str, status: int, text: str | None) -> None:
    with server.admin(timeout=10.0) as admin:
        answer = admin.get(f"/admin/v1/flags/{KEY}/stats", params={"since": since})
    assert answer.status_code == status, answer.text
    if text:
        assert text in answer.json()["detail"]
        assert answer.json()["field"] == "since"
    else:
        since_at = answer.json()["since"]
        assert since_at.endswith(":00:00Z")  # rounded down to the hour


def test_stats_of_an_unknown_flag_is_404_naming_it(server: RunningServer) -> None:
    with server.admin(timeout=10.0) as admin:
        answer = admin.get("/admin/v1/flags/no-such-flag/stats")
    assert answer.status_code == 404
    assert "'no-such-flag'" in answer.json()["detail"]


def _flags(server: RunningServer | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"FLAGPORT_TOKEN": server.admin_token} if server else {}
    url = ["--url", server.url] if server else ["--url", "http://127.0.0.1:9"]
    return subprocess.run(
        [flags_executable(), *url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize(
    ("since", "text"),
    [
        ("soon", "--since must be a duration such as 1h, 24h or 7d, or an ISO-8601 date-time"),
        ("2999-01-01", "is in the future"),
        ("30d", "more than 7 days back"),
    ],
)
def test_cli_since_checked_before_any_request(since: str, text: str) -> None:
    result = _flags(None, "stats", KEY, "--since", since)
    assert result.returncode == 2, result.stderr
    assert text in result.stderr


def test_cli_stats_and_stale(server: RunningServer) -> None:
    with server.client() as client:
        for unit in range(5):
            client.post(
                f"/ofrep/v1/evaluate/flags/{KEY}", json={"context": {"targetingKey": str(unit)}}
            )
        exposure = {"key": KEY, "variant": "off", "count": 3}
        assert client.post("/v1/exposures", json={"exposures": [exposure]}).status_code == 200
    assert wait_until(lambda: _stats(server)["total_evaluations"] >= 8, 10.0, 0.2)
    result = _flags(server, "stats", KEY)
    assert result.returncode == 0, result.stderr
    assert f"{KEY}: off (kill switch) at" in result.stdout
    assert "5 counted by the server, 3 reported by in-process clients" in result.stdout
    assert re.search(r"VARIANT +EVALUATIONS +REPORTED +UNIQUE UNITS", result.stdout)
    assert re.search(r"off +8 +3 +5", result.stdout), result.stdout
    as_json = _flags(server, "stats", KEY, "--json", "--since", "2h")
    assert as_json.returncode == 0
    body = json.loads(as_json.stdout)
    assert {"key", "percentage", "enabled", "adoption", "evaluations", "unique_units"} <= set(body)
    missing = _flags(server, "stats", "no-such-flag")
    assert missing.returncode == 1
    assert "'no-such-flag'" in missing.stderr
    stale = _flags(server, "stale", "--days", "1", "--json")
    assert stale.returncode == 0, stale.stderr
    report = json.loads(stale.stdout)
    assert report["days"] == 1
    assert report["not_evaluated"] == []
    assert report["static"] == []
    assert _flags(server, "stale").returncode == 0


REPORTED_FLAG = "auth-improvements"  # evaluated by no other test of this module's server


def test_a_local_client_report_beyond_one_item_is_counted_whole(server: RunningServer) -> None:
    """More evaluations than one exposure item may carry (1,000,000) are split into items
    the server accepts, and kept apart from what the server counted itself."""
    client = LocalClient(server.url, report_interval=60.0)
    try:
        assert client.wait_ready(5.0)
        context = {"targetingKey": "local-1"}
        for _ in range(1_000_001):
            client.is_enabled(REPORTED_FLAG, context)
    finally:
        client.close()  # reports them
    with server.client(timeout=10.0) as http:
        answer = http.post(
            f"/ofrep/v1/evaluate/flags/{REPORTED_FLAG}", json={"context": {"targetingKey": "a"}}
        )
        assert answer.status_code == 200, answer.text

    def counted() -> bool:
        return _stats(server, REPORTED_FLAG)["total_evaluations"] >= 1_000_002

    assert wait_until(counted, 10.0, 0.2)
    body = _stats(server, REPORTED_FLAG)
    assert body["total_evaluations"] == 1_000_002
    assert body["total_reported_evaluations"] == 1_000_001
    assert body["units_seen"] == 2


def test_metrics_have_bounded_labels(server: RunningServer) -> None:
    with server.client() as client:
        client.post("/ofrep/v1/evaluate/flags/whatever-1", json={"context": {"targetingKey": "1"}})
        text = client.get("/metrics").text
    assert 'flag="(unknown)"' in text
    assert "whatever-1" not in text


WIDE_UNITS_FLAG = "performance-monitoring.enhanced-logging"  # evaluated by no other test here


def test_a_report_of_wide_units_is_split_by_bytes_and_counted(server: RunningServer) -> None:
    """1,000 distinct units of 256 control characters (6 bytes each in JSON) encode to about
    1.5 MB, more than the server reads of one exposure batch (1 MiB). The client splits its
    report by encoded bytes, so it is counted now instead of refused (413) at every report."""
    units = [f"{index:04d}" + "\x01" * 252 for index in range(1000)]
    client = LocalClient(server.url, report_interval=60.0)
    try:
        assert client.wait_ready(5.0)
        for unit in units:
            client.is_enabled(WIDE_UNITS_FLAG, {"targetingKey": unit})
        assert client.report_exposures() == 1000
    finally:
        client.close()

    def counted() -> bool:
        return _stats(server, WIDE_UNITS_FLAG)["total_reported_evaluations"] >= 1000

    assert wait_until(counted, 10.0, 0.2)
    body = _stats(server, WIDE_UNITS_FLAG)
    assert body["total_reported_evaluations"] == 1000
    assert abs(body["units_seen"] - 1000) <= 30  # a HyperLogLog estimate (about 0.8 % error)
