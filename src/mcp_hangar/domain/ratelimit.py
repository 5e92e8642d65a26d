"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. Time is passed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0  # -1: full on first use
    updated: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if there are enough; return 0, else the seconds until there will be."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else float("inf")


@dataclass(slots=True)
class FailureWindow:
    """Lockout after repeated failures: ``limit`` failures within ``window_s`` lock for ``lock_s``."""

    limit: int
    window_s: float
    lock_s: float
    failures: tuple[float, ...] = ()
    locked_until: float = 0.0

    def record_failure(self, now: float) -> None:
        self.failures = (*(t for t in self.failures if now - t < self.window_s), now)
        if len(self.failures) >= self.limit:
            self.locked_until = now + self.lock_s
            self.failures = ()

    def locked_for(self, now: float) -> float:
        return max(0.0, self.locked_until - now)
