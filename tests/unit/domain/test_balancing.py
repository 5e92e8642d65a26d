from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from mcp_hangar.domain.balancing import Balancer, Candidate

A, B, C = (
    Candidate("a", weight=5, priority=2),
    Candidate("b", weight=1, priority=1),
    Candidate("c", weight=1, priority=3),
)


def picks(strategy: str, n: int, candidates: list[Candidate]) -> list[str]:
    balancer = Balancer(strategy, rng=random.Random(7))
    return [balancer.order(candidates)[0].id for _ in range(n)]


def test_round_robin_alternates() -> None:
    assert picks("round_robin", 6, [A, B, C]) == ["a", "b", "c", "a", "b", "c"]


def test_smooth_weighted_round_robin_spreads_by_weight() -> None:
    seven = picks("weighted_round_robin", 7, [A, B, C])
    assert Counter(seven) == {"a": 5, "b": 1, "c": 1}
    assert seven[0] == "a" and "a" in seven[2:5]  # not five a's in a row
    assert Counter(picks("weighted_round_robin", 700, [A, B, C])) == {"a": 500, "b": 100, "c": 100}


def test_priority_takes_the_lowest_number_and_orders_the_fallbacks() -> None:
    order = Balancer("priority").order([A, B, C])
    assert [c.id for c in order] == ["b", "a", "c"]


def test_least_connections_takes_the_idlest() -> None:
    busy = [Candidate("a", in_flight=3), Candidate("b", in_flight=0), Candidate("c", in_flight=1)]
    assert Balancer("least_connections").order(busy)[0].id == "b"


def test_random_follows_the_weights() -> None:
    counts = Counter(picks("random", 6000, [A, B, C]))
    assert 3500 < counts["a"] < 5000 and 500 < counts["b"] < 1300


@given(
    st.sampled_from(["round_robin", "weighted_round_robin", "priority", "least_connections", "random"]),
    st.lists(st.integers(1, 5), min_size=1, max_size=6),
)
def test_every_candidate_appears_exactly_once_in_an_order(strategy: str, weights: list[int]) -> None:
    candidates = [Candidate(f"m{i}", weight=w, priority=w) for i, w in enumerate(weights)]
    order = Balancer(strategy).order(candidates)
    assert sorted(c.id for c in order) == sorted(c.id for c in candidates)
