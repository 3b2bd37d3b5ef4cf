"""What the operations routes report: liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from flagport_server.metrics import Metrics
from flagport_server.runtime import Runtime
from flagport_server.stats import StatsPump

__all__ = ["Operations"]


class Operations:
    """One per app."""

    def __init__(self, runtime: Runtime, metrics: Metrics, pump: StatsPump) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.pump = pump

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
        return self.metrics.render()
