"""A guarded plan and the outcomes that breach it, for the UI tests (HTTP and browser)."""

from __future__ import annotations

import time
from typing import Any

from tests.support.server import RunningServer

#: The guard every UI test plan has: 25 failures in 50 treatment requests breach it.
GUARD = "error_rate > 5% over 1m"


def start_guarded_plan(server: RunningServer, key: str) -> None:
    """Create flag ``key`` and start a plan on it (10 % then 100 %, a long hold, :data:`GUARD`,
    20 requests per cohort enough to judge)."""
    with server.admin() as admin:
        created = admin.post("/admin/v1/flags", json={"key": key})
        assert created.status_code == 201, created.text
        started = admin.post(
            "/admin/v1/rollouts",
            json={"key": key, "steps": "10,100", "hold": "1h", "guards": [GUARD], "min_sample": 20},
        )
        assert started.status_code == 201, started.text


def send_breach(server: RunningServer, key: str) -> None:
    """Report 50 requests per cohort over the last second: half the treatment's failed."""
    now = time.time()
    items: list[dict[str, Any]] = [
        {
            "key": key,
            "variant": variant,
            "cohort": cohort,
            "requests": 50,
            "failures": failures,
            "latency_ms_sum": 2000.0,
            "latency_buckets": [0, 0, 0, 50] + [0] * 9,
        }
        for variant, cohort, failures in (("on", "treatment", 25), ("off", "control", 0))
    ]
    with server.client() as client:
        answer = client.post(
            "/v1/outcomes", json={"period": [now - 1, now], "items": items, "events": []}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["counted"] == 2, answer.text
