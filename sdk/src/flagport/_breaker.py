"""The circuit breaker and the rate-limited error log shared by the clients.

After ``threshold`` consecutive failures the circuit opens: calls skip the network and return
at once (the last known value or the caller's default) for ``cooldown`` seconds. Then one call
probes the server (half-open): success closes the circuit, failure opens it for another
cool-down. Errors are logged once per cool-down, never once per call.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("flagport")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2


class CircuitBreaker:
    """Thread-safe; the closed-circuit check is one attribute read (no lock)."""

    __slots__ = ("_lock", "cooldown", "failures", "last_error", "opened_at", "state", "threshold")

    def __init__(self, threshold: int = 2, cooldown: float = 5.0) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self.last_error = ""
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May this call go to the server? (The first call after a cool-down is the probe.)"""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and time.monotonic() - self.opened_at >= self.cooldown:
                self.state = HALF_OPEN
                return True
            return False

    @property
    def is_open(self) -> bool:
        return self.state != CLOSED

    def success(self) -> None:
        if self.state == CLOSED and not self.failures:
            return
        with self._lock:
            if self.state != CLOSED:
                logger.warning("flagport: server reachable again; circuit closed")
            self.state = CLOSED
            self.failures = 0

    def failure(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = error
            if self.state == HALF_OPEN or self.failures >= self.threshold:
                # Logged once per opening, i.e. at most once per cool-down.
                logger.warning(
                    "flagport: %s; serving last known values or defaults for %.1f s",
                    error,
                    self.cooldown,
                )
                self.state = OPEN
                self.opened_at = time.monotonic()
