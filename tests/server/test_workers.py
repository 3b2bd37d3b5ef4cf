"""``flags serve --workers 2``: every worker serves a change within 100 ms (observed through
the ``X-Flagport-Worker`` / ``X-Flagport-Snapshot`` headers on fresh connections), the
propagation registry agrees, and ``/metrics`` adds up the workers' counters."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter

import httpx
import pytest

from tests.server._fixtures import fresh_request, live_server
from tests.support.server import RunningServer, wait_until

server = live_server(
    workers=2,
    flags={
        "rollout": {"enabled": True, "percentage": 0},
        "counted": {"enabled": True, "variants": {"on": "yes", "off": "no"}},
    },
)

BODY = {"context": {"targetingKey": "user-1"}}
SINGLE = "/ofrep/v1/evaluate/flags/"
_JSON = {"Content-Type": "application/json"}


def _worker_pids(server: RunningServer) -> set[str]:
    with server.admin(timeout=10.0) as admin:
        workers = admin.get("/admin/v1/propagation", params={"version": 0}).json()["workers"]
    return {str(w["pid"]) for w in workers}


@pytest.fixture(scope="module")
def pids(server: RunningServer) -> set[str]:
    # Both workers beat within a heartbeat interval of starting.
    deadline = time.monotonic() + 5
    found = _worker_pids(server)
    while len(found) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        found = _worker_pids(server)
    assert len(found) == 2, found
    return found


def _observe(server: RunningServer, pids: set[str], version: int, started: float) -> float:
    """Seconds from ``started`` until every worker has answered with ``version`` or later."""
    first_seen: dict[str, float] = {}
    while len(first_seen) < len(pids) and time.perf_counter() - started < 5:
        status, headers, _ = fresh_request(server, "POST", SINGLE + "rollout", BODY)
        pid = headers["x-flagport-worker"]
        assert pid in pids, (pid, pids)
        # A worker still on an older snapshot may not know the flag yet (404 before the
        # fixture's creation reached it, on a loaded machine): only the new one is checked.
        if int(headers["x-flagport-snapshot"]) >= version:
            assert status == 200
            first_seen.setdefault(pid, time.perf_counter() - started)
    assert set(first_seen) == pids, f"not every worker seen on version {version}: {first_seen}"
    return max(first_seen.values())


def test_every_worker_serves_a_change_quickly(
    server: RunningServer, pids: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    lags: list[float] = []
    registry_lags: list[float] = []
    with server.admin(timeout=10.0) as admin:
        for round_ in range(8):
            percentage = 100 if round_ % 2 == 0 else 0
            answer = admin.post("/admin/v1/flags/rollout/enable", json={"percentage": percentage})
            assert answer.status_code == 200, answer.text
            version = answer.json()["snapshot_version"]
            acknowledged = time.perf_counter()
            lags.append(_observe(server, pids, version, acknowledged))
            # The served value is the new one on every worker.
            for _ in range(10):
                status, _, raw = fresh_request(server, "POST", SINGLE + "rollout", BODY)
                assert status == 200
                assert (b'"value":true' in raw) is (percentage == 100), raw
            # The registry (what `flags enable` waits on) says so too.
            while True:
                body = admin.get("/admin/v1/propagation", params={"version": version}).json()
                if body["complete"] or time.perf_counter() - acknowledged > 5:
                    break
                time.sleep(0.002)
            assert body["complete"], body
            assert {str(w["pid"]) for w in body["workers"]} == pids
            registry_lags.append(time.perf_counter() - acknowledged)
    with capsys.disabled():
        print(
            f"\n[propagation] every worker serving the new version: median "
            f"{statistics.median(lags) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms; "
            f"registry complete: median {statistics.median(registry_lags) * 1000:.1f} ms, "
            f"max {max(registry_lags) * 1000:.1f} ms"
        )
    # docs/spec.md section 6: within 100 ms. The machine is shared and noisy, so assert the
    # median on the budget and every round generously.
    assert statistics.median(lags) < 0.1, lags
    assert max(lags) < 1.0, lags


_SAMPLE = re.compile(r"^flagport_evaluations_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def _counted(text: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for match in _SAMPLE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        if labels.get("flag") == "counted":
            key = (labels["variant"], labels["reason"])
            totals[key] = totals.get(key, 0.0) + float(match.group("value"))
    return totals


def test_metrics_add_up_across_workers(server: RunningServer, pids: set[str]) -> None:
    served: Counter[str] = Counter()
    for _ in range(150):
        status, headers, _ = fresh_request(server, "POST", SINGLE + "counted", BODY)
        assert status == 200
        served[headers["x-flagport-worker"]] += 1
    with server.client(timeout=10.0) as client:
        for _ in range(10):  # bulk items count too: one per flag
            assert client.post("/ofrep/v1/evaluate/flags", json=BODY).status_code == 200
    assert set(served) == pids, served  # both workers took part

    deadline = time.monotonic() + 5
    totals: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        with server.client(timeout=10.0) as client:
            metrics = client.get("/metrics")
        assert metrics.status_code == 200
        totals = _counted(metrics.text)
        if totals.get(("on", "STATIC")) == 160:
            break
        time.sleep(0.2)
    assert totals == {("on", "STATIC"): 160.0}, totals
    text = metrics.text
    for pid in pids:
        assert re.search(rf'flagport_snapshot_version\{{[^}}]*pid="{pid}"', text), pid


def test_readyz_and_healthz(server: RunningServer) -> None:
    with server.client(timeout=10.0) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ok"
        assert body["snapshot"]["version"] >= 1
        assert body["snapshot"]["age_s"] >= 0
        assert "admin" not in ready.text.lower() or "token" not in ready.text.lower()


def test_unknown_keys_share_one_metric_label(server: RunningServer) -> None:
    """Callers choose the keys they ask for; the metric's labels must stay bounded."""
    with server.client(timeout=10.0) as client:
        for i in range(20):
            answer = client.post(f"{SINGLE}no-such-flag-{i}", json=BODY)
            assert answer.status_code == 404
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if 'flag="(unknown)"' in text:
                break
            time.sleep(0.2)
    assert 'flag="(unknown)"' in text
    assert "no-such-flag" not in text


