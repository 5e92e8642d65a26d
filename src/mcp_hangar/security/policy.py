"""The decisions: may this principal call this tool on this provider, and is it within its rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp_hangar.config import Config
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.ratelimit import TokenBucket
from mcp_hangar.domain.roles import Role, may_call
from mcp_hangar.security.validation import ArgumentValidator

INVOKING = frozenset({"registry_invoke", "registry_invoke_ex", "registry_invoke_stream"})


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    via: str  # api_key | jwt | local


LOCAL = Principal("local", Role.ADMIN, "local")  # the stdio client: whoever started hangar


class Denied(Exception):
    """A refusal a caller sees: HTTP status, and for rate limits when to come back."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Guard:
    config: Config
    emit: Callable[[ev.DomainEvent], None]
    clock: Callable[[], float] = time.monotonic
    validator: ArgumentValidator = field(default_factory=ArgumentValidator)
    _principal_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _provider_buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconfigure(self.config)

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded configuration's providers and rate limits (authentication and role
        allowlists take a restart, as the reload event says); buckets of unchanged limits keep
        their state."""
        old = self.config.providers
        if config.rate_limits != self.config.rate_limits:
            self._principal_buckets.clear()  # the new per-principal limit applies to everyone
        if self.config is not config:
            config = config.model_copy(update={"auth": self.config.auth})
        self.config = config
        buckets = {}
        for pid, spec in config.providers.items():
            if spec.rate_limit is None:
                continue
            kept = self._provider_buckets.get(pid)
            same = pid in old and old[pid].rate_limit == spec.rate_limit
            buckets[pid] = (
                kept if kept is not None and same else TokenBucket(spec.rate_limit.rate, spec.rate_limit.burst)
            )
        self._provider_buckets = buckets

    def usable_providers(self, principal: Principal | None) -> set[str] | None:
        """The providers whose tools this caller may use (None: all), for what listings show."""
        who = principal or LOCAL
        if not may_call(who.role, "registry_invoke"):
            return set()
        allowed = self.config.auth.providers.get(who.role.value)
        return None if allowed is None else set(allowed)

    def check_call(
        self, principal: Principal | None, tool: str, provider: str | None, client: str | None = None
    ) -> None:
        """Authorization and rate limits for one tools/call; raises Denied (and records it)."""
        who = principal or LOCAL
        if not may_call(who.role, tool):
            self._deny(403, "forbidden", f"role {who.role.value!r} may not call {tool}", who, tool, provider, client)
        allowed = self.config.auth.providers.get(who.role.value)
        if provider is not None and allowed is not None and provider not in allowed:
            reason = f"role {who.role.value!r} may not use provider {provider!r}"
            self._deny(403, "forbidden", reason, who, tool, provider, client)
        if tool not in INVOKING:
            return
        limit = self.config.rate_limits.per_principal
        if limit is not None:
            bucket = self._principal_buckets.setdefault(who.name, TokenBucket(limit.rate, limit.burst))
            if wait := bucket.take(self.clock()):
                reason = f"rate limit for {who.name!r} exceeded ({limit.rate:g}/s, burst {limit.burst})"
                self._deny(429, "rate_limited", reason, who, tool, provider, client, wait)
        shared = self._provider_buckets.get(provider or "")
        if shared is not None and (wait := shared.take(self.clock())):
            reason = f"rate limit for provider {provider!r} exceeded ({shared.rate:g}/s, burst {shared.burst:g})"
            self._deny(429, "rate_limited", reason, who, tool, provider, client, wait)

    def _deny(
        self,
        status: int,
        decision: str,
        reason: str,
        who: Principal,
        tool: str,
        provider: str | None,
        client: str | None,
        retry_after: float | None = None,
    ) -> None:
        self.emit(
            ev.SecurityDecision(
                provider_id=ev.SECURITY_STREAM,
                at=time.time(),
                decision=decision,
                reason=reason,
                principal=who.name,
                client=client,
                tool=tool,
                provider=provider,
            )
        )
        if retry_after is not None:
            reason += f"; retry in {retry_after:.2f}s"
        raise Denied(status, reason, retry_after)
