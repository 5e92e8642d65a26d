"""Restart backoff: how long a crashed provider waits before it may start again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter on top of a deterministic floor.

    Attempt 1 (the first restart after a crash) is immediate, so a single crash costs a caller
    nothing; each further consecutive crash doubles the wait up to ``max_s``.
    """

    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        if attempt <= 1:
            return 0.0
        raw = min(self.max_s, self.base_s * self.factor ** (attempt - 2))
        if self.jitter <= 0:
            return raw
        spread = raw * self.jitter
        return max(0.0, raw + (rng or random).uniform(-spread, spread))


@dataclass(slots=True)
class CrashTracker:
    """Counts consecutive crashes; a run that lasted ``stable_after_s`` resets the count.

    Time is passed in (monotonic seconds), never read, so the rule is testable without sleeps.
    """

    backoff: Backoff
    stable_after_s: float = 60.0
    consecutive: int = 0
    last_crash_at: float | None = None
    next_start_delay: float = 0.0

    def record_crash(self, now: float, started_at: float | None, rng: random.Random | None = None) -> float:
        if started_at is not None and now - started_at >= self.stable_after_s:
            self.consecutive = 0
        self.consecutive += 1
        self.last_crash_at = now
        self.next_start_delay = self.backoff.delay(self.consecutive, rng)
        return self.next_start_delay

    def wait_before_start(self, now: float) -> float:
        """Seconds left before a start is allowed (0 when it may start now)."""
        if self.last_crash_at is None:
            return 0.0
        return max(0.0, self.last_crash_at + self.next_start_delay - now)

    def reset(self) -> None:
        self.consecutive = 0
        self.last_crash_at = None
        self.next_start_delay = 0.0
