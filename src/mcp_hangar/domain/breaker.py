"""A circuit breaker: stop sending calls to a provider that keeps failing, probe, then recover.

closed --(failure_threshold failures within window_s)--> open
open --(reset_timeout_s passed)--> half_open: up to half_open_max_calls probes go through
half_open --(a probe succeeds)--> closed;  --(a probe fails)--> open again

Only failures of the transport count (the provider died, did not answer); a tool's own error
result is an answer. Time is passed in, so the rules test without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = 5
    window_s: float = 60.0
    reset_timeout_s: float = 30.0
    half_open_max_calls: int = 1
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    probes: int = 0
    probe_at: float = 0.0
    failures: list[float] = field(default_factory=list)

    def allow(self, now: float) -> float:
        """0 if a call may go ahead now (counting it as a probe when half open), else the seconds
        until the breaker will let one through."""
        if self.state == BreakerState.OPEN:
            wait = self.opened_at + self.reset_timeout_s - now
            if wait > 0:
                return wait
            self.state, self.probes = BreakerState.HALF_OPEN, 0
        if self.state == BreakerState.HALF_OPEN:
            if self.probes >= self.half_open_max_calls and now - self.probe_at < self.reset_timeout_s:
                return max(0.001, self.reset_timeout_s / 10)  # a probe is out; ask again shortly
            if self.probes >= self.half_open_max_calls:
                self.probes = 0  # the probes never reported back (cancelled): try afresh
            self.probes += 1
            self.probe_at = now
        return 0.0

    def record_success(self) -> BreakerState | None:
        """Returns the new state when this changed it."""
        self.failures.clear()
        if self.state == BreakerState.CLOSED:
            return None
        self.state = BreakerState.CLOSED
        return self.state

    def record_failure(self, now: float) -> BreakerState | None:
        if self.state == BreakerState.HALF_OPEN:
            return self._open(now)
        self.failures = [t for t in self.failures if now - t < self.window_s]
        self.failures.append(now)
        if self.state == BreakerState.CLOSED and len(self.failures) >= self.failure_threshold:
            return self._open(now)
        return None

    def _open(self, now: float) -> BreakerState:
        self.state, self.opened_at, self.probes = BreakerState.OPEN, now, 0
        self.failures.clear()
        return self.state
