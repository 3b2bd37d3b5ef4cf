"""The PHP bridge's outcome signals (issue 17; docs/spec.md section 13) against a real server
and Debian's php8.2-fpm running a Laravel app with ``Flagport\\Laravel\\ReportOutcomes``:

- the bridge's bounds and latency buckets are Python's (``flagport.rollout.limits``);
- a Blade page that reads only ``ui-improvements.dropdown-fixes`` under a plan on
  ``ui-improvements``: the server's outcome totals for the plan's cohorts are exactly what
  the pool served (requests, failures by status, events), through two FPM workers sharing
  one APCu aggregate;
- the portal's case (issue item 5): the new UI starts failing (500) for the treatment, the
  plan rolls back by itself (the audit entry's evidence), the page renders the old UI for
  everyone.

The PHPUnit side (aggregate, batches, two workers, no APCu) runs in tests/php/test_php_bridge.py's
unit suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flagport.rollout import limits
from flagport.rollout.outcomes import Cohort, bucket_of, series_key
from flagport_server.plans import DRIVER_ACTOR
from tests.php.conftest import BRIDGE
from tests.php.fcgi import FastCGIClient
from tests.php.fpm import FpmPool, fpm_pool
from tests.support.outcomes import stored_outcomes
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until
from tests.support.tools import require_path, require_tool

PLAN = "ui-improvements"
CHILD = "ui-improvements.dropdown-fixes"
APP = str(BRIDGE / "tests" / "fpm" / "laravel.php")


@dataclass
class Portal:
    server: RunningServer
    pool: FpmPool
    app_dir: Path

    def get(
        self,
        client: FastCGIClient,
        user: int | None,
        query: dict[str, str] | None = None,
        *,
        broken: bool = False,
    ) -> tuple[int, str]:
        """The portal page for ``user`` (None: a guest); its status and body."""
        params = {
            "FLAGPORT_URL": self.server.url,
            "FLAGPORT_APP_DIR": str(self.app_dir),
            "FLAGPORT_OUTCOMES": "1",
            "PORTAL_NEW_UI_BROKEN": "1" if broken else "",
        }
        query = dict(query or {})
        if user is not None:
            query["user"] = str(user)
        response = client.request("GET", APP, query, params=params, uri="/portal")
        return response.status, response.text()


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    require_tool("php-fpm8.2")
    require_path(Path("/usr/share/php/Illuminate/autoload.php"), "php-laravel-framework")
    work = Path(tempfile.mkdtemp(prefix="fp-oc-", dir="/tmp"))
    try:
        # TCP: the server drives plans (`--uds` sidecars do not by default).
        with (
            running_server(tmp_path_factory.mktemp("outcomes"), seed=PORTAL_FLAGS) as server,
            fpm_pool(work / "fpm", children=2) as pool,
        ):
            portal = Portal(server, pool, work / "app")
            yield portal
            assert_only_the_intended_fatals(portal)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def assert_only_the_intended_fatals(portal: Portal) -> None:
    errors = portal.pool.php_errors()
    fatal = [line for line in errors.splitlines() if "Fatal" in line]
    assert all("Allowed memory size" in line for line in fatal), errors[-3000:]
    assert "Warning" not in errors, errors[-3000:]


# -- one home for the numbers ---------------------------------------------------------------


def test_the_bridge_bounds_and_buckets_are_pythons() -> None:
    php = require_tool("php")
    micros = [0, 1, 999, 1000, 4999, 5000, 5001, 10_001, 99_999, 100_000, 100_001, 2_500_000,
              9_999_999, 10_000_000, 10_000_001, 86_400_000_000]  # fmt: skip
    script = (
        f"require '{BRIDGE}/autoload.php';"
        "$c = (new ReflectionClass(Flagport\\Outcomes\\Limits::class))->getConstants();"
        "$c['LATENCY_BOUNDS_MS'] = array_map("
        "    fn ($b) => is_infinite($b) ? 'inf' : $b, $c['LATENCY_BOUNDS_MS']);"
        f"$c['buckets'] = array_map([Flagport\\Outcomes\\Limits::class, 'bucketOf'], {micros});"
        "echo json_encode($c);"
    )
    done = subprocess.run(
        [php, "-r", script], capture_output=True, text=True, timeout=60, check=True
    )
    php_side = json.loads(done.stdout)
    bounds = [float(b) if b != "inf" else float("inf") for b in php_side["LATENCY_BOUNDS_MS"]]
    assert bounds == list(limits.LATENCY_BOUNDS_MS)
    for name in (
        "MAX_OUTCOME_ITEMS",
        "MAX_OUTCOME_EVENTS",
        "MAX_OUTCOME_BODY",
        "MAX_REQUESTS",
        "MAX_EVENT_COUNT",
        "MAX_PERIOD_SECONDS",
        "MAX_PERIOD_AGE_SECONDS",
        "MAX_VARIANT_LENGTH",
        "MAX_EVENT_NAME_LENGTH",
        "MAX_LABELS",
        "MAX_LABEL_NAME_LENGTH",
        "MAX_LABEL_VALUE_LENGTH",
    ):
        assert php_side[name] == getattr(limits, name), name
    from flagport import reporting
    from flagport.engine.models import MAX_KEY_LENGTH
    from flagport.rollout.outcomes import MAX_EVENT_SERIES

    assert php_side["MAX_KEY_LENGTH"] == MAX_KEY_LENGTH
    assert php_side["MAX_EVENT_SERIES"] == MAX_EVENT_SERIES
    assert php_side["MAX_READS_PER_REQUEST"] == reporting._MAX_READS_PER_REQUEST
    assert php_side["MAX_HELD_ITEMS"] == reporting._HELD_ITEMS_LIMIT
    assert php_side["MAX_REQUEST_US"] == reporting._MAX_REQUEST_US
    assert php_side["FRESH_SECONDS"] == reporting._FRESH_SECONDS
    assert php_side["REPORT_INTERVAL"] == reporting.REPORT_INTERVAL
    assert php_side["BUCKETS"] == len(limits.LATENCY_BOUNDS_MS)
    # Python buckets the duration rounded up to whole ms (flagport.reporting), as PHP does.
    assert php_side["buckets"] == [bucket_of(-(-m // 1000)) for m in micros]


# -- the live cases --------------------------------------------------------------------------


def start_plan(admin: httpx.Client, **spec: Any) -> None:
    """A new plan on PLAN: any earlier one aborted first (the tests run in any order)."""
    admin.post(f"/admin/v1/rollouts/{PLAN}/abort", json={"reason": "next test"})
    started = admin.post("/admin/v1/rollouts/", json={"key": PLAN, **spec})
    assert started.status_code == 201, started.text
    assert wait_until(lambda: plan(admin)["status"] == "running", timeout=10.0), plan(admin)


def plan(admin: httpx.Client) -> dict[str, Any]:
    answer = admin.get(f"/admin/v1/rollouts/{PLAN}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def cohorts(server: RunningServer, users: range) -> dict[int, str | None]:
    """Each user's plan cohort for CHILD, as the server's OFREP answers name it."""
    found: dict[int, str | None] = {}
    with server.client(timeout=10.0) as client:
        for user in users:
            answer = client.post(
                f"/ofrep/v1/evaluate/flags/{CHILD}", json={"context": {"targetingKey": str(user)}}
            )
            assert answer.status_code == 200, answer.text
            metadata = answer.json().get("metadata", {})
            if metadata.get("rolloutFlag") == PLAN:
                found[user] = metadata["rolloutCohort"]
            else:
                found[user] = None
    return found


def post_the_pools_batch(portal: Portal) -> None:
    """A request 1 s after the pool's last post takes and posts what is left (it reads no
    plan flag itself: a guest has no unit, so no cohort)."""
    time.sleep(1.1)
    with portal.pool.client() as client:
        status, _ = portal.get(client, None)
        assert status == 200


def test_the_servers_totals_are_what_the_fpm_pool_served(portal: Portal) -> None:
    """Two FPM workers, four concurrent connections: every request counted once, in its
    cohort, with its status (500s and 503s failures, 404s not) and its events."""
    server = portal.server
    with server.admin(timeout=10.0) as admin:
        start_plan(admin, steps="50,100", hold="1h", guards=["error_rate > 99% over 1m"])
    users = range(1000, 1160)
    cohort_of = cohorts(server, users)
    assert set(cohort_of.values()) == {"treatment", "control"}, cohort_of
    before = stored_outcomes(server, PLAN)

    def status_for(user: int) -> int:
        # Failures for the control only: the treatment's error rate stays 0, so the portal
        # test's guard (whichever runs first) judges only its own failures.
        if cohort_of[user] == "treatment":
            return (200, 404)[user % 2]
        return (200, 404, 500, 503)[user % 4]

    def fatal(user: int) -> bool:
        # A PHP fatal error after the page read the flag: the middleware's terminate never
        # runs; the reporter's shutdown function counts it, as a failure.
        return cohort_of[user] == "control" and user % 8 == 0

    def run(part: int) -> list[tuple[int, int, str]]:
        with portal.pool.client() as client:
            out = []
            for user in users[part::4]:
                query = {"status": str(status_for(user))}
                if user % 5 == 0:
                    query["report"] = "critical"
                if fatal(user):
                    query["fatal"] = "1"
                status, body = portal.get(client, user, query)
                out.append((user, status, body))
            return out

    with ThreadPoolExecutor(4) as executor:
        served = [row for part in executor.map(run, range(4)) for row in part]
    expected: dict[str, Counter[str]] = {"treatment": Counter(), "control": Counter()}
    fatals = 0
    for user, status, body in served:
        assert status == (500 if fatal(user) else status_for(user)), (user, status, body[:300])
        cohort = cohort_of[user]
        assert cohort is not None
        new_ui = "new-dropdown" in body
        assert new_ui is (cohort == "treatment"), (user, cohort, body[:300])
        expected[cohort]["requests"] += 1
        expected[cohort]["failures"] += status >= 500
        fatals += fatal(user)
        expected[cohort]["events"] += user % 5 == 0
    post_the_pools_batch(portal)

    def counted() -> dict[str, tuple[int, int, int]]:
        now = stored_outcomes(server, PLAN)
        out = {}
        for cohort in (Cohort.TREATMENT, Cohort.CONTROL):
            totals, earlier = now[cohort], before[cohort]
            events = totals.events.get(series_key("user_report", {"severity": "critical"}), 0)
            events -= earlier.events.get(series_key("user_report", {"severity": "critical"}), 0)
            out[cohort.value] = (
                totals.requests - earlier.requests,
                totals.failures - earlier.failures,
                events,
            )
        return out

    want = {c: (e["requests"], e["failures"], e["events"]) for c, e in expected.items()}

    def all_counted() -> bool:
        if counted() == want:
            return True
        # A writer the last take did not wait for (over 50 ms midway, on a loaded machine)
        # left its count for the next take: a later request posts it.
        post_the_pools_batch(portal)
        return counted() == want

    if not wait_until(all_counted, timeout=15.0):
        # As text, in full: a tuple in the assertion is cut to a line, and the logs are
        # what tells a lost batch (the reporter's "dropped" or "refused part") from a late one.
        pytest.fail(
            f"counted {counted()}, served {want}\n"
            f"PHP log:\n{portal.pool.php_errors()[-4000:]}\nserver log:\n{server.log()[-4000:]}"
        )
    # Nothing more arrives later (no count sent twice).
    post_the_pools_batch(portal)
    time.sleep(1.0)
    assert counted() == want
    after = stored_outcomes(server, PLAN)[Cohort.TREATMENT]
    assert sum(after.latency_buckets) == after.requests
    assert after.latency_us_sum > 0
    assert fatals > 0
    assert_only_the_intended_fatals(portal)


def test_the_portals_new_ui_fails_and_the_plan_rolls_back_by_itself(portal: Portal) -> None:
    """issue 17 item 5: the plan on ui-improvements (hold 3s, `error_rate > 5% over 1m`), a
    Blade page reading only a child; its new UI starts failing for the treatment; the driver
    rolls the plan back with the evidence; the page renders the old UI for everyone."""
    server = portal.server
    with server.admin(timeout=10.0) as admin:
        start_plan(
            admin,
            steps="50,100",
            hold="3s",
            guards=["error_rate > 5% over 1m"],
            min_sample=20,
            reason="release 2026-12",
        )
        users = range(2000, 2080)
        cohort_of = cohorts(server, users)
        treated = [u for u in users if cohort_of[u] == "treatment"]
        assert len(treated) >= 25, cohort_of
        with portal.pool.client() as client:
            # Healthy first: the new dropdown renders for the treatment.
            for user in users[:20]:
                status, body = portal.get(client, user)
                assert status == 200, body[:300]
                assert ("new-dropdown" in body) is (cohort_of[user] == "treatment")
            # The release goes bad: the new dropdown throws, the treatment gets 500s, until
            # the driver rolls back (the pool posts every second: possibly within this loop).
            failed = 0
            rolled_back = False
            for user in users[20:]:
                status, body = portal.get(client, user, broken=True)
                treatment = cohort_of[user] == "treatment"
                if treatment and status == 200 and "old-dropdown" in body:
                    rolled_back = True
                assert status == (500 if treatment and not rolled_back else 200), (user, body[:300])
                failed += status == 500
            assert failed >= 5, failed
            post_the_pools_batch(portal)
            assert wait_until(lambda: plan(admin)["status"] == "paused", timeout=15.0), plan(admin)
            flag = admin.get(f"/admin/v1/flags/{PLAN}").json()
            assert flag["enabled"] is False, flag
            entries = admin.get("/admin/v1/audit", params={"key": PLAN}).json()["entries"]
            rollback = next(e for e in entries if e["action"] == "plan-rollback")
            assert rollback["actor"] == DRIVER_ACTOR.name, rollback
            evidence = json.dumps(rollback.get("evidence"))
            assert "error_rate > 5% over 1m" in evidence, rollback
            assert rollback["evidence"]["treatment"]["requests"] >= failed, rollback
            # Everyone gets the old UI now, whatever their cohort was; the page works again.
            for user in users:
                status, body = portal.get(client, user, broken=True)
                assert status == 200, body[:300]
                assert "old-dropdown" in body, body[:300]
                assert "new-dropdown" not in body, body[:300]
