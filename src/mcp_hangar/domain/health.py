"""Consecutive-failure accounting that decides READY <-> DEGRADED."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HealthTracker:
    max_consecutive_failures: int
    consecutive_failures: int = 0
    last_error: str | None = None

    def record_failure(self, error: str) -> bool:
        """Count one failed check or call; True when the threshold is reached."""
        self.consecutive_failures += 1
        self.last_error = error
        return self.consecutive_failures >= self.max_consecutive_failures

    def record_success(self) -> None:
        self.consecutive_failures = 0
