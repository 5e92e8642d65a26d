"""Choosing a group member for a call. Pure: each strategy sees the candidates and its own state."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    weight: int = 1
    priority: int = 1
    in_flight: int = 0


@dataclass(slots=True)
class Balancer:
    strategy: str
    rng: random.Random = field(default_factory=random.Random)
    _next: int = 0
    _current: dict[str, float] = field(default_factory=dict)

    def order(self, candidates: list[Candidate]) -> list[Candidate]:
        """All candidates, best first: the first is this call's choice, the rest its fallbacks."""
        if not candidates:
            return []
        first = self._pick(candidates)
        rest = [c for c in candidates if c.id != first.id]
        if self.strategy == "priority":
            rest.sort(key=lambda c: c.priority)
        return [first, *rest]

    def _pick(self, candidates: list[Candidate]) -> Candidate:
        if self.strategy == "priority":
            return min(candidates, key=lambda c: c.priority)  # stable: config order breaks ties
        if self.strategy == "least_connections":
            return min(candidates, key=lambda c: c.in_flight)
        if self.strategy == "random":
            return self.rng.choices(candidates, weights=[c.weight for c in candidates])[0]
        if self.strategy == "weighted_round_robin":
            # Smooth weighted round robin: spreads the heavy member's turns instead of bunching them.
            total = sum(c.weight for c in candidates)
            for c in candidates:
                self._current[c.id] = self._current.get(c.id, 0.0) + c.weight
            best = max(candidates, key=lambda c: self._current[c.id])
            self._current[best.id] -= total
            return best
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice
