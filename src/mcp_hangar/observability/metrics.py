"""Prometheus metrics, fed by domain events. One registry per Hangar (nothing global).

Labels stay bounded: providers come from the configuration, tools only from a provider's own
tool list (anything else a client sends is counted as ``other``), states and outcomes are fixed.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mcp_hangar.domain import events as ev
from mcp_hangar.domain.states import ProviderState

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

KnownTool = Callable[[str, str], bool]


class Metrics:
    def __init__(self, providers: list[str], known_tool: KnownTool) -> None:
        self.registry = CollectorRegistry()
        self._known_tool = known_tool
        r = self.registry
        self.tool_calls = Counter(
            "mcp_hangar_tool_calls",
            "Tool calls by outcome (ok, tool_error, error).",
            ["provider", "tool", "outcome"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "mcp_hangar_tool_call_duration_seconds",
            "Tool call duration.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("mcp_hangar_tool_calls_in_flight", "Tool calls in flight.", ["provider"], registry=r)
        self.state = Gauge(
            "mcp_hangar_provider_state", "1 for the state a provider is in.", ["provider", "state"], registry=r
        )
        self.starts = Counter("mcp_hangar_provider_starts", "Provider starts.", ["provider"], registry=r)
        self.start_failures = Counter("mcp_hangar_provider_start_failures", "Failed starts.", ["provider"], registry=r)
        self.start_duration = Histogram(
            "mcp_hangar_provider_cold_start_seconds",
            "Spawn to MCP handshake done.",
            ["provider"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.crashes = Counter("mcp_hangar_provider_crashes", "Providers that died.", ["provider"], registry=r)
        self.breaker = Counter(
            "mcp_hangar_circuit_breaker_transitions", "Circuit breaker transitions.", ["provider", "state"], registry=r
        )
        self.failovers = Counter(
            "mcp_hangar_group_failovers", "Calls a group moved to another member.", ["group"], registry=r
        )
        self.recoveries = Counter(
            "mcp_hangar_provider_recovery_attempts", "Restarts after a failure.", ["provider", "mode"], registry=r
        )
        self.crash_loops = Counter("mcp_hangar_provider_crash_loops", "Crash loops declared.", ["provider"], registry=r)
        self.rebalances = Counter(
            "mcp_hangar_group_rebalances", "Group member sets changed (config reload).", ["group"], registry=r
        )
        self.reloads = Counter(
            "mcp_hangar_config_reloads", "Configuration reloads by outcome.", ["outcome"], registry=r
        )
        self.health_checks = Counter(
            "mcp_hangar_health_checks", "Health checks by result.", ["provider", "result"], registry=r
        )
        self.rate_limited = Counter(
            "mcp_hangar_rate_limit_rejections", "Requests refused by a rate limit.", ["scope"], registry=r
        )
        self.auth_failures = Counter("mcp_hangar_auth_failures", "Failed authentications.", ["reason"], registry=r)
        self.http_requests = Counter(
            "mcp_hangar_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self._providers: set[str] = set()
        self.providers_known(providers)

    def providers_known(self, providers: list[str]) -> None:
        """The configured providers (again, after a reload): new ones start cold, gone ones vanish."""
        for pid in self._providers - set(providers):
            for state in ProviderState:
                self.state.remove(pid, state.value)
            self.in_flight.remove(pid)
        for pid in set(providers) - self._providers:
            for state in ProviderState:
                self.state.labels(pid, state.value).set(1 if state == ProviderState.COLD else 0)
            self.in_flight.labels(pid).set(0)
        self._providers = set(providers)

    def observe(self, event: ev.DomainEvent) -> None:
        pid = event.provider_id
        if isinstance(event, ev.ToolInvoked):
            self.in_flight.labels(pid).inc()
        elif isinstance(event, ev.ToolCompleted):
            self.in_flight.labels(pid).dec()
            self.tool_calls.labels(pid, self._tool(pid, event.tool), "tool_error" if event.is_error else "ok").inc()
            self.tool_duration.labels(pid).observe(event.duration_ms / 1000)
        elif isinstance(event, ev.ToolFailed):
            self.in_flight.labels(pid).dec()
            self.tool_calls.labels(pid, self._tool(pid, event.tool), "error").inc()
            self.tool_duration.labels(pid).observe(event.duration_ms / 1000)
        elif isinstance(event, ev.StateChanged):
            self.state.labels(pid, event.old.value).set(0)
            self.state.labels(pid, event.new.value).set(1)
        elif isinstance(event, ev.ProviderStarted):
            self.starts.labels(pid).inc()
            self.start_duration.labels(pid).observe(event.startup_ms / 1000)
        elif isinstance(event, ev.ProviderStartFailed):
            self.start_failures.labels(pid).inc()
        elif isinstance(event, ev.ProviderCrashed):
            self.crashes.labels(pid).inc()
        elif isinstance(event, ev.CircuitChanged):
            self.breaker.labels(pid, event.state).inc()
        elif isinstance(event, ev.Failover):
            self.failovers.labels(pid).inc()
        elif isinstance(event, ev.RecoveryAttempt):
            self.recoveries.labels(pid, event.mode).inc()
        elif isinstance(event, ev.CrashLoop):
            self.crash_loops.labels(pid).inc()
        elif isinstance(event, ev.GroupRebalanced):
            self.rebalances.labels(pid).inc()
        elif isinstance(event, ev.ConfigReloaded | ev.ConfigReloadFailed):
            self.reloads.labels("applied" if isinstance(event, ev.ConfigReloaded) else "refused").inc()
        elif isinstance(event, ev.HealthCheckPassed | ev.HealthCheckFailed):
            result = "passed" if isinstance(event, ev.HealthCheckPassed) else "failed"
            self.health_checks.labels(pid, result).inc()

    def _tool(self, provider: str, tool: str) -> str:
        return tool if self._known_tool(provider, tool) else "other"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
