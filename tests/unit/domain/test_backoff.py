from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from mcp_hangar.domain.backoff import Backoff, CrashTracker
from mcp_hangar.domain.health import HealthTracker


def test_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    b = Backoff(base_s=0.5, factor=2, max_s=4, jitter=0)
    assert [b.delay(n) for n in range(1, 8)] == [0, 0.5, 1, 2, 4, 4, 4]


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_jittered_delay_stays_within_its_spread(attempt: int, seed: int) -> None:
    b = Backoff(base_s=0.5, factor=2, max_s=30, jitter=0.1)
    raw = Backoff(base_s=0.5, factor=2, max_s=30, jitter=0).delay(attempt)
    assert raw * 0.9 - 1e-9 <= b.delay(attempt, random.Random(seed)) <= raw * 1.1 + 1e-9


def test_crash_tracker_backs_off_and_resets_after_a_stable_run() -> None:
    t = CrashTracker(Backoff(base_s=1, factor=2, max_s=60, jitter=0), stable_after_s=30)
    assert t.record_crash(now=100, started_at=99) == 0
    assert t.wait_before_start(100) == 0
    assert t.record_crash(now=101, started_at=100.5) == 1
    assert t.wait_before_start(101.25) == 0.75
    assert t.record_crash(now=110, started_at=105) == 2
    assert t.consecutive == 3
    # The next instance ran for a minute: that crash counts as the first again.
    assert t.record_crash(now=200, started_at=140) == 0
    assert t.consecutive == 1


def test_health_tracker_trips_at_the_threshold_and_resets_on_success() -> None:
    h = HealthTracker(max_consecutive_failures=3)
    assert [h.record_failure("x"), h.record_failure("y"), h.record_failure("z")] == [False, False, True]
    assert h.consecutive_failures == 3 and h.last_error == "z"
    h.record_success()
    assert h.consecutive_failures == 0
    assert h.record_failure("again") is False  # the count starts over
