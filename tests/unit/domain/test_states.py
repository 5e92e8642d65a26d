from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_hangar.domain.states import TRANSITIONS, IllegalTransition, ProviderState, check_transition

S = ProviderState


def test_the_lifecycle_of_the_contract_is_legal() -> None:
    path = [S.COLD, S.INITIALIZING, S.READY, S.DEGRADED, S.READY, S.DEGRADED, S.DEAD, S.INITIALIZING, S.READY, S.COLD]
    for current, target in itertools.pairwise(path):
        check_transition("p", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.COLD, S.READY), (S.COLD, S.DEGRADED), (S.COLD, S.DEAD), (S.DEAD, S.READY), (S.INITIALIZING, S.DEGRADED)],
)
def test_shortcuts_are_illegal(current: ProviderState, target: ProviderState) -> None:
    with pytest.raises(IllegalTransition, match=f"provider 'p': illegal state transition {current} -> {target}"):
        check_transition("p", current, target)


def test_every_state_can_be_left_and_reached() -> None:
    assert {a for a, _ in TRANSITIONS} == set(S)
    assert {b for _, b in TRANSITIONS} == set(S)


def test_only_a_start_reaches_ready_from_rest() -> None:
    # READY is entered from INITIALIZING (a start) or DEGRADED (recovery), never from rest or death.
    assert {a for a, b in TRANSITIONS if b == S.READY} == {S.INITIALIZING, S.DEGRADED}


@given(st.lists(st.sampled_from(list(S)), max_size=60))
def test_no_sequence_of_requests_reaches_an_illegal_state(targets: list[ProviderState]) -> None:
    """Drive a state holder with arbitrary requested moves: it only ever moves along the table."""
    state = S.COLD
    visited = [state]
    for target in targets:
        try:
            check_transition("p", state, target)
        except IllegalTransition:
            continue
        state = target
        visited.append(state)
    for a, b in itertools.pairwise(visited):
        assert (a, b) in TRANSITIONS
    # READY is never reached without passing through INITIALIZING first.
    if S.READY in visited:
        assert visited.index(S.INITIALIZING) < visited.index(S.READY)
