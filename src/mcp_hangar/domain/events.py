"""Domain events: facts about what happened, emitted by the runtime, consumed by sinks.

They are plain frozen dataclasses with no I/O. ``kind`` is the stable type name that sinks
(logs, the event store, metrics) key on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from mcp_hangar.domain.states import ProviderState


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    kind: ClassVar[str] = "event"
    provider_id: str
    at: float  # wall-clock seconds since the epoch

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(DomainEvent):
    kind: ClassVar[str] = "provider_state_changed"
    old: ProviderState
    new: ProviderState
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStarted(DomainEvent):
    kind: ClassVar[str] = "provider_started"
    pid: int | None
    startup_ms: float
    tools: int
    protocol_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStartFailed(DomainEvent):
    kind: ClassVar[str] = "provider_start_failed"
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStopped(DomainEvent):
    kind: ClassVar[str] = "provider_stopped"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCrashed(DomainEvent):
    kind: ClassVar[str] = "provider_crashed"
    exit_code: int | None
    consecutive: int
    restart_delay_s: float
    stderr_tail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitChanged(DomainEvent):
    kind: ClassVar[str] = "circuit_breaker_changed"
    state: str  # closed | open | half_open
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Failover(DomainEvent):
    """A group moved a call from a failing member to the next one."""

    kind: ClassVar[str] = "group_failover"
    tool: str
    from_member: str
    to_member: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryAttempt(DomainEvent):
    kind: ClassVar[str] = "provider_recovery_attempt"
    attempt: int
    mode: str  # lazy | eager


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashLoop(DomainEvent):
    """Too many failures in a row: no more automatic starts until registry_start or the cool-down."""

    kind: ClassVar[str] = "provider_crash_loop"
    failures: int
    cooldown_s: float
    last_error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleStopped(DomainEvent):
    kind: ClassVar[str] = "provider_idle_stopped"
    idle_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolsListed(DomainEvent):
    """The tool list a provider reported: the source of the tool catalog kept across restarts."""

    kind: ClassVar[str] = "provider_tools_listed"
    tools: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInvoked(DomainEvent):
    """``arguments`` is the caller's object; sinks decide what of it they may keep (a store keeps
    only its size and hash unless the provider's audit setting says otherwise)."""

    kind: ClassVar[str] = "tool_invoked"
    tool: str
    arguments: dict[str, Any] | None = None
    correlation_id: str | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCompleted(DomainEvent):
    kind: ClassVar[str] = "tool_completed"
    tool: str
    duration_ms: float
    is_error: bool
    result: dict[str, Any] | None = None
    correlation_id: str | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFailed(DomainEvent):
    kind: ClassVar[str] = "tool_failed"
    tool: str
    duration_ms: float
    error: str
    correlation_id: str | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckPassed(DomainEvent):
    kind: ClassVar[str] = "health_check_passed"
    duration_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckFailed(DomainEvent):
    kind: ClassVar[str] = "health_check_failed"
    error: str
    consecutive_failures: int


SECURITY_STREAM = "hangar.security"  # not a valid provider id, so it can never collide with one


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityDecision(DomainEvent):
    """A refusal: failed authentication, a lockout, a forbidden call, a rate limit."""

    kind: ClassVar[str] = "security_decision"
    decision: str  # auth_failed | locked_out | forbidden | rate_limited
    reason: str
    principal: str | None = None
    client: str | None = None
    tool: str | None = None
    provider: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyChanged(DomainEvent):
    kind: ClassVar[str] = "api_key_changed"
    key_id: str
    name: str
    role: str
    change: str  # created | revoked


CONFIG_STREAM = "hangar.config"  # like SECURITY_STREAM: never a provider id


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(DomainEvent):
    """A new configuration took effect: providers added, removed (drained, then stopped), replaced."""

    kind: ClassVar[str] = "config_reloaded"
    added: list[str]
    removed: list[str]
    changed: list[str]
    not_applied: list[str]  # top-level sections that changed but take a restart


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloadFailed(DomainEvent):
    kind: ClassVar[str] = "config_reload_failed"
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRebalanced(DomainEvent):
    """A group's members changed; calls spread over the new set from the next call on."""

    kind: ClassVar[str] = "group_rebalanced"
    members: list[str]
    added: list[str]
    removed: list[str]


DISCOVERY_STREAM = "hangar.discovery"


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryApplied(DomainEvent):
    """A discovery cycle changed the providers: added, removed (drained, then stopped) or replaced."""

    kind: ClassVar[str] = "discovery_applied"
    trigger: str
    added: list[str]
    removed: list[str]
    changed: list[str]
