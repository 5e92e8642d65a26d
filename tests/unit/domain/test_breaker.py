from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcp_hangar.domain.breaker import BreakerState, CircuitBreaker

B = BreakerState


def test_opens_after_the_threshold_within_the_window_and_fails_fast() -> None:
    b = CircuitBreaker(failure_threshold=3, window_s=10, reset_timeout_s=30)
    assert b.record_failure(0) is None and b.record_failure(1) is None
    assert b.record_failure(20) is None  # the first two fell out of the window
    assert b.record_failure(21) is None
    assert b.record_failure(22) == B.OPEN
    assert b.allow(25) == 27  # fails fast, and says when it will try again


def test_half_open_lets_a_probe_through_and_closes_on_success() -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, half_open_max_calls=1)
    b.record_failure(0)
    assert b.allow(5) == 0 and b.state == B.HALF_OPEN
    assert b.allow(5) > 0  # only one probe at a time
    assert b.record_success() == B.CLOSED
    assert b.allow(6) == 0


def test_a_failed_probe_opens_it_again() -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=5)
    b.record_failure(0)
    assert b.allow(6) == 0
    assert b.record_failure(6) == B.OPEN
    assert b.allow(7) == 4


@given(st.lists(st.tuples(st.sampled_from(["ok", "fail", "ask"]), st.floats(0, 5)), max_size=80))
def test_it_never_lets_calls_through_while_open(steps: list[tuple[str, float]]) -> None:
    b = CircuitBreaker(failure_threshold=2, window_s=10, reset_timeout_s=3, half_open_max_calls=1)
    now = 0.0
    for action, dt in steps:
        now += dt
        if action == "ok":
            b.record_success()
        elif action == "fail":
            b.record_failure(now)
        else:
            was_open = b.state == B.OPEN and now < b.opened_at + b.reset_timeout_s
            allowed = b.allow(now) == 0
            assert not (was_open and allowed)
