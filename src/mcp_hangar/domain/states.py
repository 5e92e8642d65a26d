"""Provider lifecycle states and the one table of legal transitions."""

from __future__ import annotations

from enum import StrEnum


class ProviderState(StrEnum):
    COLD = "cold"
    INITIALIZING = "initializing"
    READY = "ready"
    DEGRADED = "degraded"
    DEAD = "dead"


S = ProviderState

# Every legal move, and the reason it exists. Anything else is a bug in the runtime.
TRANSITIONS: frozenset[tuple[ProviderState, ProviderState]] = frozenset(
    {
        (S.COLD, S.INITIALIZING),  # first call, registry_start or warm
        (S.INITIALIZING, S.READY),  # handshake done, tools listed
        (S.INITIALIZING, S.DEAD),  # spawn failed, crashed or timed out while starting
        (S.INITIALIZING, S.COLD),  # stopped while starting (shutdown, registry_stop)
        (S.READY, S.DEGRADED),  # too many failed health checks or calls in a row
        (S.DEGRADED, S.READY),  # a health check or call succeeded again
        (S.READY, S.COLD),  # stopped: idle, registry_stop, shutdown
        (S.DEGRADED, S.COLD),
        (S.READY, S.DEAD),  # the process died under us
        (S.DEGRADED, S.DEAD),
        (S.DEAD, S.INITIALIZING),  # restart after a crash, once backoff allows
        (S.DEAD, S.COLD),  # registry_stop clears a dead provider
    }
)

# States in which a provider has a live session that can take calls.
RUNNING: frozenset[ProviderState] = frozenset({S.READY, S.DEGRADED})


class IllegalTransition(RuntimeError):
    def __init__(self, provider_id: str, current: ProviderState, target: ProviderState) -> None:
        super().__init__(f"provider {provider_id!r}: illegal state transition {current} -> {target}")
        self.current = current
        self.target = target


def check_transition(provider_id: str, current: ProviderState, target: ProviderState) -> None:
    if (current, target) not in TRANSITIONS:
        raise IllegalTransition(provider_id, current, target)
