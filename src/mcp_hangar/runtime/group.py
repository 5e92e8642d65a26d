"""A group: several providers behind one id, with load balancing and failover.

A call goes to the member the strategy picks among the available ones (not dead and backing off,
circuit not open). When it fails for a transport reason, it is retried on the next member only if
that is safe: the request never reached the provider, or the tool is annotated read-only or
idempotent. A tool's own error result is an answer, never a reason to fail over.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from mcp_hangar.config import GroupProvider
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.balancing import Balancer, Candidate
from mcp_hangar.domain.breaker import BreakerState
from mcp_hangar.domain.errors import BackingOff, CircuitOpen, ProviderError, RemoteError, StartFailed
from mcp_hangar.domain.retry import retry_safe
from mcp_hangar.domain.states import ProviderState
from mcp_hangar.launchers.session import ProgressFn
from mcp_hangar.runtime.provider import ClientLink, EventSink, Provider

log = structlog.get_logger("mcp_hangar.group")
NOT_RETRIED = " (not retried on another member: it reached one and the tool is not read-only or idempotent)"


class Group:
    def __init__(self, group_id: str, spec: GroupProvider, members: list[Provider], emit: EventSink) -> None:
        self.id = group_id
        self._emit = emit
        self.spec = spec
        self._balancer = Balancer(spec.strategy)
        self.update(spec, members)
        self.stats = {"invocations": 0, "failovers": 0}
        self._back_at: dict[str, float | None] = {}  # when a member that was unavailable came back
        self.last_error: str | None = None

    def update(self, spec: GroupProvider, members: list[Provider]) -> None:
        """Take a new definition and member set (config reload); calls in flight keep theirs."""
        if spec.strategy != self.spec.strategy:
            self._balancer = Balancer(spec.strategy)
        self.spec = spec
        self.members = members
        self._weights = {m.id: m.weight for m in spec.members}
        self._priorities = {m.id: m.priority for m in spec.members}

    # --- what callers see ------------------------------------------------------------------

    def _available(self, member: Provider) -> bool:
        now = time.monotonic()
        breaker = member.breaker
        if breaker.state == BreakerState.OPEN and now < breaker.opened_at + breaker.reset_timeout_s:
            return False
        return not (member.state == ProviderState.DEAD and member.crashes.wait_before_start(now) > 0)

    @property
    def state(self) -> str:
        """healthy (all members available), partial (at least min_healthy), degraded (some), down."""
        available = sum(1 for m in self.members if self._available(m))
        if available == len(self.members):
            return "healthy"
        if available >= self.spec.min_healthy:
            return "partial"
        return "degraded" if available else "down"

    @property
    def tools(self) -> list[dict[str, Any]]:
        return next((m.tools for m in self.members if m.tools_known), [])

    @property
    def tools_known(self) -> bool:
        return any(m.tools_known for m in self.members)

    @property
    def tools_source(self) -> str | None:
        return next((m.tools_source for m in self.members if m.tools_known), None)

    def tool(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tools if t.get("name") == name), None)

    def mismatched_tools(self) -> list[str]:
        """Members whose known tool names differ from the first known member's."""
        known = [m for m in self.members if m.tools_known]
        if not known:
            return []
        names = {t.get("name") for t in known[0].tools}
        return [m.id for m in known[1:] if {t.get("name") for t in m.tools} != names]

    async def ensure_started(self) -> None:
        """Make sure some member runs (which one a call uses is the balancer's choice, at call time)."""
        if any(m.running for m in self.members):
            return
        errors = []
        ranked = sorted(self.members, key=lambda m: self._priorities.get(m.id, 1))
        for candidate in [c for c in ranked if self._available(c)]:
            try:
                await candidate.ensure_started()
                return
            except ProviderError as exc:
                errors.append(str(exc))
        raise StartFailed(f"group {self.id!r}: no member could be started: " + "; ".join(errors or ["no members"]))

    def _order(self) -> list[Candidate]:
        now = time.monotonic()
        available = [m for m in self.members if self._note(m, self._available(m), now)]
        settled = [m for m in available if self._settled(m, now)]
        candidates = [
            Candidate(m.id, self._weights.get(m.id, 1), self._priorities.get(m.id, 1), m.in_flight)
            for m in (settled or available)
        ]
        return self._balancer.order(candidates)

    def _note(self, member: Provider, available: bool, now: float) -> bool:
        """Remember when an unavailable member came back (for failback_delay_s)."""
        if not available:
            self._back_at[member.id] = None
        elif member.id in self._back_at and self._back_at[member.id] is None:
            self._back_at[member.id] = now
        return available

    def _settled(self, member: Provider, now: float) -> bool:
        back = self._back_at.get(member.id)
        return back is None or now - back >= self.spec.failback_delay_s

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        *,
        timeout: float | None = None,
        on_progress: ProgressFn | None = None,
        correlation_id: str | None = None,
        principal: str | None = None,
        client: ClientLink | None = None,
    ) -> dict[str, Any]:
        self.stats["invocations"] += 1
        order = self._order()
        if not order:
            raise CircuitOpen(f"group {self.id!r}: no member is available (all are dead or their circuits open)")
        failures: list[str] = []
        members = {m.id: m for m in self.members}  # this call's view, should a reload change the set
        for n, candidate in enumerate(order):
            member = members[candidate.id]
            try:
                return await member.call_tool(
                    tool,
                    arguments,
                    timeout=timeout,
                    on_progress=on_progress,
                    correlation_id=correlation_id,
                    principal=principal,
                    client=client,
                )
            except RemoteError:
                raise  # the member answered: its protocol error is the answer
            except ProviderError as exc:
                failures.append(f"{member.id}: {exc}")
                self.last_error = str(exc)
                self._back_at[member.id] = None  # down: when it returns, failback waits for it to settle
                safe = not exc.sent or isinstance(exc, BackingOff) or retry_safe(member.tool(tool))
                if n + 1 == len(order) or not safe:
                    why = "" if safe else NOT_RETRIED
                    raise type(exc)(f"group {self.id!r}: {'; '.join(failures)}{why}", sent=exc.sent) from None
                self.stats["failovers"] += 1
                nxt = order[n + 1].id
                log.warning("group.failover", group=self.id, member=member.id, to=nxt, reason=str(exc))
                self._emit(
                    ev.Failover(
                        provider_id=self.id,
                        at=time.time(),
                        tool=tool,
                        from_member=member.id,
                        to_member=nxt,
                        reason=str(exc),
                    )
                )
        raise AssertionError("unreachable")

    async def stop(self, reason: str = "stopped") -> bool:
        stopped = [await m.stop(reason) for m in self.members]
        return any(stopped)

    @property
    def running(self) -> bool:
        return any(m.running for m in self.members)

    @property
    def in_flight(self) -> int:
        return sum(m.in_flight for m in self.members)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": "group",
            "state": self.state,
            "strategy": self.spec.strategy,
            "description": self.spec.description,
            "tools": len(self.tools) if self.tools_known else None,
            "in_flight": self.in_flight,
            "members": [
                {"id": m.id, "state": m.state.value, "circuit_breaker": m.breaker.state.value, "in_flight": m.in_flight}
                for m in self.members
            ],
        }
