"""One provider: its lifecycle, its one shared session, and calls through it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import structlog

from mcp_hangar.config import ContainerProvider, ProviderConfig, RemoteProvider, SubprocessProvider
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.backoff import Backoff, CrashTracker
from mcp_hangar.domain.breaker import CircuitBreaker
from mcp_hangar.domain.errors import (
    BackingOff,
    CallTimeout,
    CircuitOpen,
    ConnectionLost,
    NotSupported,
    ProviderError,
    RemoteError,
    StartFailed,
)
from mcp_hangar.domain.health import HealthTracker
from mcp_hangar.domain.states import RUNNING, ProviderState, check_transition
from mcp_hangar.launchers import remote as remote_launcher
from mcp_hangar.launchers import subprocess as subprocess_launcher
from mcp_hangar.launchers.channel import Channel, LaunchError
from mcp_hangar.launchers.container import ContainerChannel, Containers
from mcp_hangar.launchers.session import METHOD_NOT_FOUND, Handshake, ProgressFn, RpcSession
from mcp_hangar.observability import tracing
from mcp_hangar.store.base import StreamHistory

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = structlog.get_logger("mcp_hangar.provider")

INTERNAL_ERROR = -32603

EventSink = Callable[[ev.DomainEvent], None]


class Backpressure(Protocol):
    """The event log's say on the call path: when its backlog is full, calls wait for room."""

    @property
    def backlogged(self) -> bool: ...

    async def room(self) -> None: ...