def _count_of(text: str, route: str, status: str) -> float:
    """The request latency histogram's count for ``route`` and ``status`` (0: none yet)."""
    line = f'flagport_request_duration_seconds_count{{route="{route}",status="{status}"}}'
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_request_latency_histogram(server: RunningServer) -> None:
    """Every request is timed: those the evaluation dispatch serves (which times its own)
    under their route and status class, as those of the framework."""
    shapes = (
        ("ofrep_single", "2xx", lambda c: c.post(SINGLE + "counted", json=BODY)),
        ("ofrep_single", "4xx", lambda c: c.post(SINGLE + "no-such-flag", json=BODY)),
        ("ofrep_bulk", "2xx", lambda c: c.post("/ofrep/v1/evaluate/flags", json=BODY)),
        ("evaluate_get", "2xx", lambda c: c.get("/v1/evaluate/counted?targetingKey=u")),
        # A body the dispatch hands to the framework: still timed once.
        ("ofrep_single", "4xx", lambda c: c.post(SINGLE + "x", content=b"[", headers=_JSON)),
        ("operations", "2xx", lambda c: c.get("/healthz")),
    )
    with server.client(timeout=10.0) as client:
        before = client.get("/metrics").text
        sent: dict[tuple[str, str], int] = {}
        for route, status, request in shapes:
            for _ in range(10):  # on each of the two workers, whichever takes it
                assert request(client).status_code < 500
            sent[route, status] = sent.get((route, status), 0) + 10

        def counted() -> bool:
            text = client.get("/metrics").text
            return all(
                _count_of(text, route, status) - _count_of(before, route, status) >= n
                for (route, status), n in sent.items()
            )

        assert wait_until(counted, 10.0), client.get("/metrics").text[-3000:]


def test_fresh_connections_reach_both_workers(server: RunningServer, pids: set[str]) -> None:
    workers = set()
    for _ in range(60):
        status, _, raw = fresh_request(server, "GET", "/readyz")
        assert status == 200
        workers.add(str(httpx.Response(200, content=raw).json()["worker"]))
    assert workers == pids
