"""The stats pump drains the evaluation counter every half second and hands what it drained
to every registered sink, with stats kept or not (``--no-stats``): the outcome signals of a
rollout flow through it (docs/adr/0018-served-snapshot-and-stats-pump.md)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from pathlib import Path

from litestar.testing import TestClient

from flagport_server.app import create_app, stats_pump
from flagport_server.settings import Settings
from flagport_server.stats import DRAIN_INTERVAL, Drained

ADMIN = {"Authorization": "Bearer admin-token-for-the-stats-pump-test"}
FLAG = {
    "key": "checkout",
    "variants": {"on": True, "off": False},
    "on_variant": "on",
    "off_variant": "off",
    "enabled": True,
}
EVALUATIONS = 12


class OutcomeSink:
    """What a rollout's outcome pump would register: it notes when it was called and what
    it was handed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[float] = []
        self.evaluations = 0

    def __call__(self, drained: Drained, now: float) -> None:
        with self.lock:
            self.calls.append(time.monotonic())
            self.evaluations += sum(
                c.evaluations for c in drained.counted if c.result.key == "checkout"
            )


def test_a_registered_sink_is_called_every_half_second_with_stats_off(tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
        stats=False,
    )
    app = create_app(settings)
    sink = OutcomeSink()
    stats_pump(app).add_drained_sink("outcomes", sink)
    with TestClient(app) as client:
        created = client.post("/admin/v1/flags", headers=ADMIN, json=FLAG)
        assert created.status_code == 201, created.text
        for index in range(EVALUATIONS):
            answer = client.post(
                "/ofrep/v1/evaluate/flags/checkout", json={"context": {"targetingKey": f"u{index}"}}
            )
            assert answer.status_code == 200, answer.text
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            time.sleep(0.1)
    calls = sink.calls
    within = [at for at in calls if at >= started]
    # 3 s at one drain per 0.5 s: 6 calls (one fewer if a tick straddles the window's ends,
    # more when a minute boundary adds one).
    assert len(within) >= 5, calls
    intervals = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert DRAIN_INTERVAL * 0.7 <= statistics.median(intervals) <= DRAIN_INTERVAL * 1.6, intervals
    # Every evaluation reached the sink, once (the last drain runs at shutdown).
    assert sink.evaluations == EVALUATIONS