class ClientLink(Protocol):
    """The client a call came from, for the requests a provider makes of it mid-call (sampling,
    elicitation, roots): hangar relays them to the client whose call the provider is serving."""

    def supports(self, method: str) -> bool:
        """Whether the client declared the capability the method needs."""
        ...

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Ask the client; its result, or RemoteError with its error."""
        ...


# Client capability each provider->client request needs.
CLIENT_METHODS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


# Event-log counters that become the provider's stats when it is rebuilt after a restart.
_STAT_EVENTS = {
    "invocations": (ev.ToolInvoked.kind,),
    "failures": (ev.ToolFailed.kind,),
    "starts": (ev.ProviderStarted.kind,),
    "crashes": (ev.ProviderCrashed.kind,),
    "start_failures": (ev.ProviderStartFailed.kind,),
    "health_checks": (ev.HealthCheckPassed.kind, ev.HealthCheckFailed.kind),
    "health_check_failures": (ev.HealthCheckFailed.kind,),
}
HEALTH_CHECK_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
WAIT_OUT_BACKOFF_S = 2.0  # callers wait out a restart delay up to this long instead of failing


class Provider:
    def __init__(
        self,
        provider_id: str,
        spec: ProviderConfig,
        *,
        base_dir: Path,
        emit: EventSink,
        task_group: anyio.abc.TaskGroup,
        backoff: Backoff | None = None,
        history: StreamHistory | None = None,
        backpressure: Backpressure | None = None,
        secrets: frozenset[str] = frozenset(),
        containers: Containers | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.id = provider_id
        self._containers = containers
        self.tracer = tracer  # None: tracing is off
        self.spec = spec
        self._base_dir = base_dir
        self._emit = emit
        self._tg = task_group
        self.state = ProviderState.COLD
        self.state_reason = ""
        self.handshake: Handshake | None = None
        self._session: RpcSession | None = None
        self._channel: Channel | None = None
        self._starting: asyncio.Future[RpcSession] | None = None
        self._stopping = False
        self._slots = asyncio.Semaphore(spec.max_concurrency)
        self._live_tools: list[dict[str, Any]] | None = None
        self._cached_tools: list[dict[str, Any]] | None = None
        self._backpressure = backpressure
        self._secrets = secrets  # masked in what the provider writes to stderr
        self.health = HealthTracker(spec.max_consecutive_failures)
        cb = spec.circuit_breaker
        self.breaker = CircuitBreaker(cb.failure_threshold, cb.window_s, cb.reset_timeout_s, cb.half_open_max_calls)
        rc = spec.recovery
        self.crashes = CrashTracker(backoff or Backoff(base_s=rc.backoff_base_s, max_s=rc.backoff_max_s))
        self.started_at: float | None = None  # monotonic
        self.last_used: float = time.monotonic()
        self.last_health_check: float | None = None
        self.busy = 0  # calls anywhere between entry and answer (in_flight: those sent)
        self.retired = False
        self._callers: dict[object, ClientLink | None] = {}  # calls in flight, by whom (for relaying)
        self.stats = {
            "invocations": 0,
            "failures": 0,
            "starts": 0,
            "crashes": 0,
            "start_failures": 0,
            "health_checks": 0,
            "health_check_failures": 0,
        }
        self.last_error: str | None = None
        self.last_used_at: float | None = None  # wall clock, survives restarts through the event log
        if history is not None:
            self._restore(history)

    def _restore(self, history: StreamHistory) -> None:
        for stat, kinds in _STAT_EVENTS.items():
            self.stats[stat] = sum(history.counts.get(kind, 0) for kind in kinds)
        self.last_used_at = history.last_used_at
        self._cached_tools = history.tools

    # --- state ----------------------------------------------------------------------------

    def _transition(self, target: ProviderState, reason: str = "") -> None:
        """The only place state changes: checks the table and emits the event."""
        if target == self.state:
            return
        check_transition(self.id, self.state, target)
        old, self.state, self.state_reason = self.state, target, reason
        self._emit(ev.StateChanged(provider_id=self.id, at=time.time(), old=old, new=target, reason=reason))

    @property
    def running(self) -> bool:
        return self.state in RUNNING and self._session is not None and not self._session.closed

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The live tool list; before a start, the last one the provider reported (the event log
        keeps it across restarts of hangar), else the predefined one from config."""
        if self._live_tools is not None:
            return self._live_tools
        if self._cached_tools is not None:
            return self._cached_tools
        return [t.model_dump(by_alias=True, exclude_none=True) for t in self.spec.tools or ()]

    @property
    def tools_source(self) -> str | None:
        if self._live_tools is not None:
            return "live"
        if self._cached_tools is not None:
            return "cached"
        return "predefined" if self.spec.tools is not None else None

    @property
    def tools_known(self) -> bool:
        return self.tools_source is not None

    def _set_tools(self, tools: list[dict[str, Any]]) -> None:
        changed = tools != (self._live_tools if self._live_tools is not None else self._cached_tools)
        self._live_tools = tools
        if changed:
            self._emit(ev.ToolsListed(provider_id=self.id, at=time.time(), tools=tools))

    def tool(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tools if t.get("name") == name), None)

    # --- start ----------------------------------------------------------------------------

    async def ensure_started(self) -> RpcSession:
        """Start the provider if needed. Concurrent callers share one start (single flight)."""
        session = self._session
        if session is not None and not session.closed and self.state in RUNNING:
            return session
        if self.retired:
            # removed by a reload or discovery: it finishes what it has, and never starts again
            raise ConnectionLost(f"provider {self.id!r} was removed from the configuration", sent=False)
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_future()
            self._tg.start_soon(self._start, self._starting)
        # shield: one impatient caller must not cancel the start every other caller awaits
        return await asyncio.shield(self._starting)

    async def _start(self, done: asyncio.Future[RpcSession]) -> None:
        try:
            session = await self._launch()
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc if isinstance(exc, ProviderError) else StartFailed(str(exc)))
                done.exception()  # mark retrieved: no caller may be left to await it
            if not isinstance(exc, Exception):
                raise
        else:
            done.set_result(session)
        finally:
            self._starting = None

    async def _launch(self) -> RpcSession:
        if not isinstance(self.spec, SubprocessProvider | RemoteProvider | ContainerProvider):
            raise NotSupported(f"provider {self.id!r}: mode {self.spec.mode!r} cannot be started directly")
        recovery = self.spec.recovery
        if self.crashes.consecutive >= recovery.max_attempts:
            since = time.monotonic() - (self.crashes.last_crash_at or 0.0)
            if since < recovery.cooldown_s:
                raise BackingOff(
                    f"provider {self.id!r} is in a crash loop ({self.crashes.consecutive} failures in a row; "
                    f"last: {self.last_error}); it is not restarted automatically for another "
                    f"{recovery.cooldown_s - since:.0f}s: fix the cause, then call registry_start"
                )
            self.crashes.reset()  # the cool-down is over: try again from scratch
        if self.state == ProviderState.DEAD:
            self._emit(
                ev.RecoveryAttempt(
                    provider_id=self.id, at=time.time(), attempt=self.crashes.consecutive, mode=recovery.mode
                )
            )
        wait = self.crashes.wait_before_start(time.monotonic())
        if 0 < wait <= WAIT_OUT_BACKOFF_S:
            # A short pause costs the caller less than an error would.
            await anyio.sleep(wait)
        elif wait > 0:
            raise BackingOff(
                f"provider {self.id!r} crashed {self.crashes.consecutive} times in a row; "
                f"next start allowed in {wait:.1f}s (last error: {self.last_error})"
            )
        self._transition(ProviderState.INITIALIZING, "starting")
        t0 = time.monotonic()
        channel: Channel | None = None
        session: RpcSession | None = None
        try:
            if isinstance(self.spec, ContainerProvider):
                # present, built or pulled: a build has its own timeout, not startup_timeout_s
                await self._engine().ensure_image(self.id, self.spec, self._base_dir)
            with anyio.fail_after(self.spec.startup_timeout_s):
                channel = await self._open_channel()
                session = RpcSession(channel, self.id, self._on_notification, self._on_request)
                self._tg.start_soon(self._watch, session, channel)
                handshake = await session.open()
                tools = await session.list_tools() if "tools" in handshake.capabilities else []
        except BaseException as exc:
            if channel is not None:
                with anyio.CancelScope(shield=True):
                    await channel.close()
            if not isinstance(exc, Exception):
                # Cancelled (shutdown): no failure of the provider's, so nothing to count.
                self._transition(ProviderState.COLD, "start cancelled")
                raise
            message = self._start_error(exc, session, channel)
            self.stats["start_failures"] += 1
            self.last_error = message
            self.crashes.record_crash(time.monotonic(), None)
            self._emit(ev.ProviderStartFailed(provider_id=self.id, at=time.time(), error=message))
            self._transition(ProviderState.DEAD, message)
            self._after_failure()
            raise StartFailed(message) from None
        self._session, self._channel, self.handshake = session, channel, handshake
        self.started_at = self.last_used = time.monotonic()
        self.last_health_check = None
        self.health.record_success()
        self.stats["starts"] += 1
        startup_ms = (self.started_at - t0) * 1000
        self._emit(
            ev.ProviderStarted(
                provider_id=self.id,
                at=time.time(),
                pid=channel.pid,
                startup_ms=round(startup_ms, 2),
                tools=len(tools),
                protocol_version=handshake.protocol_version,
            )
        )
        self._set_tools(tools)
        self._transition(ProviderState.READY, "started")
        return session

    def _engine(self) -> Containers:
        if self._containers is None:
            self._containers = Containers()
        return self._containers

    async def _open_channel(self) -> Channel:
        if isinstance(self.spec, RemoteProvider):
            return await remote_launcher.connect(self.id, self.spec)
        if isinstance(self.spec, ContainerProvider):
            return await self._engine().launch(
                self.id, self.spec, base_dir=self._base_dir, on_stderr=self._log_stderr, secrets=self._secrets
            )
        assert isinstance(self.spec, SubprocessProvider)
        return await subprocess_launcher.spawn(
            self.id, self.spec, base_dir=self._base_dir, on_stderr=self._log_stderr, secrets=self._secrets
        )

    def _start_error(self, exc: BaseException, session: RpcSession | None, channel: Channel | None) -> str:
        if isinstance(exc, LaunchError):
            return str(exc)
        if isinstance(exc, TimeoutError):
            message = (
                f"provider {self.id!r} did not complete the MCP handshake within "
                f"{self.spec.startup_timeout_s:g}s (startup_timeout_s)"
            )
        elif isinstance(exc, ConnectionLost):
            message = f"provider {self.id!r} failed to start: {exc}"
            return message
        else:
            message = f"provider {self.id!r} failed to start: {exc}"
        if session is not None and session.last_garbage is not None:
            message += (
                f"; it wrote non-JSON to stdout, e.g. {session.last_garbage!r} "
                "(stdout must carry only MCP JSON-RPC messages; logs belong on stderr)"
            )
        if channel is not None and (tail := channel.stderr_tail()):
            message += f"; last stderr lines:\n{tail}"
        return message

    async def _on_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A provider's request of its client, relayed to the one client it can be for.

        A provider's request names no call, so it is relayed only when every call in flight on
        this provider comes from one client (one that can be asked: calls answered as plain JSON
        over HTTP cannot carry a request back, and count as another client). ``roots/list`` that
        cannot be relayed is answered with no roots, as a client without roots would.
        """
        if method not in CLIENT_METHODS:
            raise RemoteError(METHOD_NOT_FOUND, f"mcp-hangar does not relay {method!r}")
        callers = list(self._callers.values())
        link = callers[0] if callers else None
        if len({id(c) for c in callers}) > 1:
            if method == "roots/list":
                return {"roots": []}
            raise RemoteError(
                INTERNAL_ERROR,
                f"mcp-hangar cannot relay {method}: calls of several clients are in flight on provider "
                f"{self.id!r}, and the request does not say which call it belongs to",
            )
        if link is None or not link.supports(method):
            if method == "roots/list":
                return {"roots": []}
            why = (
                "the call has no client that can be asked (a plain JSON exchange over HTTP, or `mcp-hangar call`)"
                if link is None
                else f"the calling client did not declare {CLIENT_METHODS[method]!r} support"
            )
            raise RemoteError(METHOD_NOT_FOUND, f"mcp-hangar cannot relay {method}: {why}")
        return await link.request(method, params)

    def _log_stderr(self, line: str) -> None:
        log.info("provider.stderr", provider=self.id, line=line)

    async def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/tools/list_changed" and self._session is not None:
            with contextlib.suppress(ProviderError, TimeoutError):
                with anyio.fail_after(HEALTH_CHECK_TIMEOUT_S):
                    self._set_tools(await self._session.list_tools())
        elif method == "notifications/message":
            log.info("provider.log", provider=self.id, level=params.get("level"), data=params.get("data"))

    async def _watch(self, session: RpcSession, channel: Channel) -> None:
        """Owns one running instance: reads its messages, and notices when it dies."""
        try:
            await session.serve()
        finally:
            # Declared dead before the remains are cleared away (a container's removal takes a
            # moment): a call arriving meanwhile starts a new instance instead of finding this one.
            if self._session is session and not self._stopping:
                self._crashed(session, channel)
            with anyio.CancelScope(shield=True):
                await channel.close()

    def _crashed(self, session: RpcSession, channel: Channel) -> None:
        self._session = self._channel = None
        self.stats["crashes"] += 1
        now = time.monotonic()
        delay = self.crashes.record_crash(now, self.started_at)
        reason = f"provider {self.id!r} died (exit code {channel.exit_status()})"
        self.last_error = reason
        self._emit(
            ev.ProviderCrashed(
                provider_id=self.id,
                at=time.time(),
                exit_code=channel.exit_status(),
                consecutive=self.crashes.consecutive,
                restart_delay_s=round(delay, 3),
                stderr_tail=channel.stderr_tail(),
            )
        )
        log.warning("provider.crashed", provider=self.id, exit_code=channel.exit_status(), restart_in_s=delay)
        self._transition(ProviderState.DEAD, reason)
        self._after_failure()

    def _after_failure(self) -> None:
        """Declare a crash loop, or (eager recovery) schedule the next start in the background."""
        recovery = self.spec.recovery
        if self.crashes.consecutive >= recovery.max_attempts:
            self._emit(
                ev.CrashLoop(
                    provider_id=self.id,
                    at=time.time(),
                    failures=self.crashes.consecutive,
                    cooldown_s=recovery.cooldown_s,
                    last_error=self.last_error or "",
                )
            )
            log.error("provider.crash_loop", provider=self.id, failures=self.crashes.consecutive)
        elif recovery.mode == "eager" and not self._stopping:
            self._tg.start_soon(self._recover_eagerly)

    async def _recover_eagerly(self) -> None:
        await anyio.sleep(self.crashes.wait_before_start(time.monotonic()))
        if self.state == ProviderState.DEAD:
            with contextlib.suppress(ProviderError):
                await self.ensure_started()

    # --- calls ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests sent to the provider and not yet answered (tool calls and relayed ones)."""
        return len(self._callers)

    def offers(self, capability: str) -> bool:
        """Whether the running provider declared a capability (``prompts``, ``resources``)."""
        return self.running and self.handshake is not None and capability in self.handshake.capabilities

    async def relay(self, method: str, params: dict[str, Any] | None = None, *, listing: str | None = None) -> Any:
        """A request other than a tool call (prompts, resources) on this provider, started if
        needed; with ``listing``, every page of that list. Not recorded as a tool call."""
        session = await self.ensure_started()
        self.busy += 1
        token = object()
        self._callers[token] = None  # a caller that cannot be asked anything back
        try:
            with anyio.fail_after(self.spec.call_timeout_s):
                if listing is not None:
                    return await session.list_all(method, listing)
                return await session.request(method, params)
        except TimeoutError:
            raise CallTimeout(
                f"provider {self.id!r}: {method} did not answer within {self.spec.call_timeout_s:g}s"
            ) from None
        finally:
            self.busy -= 1
            del self._callers[token]
            self.last_used = time.monotonic()

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
        """Call one tool; returns the provider's result as it sent it."""
        self.busy += 1  # from the first moment: a reload drains calls still starting or queued too
        try:
            return await self._call_tool(tool, arguments, timeout, on_progress, correlation_id, principal, client)
        finally:
            self.busy -= 1

    async def _call_tool(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        timeout: float | None,
        on_progress: ProgressFn | None,
        correlation_id: str | None,
        principal: str | None,
        client: ClientLink | None,
    ) -> dict[str, Any]:
        was = self.breaker.state
        wait = self.breaker.allow(time.monotonic())
        if was != self.breaker.state:
            self._emit(ev.CircuitChanged(provider_id=self.id, at=time.time(), state=self.breaker.state.value))
        if wait > 0:
            raise CircuitOpen(
                f"provider {self.id!r}: circuit breaker open after repeated failures (last: {self.last_error}); "
                f"the call was not sent; next attempt allowed in {wait:.1f}s"
            )
        try:
            session = await self.ensure_started()
        except StartFailed:
            self._breaker_failure("the provider could not be started")
            raise
        if self._backpressure is not None and self._backpressure.backlogged:
            await self._backpressure.room()
        params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
        async with self._slots:
            token = object()
            self._callers[token] = client
            self.stats["invocations"] += 1
            t0 = time.monotonic()
            self.last_used_at = time.time()
            self._emit(
                ev.ToolInvoked(
                    provider_id=self.id,
                    at=self.last_used_at,
                    tool=tool,
                    arguments=arguments,
                    correlation_id=correlation_id,
                    principal=principal,
                )
            )
            try:
                with tracing.client_span(self.tracer, self.id, tool) as trace_meta:
                    if trace_meta is not None:
                        params["_meta"] = trace_meta  # the provider may join the caller's trace
                    with anyio.fail_after(timeout or self.spec.call_timeout_s):
                        result = await session.request("tools/call", params, on_progress=on_progress)
            except TimeoutError:
                self._failed(tool, t0, correlation_id, "timed out", principal=principal)
                raise CallTimeout(
                    f"provider {self.id!r}: tool {tool!r} did not answer within "
                    f"{timeout or self.spec.call_timeout_s:g}s; the request was cancelled"
                ) from None
            except ConnectionLost as exc:
                self._failed(tool, t0, correlation_id, str(exc), principal=principal)
                raise
            except RemoteError as exc:
                # The provider is alive and answered; its protocol error is no health problem.
                self._failed(tool, t0, correlation_id, str(exc), health=False, principal=principal)
                self._breaker_success()
                raise
            except BaseException as exc:
                # Every invoked call ends in an event, so the log and the in-flight gauge stay
                # balanced; usually the caller went away (client cancellation, shutdown).
                cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
                reason = "cancelled by the caller" if cancelled else repr(exc)
                self._failed(tool, t0, correlation_id, reason, health=False, principal=principal)
                raise
            finally:
                del self._callers[token]
                self.last_used = time.monotonic()
        if self.state == ProviderState.DEGRADED:
            self._recovered()
        else:
            self.health.record_success()
        self._breaker_success()
        self._emit(
            ev.ToolCompleted(
                provider_id=self.id,
                at=time.time(),
                tool=tool,
                duration_ms=round((self.last_used - t0) * 1000, 3),
                is_error=bool(result.get("isError")),
                result=result,
                correlation_id=correlation_id,
                principal=principal,
            )
        )
        return result

    def _failed(
        self,
        tool: str,
        t0: float,
        correlation_id: str | None,
        error: str,
        health: bool = True,
        principal: str | None = None,
    ) -> None:
        self.stats["failures"] += 1
        self.last_error = error
        self._emit(
            ev.ToolFailed(
                provider_id=self.id,
                at=time.time(),
                tool=tool,
                duration_ms=round((time.monotonic() - t0) * 1000, 3),
                error=error,
                correlation_id=correlation_id,
                principal=principal,
            )
        )
        if health:
            self._breaker_failure(error)
        if health and self.health.record_failure(error) and self.state == ProviderState.READY:
            self._transition(ProviderState.DEGRADED, f"{self.health.consecutive_failures} failures in a row")

    def _breaker_success(self) -> None:
        if self.breaker.record_success() is not None:
            self._emit(
                ev.CircuitChanged(provider_id=self.id, at=time.time(), state="closed", reason="a call succeeded")
            )

    def _breaker_failure(self, error: str) -> None:
        if self.breaker.record_failure(time.monotonic()) is not None:
            log.warning("provider.circuit_open", provider=self.id, reason=error)
            self._emit(ev.CircuitChanged(provider_id=self.id, at=time.time(), state="open", reason=error))

    def _recovered(self) -> None:
        self.health.record_success()
        self._transition(ProviderState.READY, "healthy again")

    # --- health and stop ------------------------------------------------------------------

    async def check_health(self) -> bool:
        session = self._session
        if session is None or session.closed or self.state not in RUNNING:
            return False
        t0 = time.monotonic()
        self.last_health_check = t0
        self.stats["health_checks"] += 1
        try:
            with anyio.fail_after(min(HEALTH_CHECK_TIMEOUT_S, self.spec.health_check_interval_s)):
                await session.ping()
        except (ProviderError, TimeoutError) as exc:
            error = "no answer to ping" if isinstance(exc, TimeoutError) else str(exc)
            self.stats["health_check_failures"] += 1
            self.last_error = f"health check failed: {error}"
            degraded = self.health.record_failure(error)
            self._emit(
                ev.HealthCheckFailed(
                    provider_id=self.id,
                    at=time.time(),
                    error=error,
                    consecutive_failures=self.health.consecutive_failures,
                )
            )
            if degraded and self.state == ProviderState.READY and self._session is session:
                self._transition(ProviderState.DEGRADED, f"health check failed: {error}")
            return False
        duration_ms = (time.monotonic() - t0) * 1000
        self._emit(ev.HealthCheckPassed(provider_id=self.id, at=time.time(), duration_ms=round(duration_ms, 3)))
        if self.state == ProviderState.DEGRADED:
            self._recovered()
        else:
            self.health.record_success()
        return True

    def restart_allowed(self) -> None:
        """An explicit start (registry_start) ends a crash loop: the operator says to try again."""
        if self.state == ProviderState.DEAD:
            self.crashes.reset()

    async def stop(self, reason: str = "stopped") -> bool:
        """Stop the running instance, if any. Returns whether anything was stopped."""
        starting = self._starting
        if starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        session, channel = self._session, self._channel
        if session is None or channel is None:
            if self.state == ProviderState.DEAD:
                self.crashes.reset()
                self._transition(ProviderState.COLD, reason)
            return False
        self._stopping = True
        session.closing_because(f"provider {self.id!r} was stopped ({reason})")
        try:
            self._session = self._channel = None
            self._transition(ProviderState.COLD, reason)
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_S):
                await channel.close()
            self._emit(ev.ProviderStopped(provider_id=self.id, at=time.time(), reason=reason))
        finally:
            self._stopping = False
        return True

    def idle_for(self, now: float) -> float:
        return now - self.last_used if self.in_flight == 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.spec.mode,
            "state": self.state.value,
            "description": self.spec.description,
            "tools": len(self.tools) if self.tools_known else None,
            "in_flight": self.in_flight,
            "pid": self._channel.pid if self._channel is not None else None,
            **({"container": self._channel.container_id[:12]} if isinstance(self._channel, ContainerChannel) else {}),
            "protocol_version": self.handshake.protocol_version if self.handshake and self.running else None,
        }
