"""``--vs-control`` error rates through the driver's own decision function (issue 17,
docs/adr/0017-guarded-rollout-decisions.md), 1,000 runs each, fixed seeds:

- A/A: both cohorts at 8 % errors (a site-wide incident), the plan at a 10 % step
  (2 treatment and 18 control requests a second), the guard ``error_rate > 5% over 5m``,
  judged every second for an hour: false rollbacks <= 5 % of runs;
- 2 % (control) vs 6 % (treatment): caught within 2,000 treatment requests in >= 95 %.

``make test`` (``--benchmark-disable``) runs 20 runs of each for correctness only (the 200
runs of ``tests/sdk/rollout/test_decision.py`` check the budgets in ``make test``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from tests.sdk.rollout.simulation import simulate


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> int:
    return 20 if request.config.getoption("benchmark_disable") else 1000


def test_vs_control_false_rollbacks_and_power(runs: int, benchmark: Any) -> None:
    timings: dict[str, float] = {}
    outcomes: dict[str, Any] = {}

    def run() -> None:
        began = time.perf_counter()
        outcomes["null"] = simulate(runs, 3600, 0.08, 0.08, seed=1017)
        timings["null"] = time.perf_counter() - began
        began = time.perf_counter()
        outcomes["power"] = simulate(
            runs, 1000, 0.06, 0.02, seed=1018, stop_after_treatment_requests=2000
        )
        timings["power"] = time.perf_counter() - began

    # Through the benchmark fixture, so that ``make bench`` (--benchmark-only) runs it.
    benchmark.pedantic(run, rounds=1, iterations=1)
    null, power = outcomes["null"], outcomes["power"]
    null_seconds, power_seconds = timings["null"], timings["power"]
    caught = sorted(power.treatment_requests_at_breach)
    print(
        f"\nA/A (8 % vs 8 %, 3,600 looks): {null.breached}/{null.runs} false rollbacks "
        f"({null.breached / null.runs:.1%}), {null.decisions:,} decisions in "
        f"{null_seconds:.1f} s ({null_seconds / null.decisions * 1e6:.1f} us each)"
        f"\n2 % vs 6 %: {power.breached}/{power.runs} caught within 2,000 treatment requests "
        f"({power.breached / power.runs:.1%}); treatment requests at the breach: median "
        f"{statistics.median(caught) if caught else 'n/a'}, p95 "
        f"{caught[int(0.95 * (len(caught) - 1))] if caught else 'n/a'}, max "
        f"{caught[-1] if caught else 'n/a'} ({power_seconds:.1f} s)"
    )
    assert null.decisions >= runs * 3600 * 0.9
    if runs >= 1000:
        assert null.breached / null.runs <= 0.05
        assert power.breached / power.runs >= 0.95
    else:  # a smoke run: the error rates are far from the budgets even with few runs
        assert null.breached <= runs // 4
        assert power.breached >= runs * 3 // 4
