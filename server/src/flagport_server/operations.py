"""What the operations routes report: liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

import math
import time
from typing import Any

from flagport_server.driver import NO_DRIVER_AFTER, Driver
from flagport_server.metrics import Metrics
from flagport_server.runtime import Runtime
from flagport_server.stats import StatsPump

__all__ = ["Operations"]


class Operations:
    """One per app."""

    def __init__(
        self, runtime: Runtime, metrics: Metrics, pump: StatsPump, driver: Driver | None = None
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.pump = pump
        self.driver = driver

    def driver_missing(self) -> float | None:
        """Seconds a running plan has had no driver, once that is at least
        :data:`~flagport_server.driver.NO_DRIVER_AFTER` (None: fine)."""
        if self.driver is None:
            return None
        missing = self.driver.missing_for(time.time())
        return missing if missing is not None and missing >= NO_DRIVER_AFTER else None

    def readiness(self) -> tuple[dict[str, Any], int]:
        """``/readyz``'s body and status: 200 while a snapshot is served, 503 before."""
        runtime = self.runtime
        served = runtime.served
        if served is None:
            return {
                "status": "not_ready",
                "store": {"ok": False, "problem": runtime.store_problem},
            }, 503
        warnings = list(served.warnings)
        if runtime.store_problem:
            warnings.insert(0, runtime.store_problem)
        warnings += runtime.settings.exposure_warnings
        missing = self.driver_missing()
        if missing is not None:
            running = sorted(k for k, p in served.plans.items() if p.status == "running")
            since = "ever" if math.isinf(missing) else f"for {missing:.0f} s"
            warnings.append(
                f"rollout plan(s) {', '.join(running)} running with no driver {since}: "
                "start a server with --driver on this store"
            )
        degraded = bool(runtime.store_problem)
        body = {
            "status": "degraded" if degraded else "ok",
            "store": {
                "kind": runtime.store.kind,
                "ok": runtime.store_ok,
                "problem": runtime.store_problem,
                "regressed": runtime.regression is not None,
            },
            "snapshot": {
                "version": served.version,
                "age_s": round(runtime.snapshot_age, 3),
                "flags": len(served.snapshot),
                "store_id": served.store_id,
            },
            "instance": runtime.settings.instance_id,
            "worker": runtime.pid,
            "warnings": warnings,
            "unreadable": {
                "flags": sorted(served.unreadable_flags),
                "segments": sorted(served.unreadable_segments),
            },
        }
        return body, 200

    def metrics_exposition(self) -> bytes:
        """The Prometheus exposition, with every evaluation counted until now."""
        runtime = self.runtime
        self.pump.drain()
        self.metrics.observe_worker(
            runtime.version, runtime.snapshot_age, runtime.store_ok, runtime.regression is not None
        )
        served = runtime.served
        driver = self.driver
        self.metrics.observe_rollouts(
            served.plans if served is not None else {},
            driver.guard_values() if driver is not None else {},
            driver.breaches if driver is not None else {},
            self.driver_missing() is not None,
        )
        return self.metrics.render()
