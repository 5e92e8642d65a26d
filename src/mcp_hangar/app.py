"""The composition root: builds the running system from a Config, owns its task group, and takes
it down again so that no task and no provider process outlives it."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from mcp_hangar.config import (
    LOOPBACK,
    Config,
    ConfigError,
    ContainerProvider,
    LoadedConfig,
    SubprocessProvider,
    load_config,
)
from mcp_hangar.discovery.reconcile import Discovery
from mcp_hangar.discovery.sources import Found, build_sources
from mcp_hangar.domain import events as ev
from mcp_hangar.launchers.channel import MIN_SECRET_LENGTH
from mcp_hangar.launchers.container import Containers
from mcp_hangar.observability import logs
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Guard
from mcp_hangar.server.aggregate import ListChanged
from mcp_hangar.server.fastpath import FastPath
from mcp_hangar.server.mcp import build_server
from mcp_hangar.server.stdio import stdio_transport
from mcp_hangar.store import make_store
from mcp_hangar.store.base import StreamHistory
from mcp_hangar.store.encode import Encoder, secrets_from
from mcp_hangar.store.writer import EventWriter

if TYPE_CHECKING:  # imported when needed: a plain stdio start need not pay for them
    from mcp_hangar.observability.metrics import Metrics
    from mcp_hangar.observability.tracing import Tracing
    from mcp_hangar.security.auth import Authenticator

log = structlog.get_logger("mcp_hangar")

# Per-call events are many and cheap; they are logged at debug so the call path stays quiet.
_CALL_EVENTS = (ev.ToolInvoked, ev.ToolCompleted, ev.HealthCheckPassed)
# Events after which the aggregated lists may differ (prompts and resources: of running providers).
_TOOLS_EVENTS = (
    ev.ToolsListed,
    ev.ConfigReloaded,
    ev.DiscoveryApplied,
    ev.ProviderStarted,
    ev.ProviderStopped,
    ev.ProviderCrashed,
)
FIRST_DISCOVERY_S = 10.0  # hangar serves after this even if a discovery source is slow
WATCH_RETRY_S = 5.0  # --watch: after the watched folder failed, try again this much later


class Hangar:
    def __init__(self, loaded: LoadedConfig, *, log_calls: bool = False, watch_config: bool = False) -> None:
        self.loaded = loaded
        self._watch_config = watch_config
        self.config = loaded.config
        self.registry: Registry | None = None
        self.writer: EventWriter | None = None
        self._log_calls = log_calls
        self.secrets = _secrets(loaded)
        self.masker = logs.Masker(self.secrets)  # log lines: cli.py installs it
        self.discovered: dict[str, Found] = {}
        self.discovery: Discovery | None = None
        self.list_changed = ListChanged()  # aggregated mode: clients told when provider tools change
        self.tracing: Tracing | None = None  # made in running(), when tracing.enabled
        self.replica_id = self.config.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics: Metrics | None = None
        self.guard = Guard(self.config, self.emit)
        # The container engine, found on first use (never, without container providers).
        self.containers = Containers(self.config.container.host)

    def emit(self, event: ev.DomainEvent) -> None:
        """Where every domain event goes: the event log, and the log. Per-call events are only
        logged at debug level, and not even formatted otherwise: this runs on the call path."""
        if self.writer is not None:
            self.writer.emit(event)
        if self.metrics is not None:
            self.metrics.observe(event)
        if isinstance(event, _TOOLS_EVENTS) and self.config.aggregate.enabled:
            self.list_changed.changed()
        if not isinstance(event, _CALL_EVENTS):
            log.info(event.kind, **_fields(event))
        elif self._log_calls:
            log.debug(event.kind, **_fields(event))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[tuple[Registry, anyio.abc.TaskGroup]]:
        """The assembled system: event store open, registry built from the config and the log,
        background loops running. On exit every provider is stopped and every event written."""
        store = (
            make_store(self.config.event_store, self.loaded.path.parent) if self.config.event_store.enabled else None
        )
        histories: dict[str, StreamHistory] = {}
        if store is not None:
            await store.open()
        try:
            async with anyio.create_task_group() as tg:
                if store is not None:
                    histories = await store.histories()
                    encoder = Encoder(self._audit_modes(self.config), self.secrets)
                    self.writer = EventWriter(store, encoder, self.replica_id, self.config.event_store.max_backlog)
                    tg.start_soon(self.writer.run)
                if self.config.tracing.enabled:
                    from mcp_hangar.observability.tracing import Tracing

                    self.tracing = Tracing(self.config.tracing, self.replica_id)
                self.registry = Registry(
                    self.config,
                    base_dir=self.loaded.path.parent,
                    emit=self.emit,
                    task_group=tg,
                    histories=histories,
                    backpressure=self.writer,
                    secrets=frozenset(self.secrets),
                    containers=self.containers,
                    tracer=self.tracing.tracer if self.tracing is not None else None,
                )
                self.registry.aggregate = self.config.aggregate
                self.list_changed.attach(tg)
                self.registry.start_background()
                if any(isinstance(p, ContainerProvider) for p in self.config.providers.values()):
                    tg.start_soon(self._remove_leftovers, self.containers)
                if self._watch_config:
                    tg.start_soon(self._reload_on_change)
                if self.config.discovery.sources:
                    await self._start_discovery(self.registry, tg)
                try:
                    yield self.registry, tg
                finally:
                    await self.registry.stop_all()
                    if self.writer is not None:
                        await self.writer.close()
                    tg.cancel_scope.cancel()
        finally:
            if self.discovery is not None:
                with anyio.CancelScope(shield=True):
                    await self.discovery.close()
            self.containers.close()
            if self.tracing is not None:
                await anyio.to_thread.run_sync(self.tracing.shutdown)  # the last spans go out
            if store is not None:
                with anyio.CancelScope(shield=True):
                    await store.close()

    async def reload(self) -> None:
        """Read the config file again and apply its providers and groups (SIGHUP).

        A file that does not load is refused as a whole and changes nothing. Sections other than
        providers and rate limits (server, auth, event store, logging, container engine) take a
        restart; a reload that changes them says so.
        """
        assert self.registry is not None
        try:
            loaded = load_config(self.loaded.path)
        except ConfigError as exc:
            log.error("config.reload_refused", problems=exc.problems)
            self.emit(ev.ConfigReloadFailed(provider_id=ev.CONFIG_STREAM, at=time.time(), error=str(exc)))
            return
        new = loaded.config
        not_applied = [
            name
            for name in ("server", "auth", "event_store", "logging", "container", "discovery", "tracing", "replica_id")
            if getattr(new, name) != getattr(self.config, name)
        ]
        # Old secrets stay masked too: providers being drained still print and fail with them.
        self._add_secrets(_secrets(loaded))
        self.registry.aggregate = new.aggregate
        applied = self._apply_providers(new)
        self.loaded, self.config = loaded, new
        self.emit(dataclasses.replace(applied, not_applied=not_applied))
        if not_applied:
            log.warning("config.reload_needs_restart", sections=not_applied)

    async def safe_reload(self) -> None:
        """A reload that fails in an unexpected way is reported, and hangar keeps serving."""
        try:
            await self.reload()
        except Exception as exc:
            log.exception("config.reload_failed")
            self.emit(ev.ConfigReloadFailed(provider_id=ev.CONFIG_STREAM, at=time.time(), error=str(exc)))

    def _add_secrets(self, found: set[str] | frozenset[str]) -> None:
        found = {value for value in found if len(value) >= MIN_SECRET_LENGTH}  # "1" is no secret to mask
        if found <= self.secrets:
            return
        self.secrets |= found
        self.masker.add(self.secrets)  # the event encoder takes them in _apply_providers

    def _audit_modes(self, config: Config) -> dict[str, str]:
        modes = {pid: spec.audit.arguments for pid, spec in config.providers.items()}
        return {**{pid: f.spec.audit.arguments for pid, f in self.discovered.items()}, **modes}

    def _apply_providers(self, static: Config) -> ev.ConfigReloaded:
        """Make the registry hold the config file's providers plus the discovered ones (the file
        wins where both name an id); guard, metrics and the event encoder follow."""
        assert self.registry is not None
        discovered = {pid: f for pid, f in self.discovered.items() if pid not in static.providers}
        merged = static.model_copy(
            update={"providers": {**{pid: f.spec for pid, f in discovered.items()}, **static.providers}}
        )
        if self.writer is not None:
            self.writer.encoder = Encoder(self._audit_modes(static), self.secrets)
        self.guard.reconfigure(merged)
        if self.metrics is not None:
            self.metrics.providers_known(list(merged.providers))
        base_dirs = {pid: f.base_dir for pid, f in discovered.items()}
        return self.registry.apply(merged, frozenset(self.secrets), base_dirs=base_dirs)

    def _apply_discovered(
        self, found: dict[str, Found], trigger: str, secrets: frozenset[str]
    ) -> tuple[dict[str, list[str]], list[str]]:
        """Discovery's result: applied at once; ids the config file defines are refused."""
        shadowed = sorted(pid for pid in found if pid in self.config.providers)
        self.discovered = {pid: f for pid, f in found.items() if pid not in self.config.providers}
        self._add_secrets(secrets)
        applied = self._apply_providers(self.config)
        changes = {"added": applied.added, "removed": applied.removed, "changed": applied.changed}
        if any(changes.values()):
            self.emit(ev.DiscoveryApplied(provider_id=ev.DISCOVERY_STREAM, at=time.time(), trigger=trigger, **changes))
        return changes, shadowed

    async def _start_discovery(self, registry: Registry, tg: anyio.abc.TaskGroup) -> None:
        """The first cycle before serving (bounded, so a slow source cannot hold hangar up), then
        watchers and periodic rescans in the background."""
        spec = self.config.discovery
        sources = build_sources(spec.sources, self.loaded.path.parent, self.containers)
        self.discovery = registry.discovery = Discovery(spec, sources, self._apply_discovered)
        with anyio.move_on_after(FIRST_DISCOVERY_S):
            await self.discovery.safe_cycle("start")
        tg.start_soon(self.discovery.follow, tg)

    async def _reload_on_change(self) -> None:
        """--watch: reload when the config file's content changes. The folder is watched, not the
        file, so editors that write a new file and rename it, and Kubernetes ConfigMap volumes
        (which swap a ``..data`` symlink), are seen too."""
        from watchfiles import awatch

        path = self.loaded.path
        seen = _read_bytes(path)
        names = {path.name, "..data"}
        log.info("config.watching", path=str(path))
        while True:
            try:
                async for _ in awatch(
                    path.parent,
                    watch_filter=lambda _, changed: Path(changed).name in names,
                    debounce=300,
                    recursive=False,
                ):
                    content = _read_bytes(path)
                    if content == seen or content is None:
                        continue  # touched, or gone for a moment in the middle of a write
                    seen = content
                    log.info("config.reloading", path=str(path), trigger="file changed")
                    await self.safe_reload()
            except Exception as exc:  # the folder went away, say: watch again when it is back
                log.warning("config.watch_failed", path=str(path), error=str(exc)[:200])
            await anyio.sleep(WATCH_RETRY_S)

    @staticmethod
    async def _remove_leftovers(containers: Containers) -> None:
        """Containers a crashed hangar on this host left behind are removed at start."""
        try:
            removed = await containers.remove_leftovers()
        except Exception as exc:
            # No engine yet, or it failed: not fatal until a container provider is called, which
            # says so then.
            log.warning("container.engine_unreachable", error=(str(exc) or type(exc).__name__).splitlines()[0])
            return
        if removed:
            log.info("container.leftovers_removed", count=len(removed))

    async def call_once(self, provider: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One tool call without serving (``mcp-hangar call``): start what it needs, call it the
        way ``registry_invoke`` would (validation, events), stop everything, return the result."""
        from mcp_types.version import LATEST_HANDSHAKE_VERSION

        from mcp_hangar.server import tools
        from mcp_hangar.server.fastpath import shape_result

        async with self.running() as (registry, _):
            context = tools.ToolContext(
                registry, self.writer, LATEST_HANDSHAKE_VERSION, guard=self.guard, validator=self.guard.validator
            )
            result = await tools.call(
                context, "registry_invoke", {"provider": provider, "tool": tool, "arguments": arguments}
            )
            return shape_result(result, LATEST_HANDSHAKE_VERSION, {})

    async def serve_stdio(self) -> None:
        """Serve one MCP client over stdin/stdout until it hangs up or we are signalled."""
        async with self.running() as (registry, tg):
            tg.start_soon(_on_signals, tg.cancel_scope, self)
            server = build_server(registry, self.writer, self.guard, self.list_changed)
            log.info(
                "hangar.started",
                transport="stdio",
                providers=len(registry),
                config=str(self.loaded.path),
                event_store=self.writer.store.description if self.writer else "off",
            )
            async with stdio_transport() as wire:
                if wire.lines is not None:
                    fast = FastPath(registry, self.writer, self.guard, wire.send, server.server_info_stamp, tg)
                    wire.take = fast.take
                await server.run(wire.incoming, wire.outgoing, server.create_initialization_options())
            log.info("hangar.stopping", reason="stdin closed")
        log.info("hangar.stopped")

    async def serve_http(self, host: str, port: int, *, stateless: bool) -> None:
        """Serve many MCP clients over HTTP until signalled."""
        from mcp_hangar.observability.metrics import Metrics
        from mcp_hangar.server import http

        sock = http.bind(host, port)  # a taken port fails here, before anything starts
        self.metrics = Metrics(list(self.config.providers), self._known_tool)
        readiness = http.Readiness(store_ok=lambda: self.writer is None or self.writer.running)
        try:
            async with self.running() as (registry, tg):
                tg.start_soon(_on_signals, tg.cancel_scope, self)
                server = build_server(registry, self.writer, self.guard, self.list_changed)
                authenticator = await self._authenticator(host, tg)
                app = http.build_app(
                    server,
                    host=host,
                    stateless=stateless,
                    metrics=self.metrics,
                    readiness=readiness,
                    guard=self.guard,
                    authenticator=authenticator,
                    registry=registry,
                    events=self.writer,
                )
                readiness.started = True
                bound_host, bound_port = sock.getsockname()[:2]
                log.info(
                    "hangar.started",
                    transport="http",
                    url=f"http://{_url_host(bound_host)}:{bound_port}/mcp",
                    stateless=stateless,
                    auth="on" if authenticator else "off",
                    providers=len(registry),
                    config=str(self.loaded.path),
                    event_store=self.writer.store.description if self.writer else "off",
                )
                try:
                    await http.serve(app, sock)
                finally:
                    readiness.stopping = True
        finally:
            sock.close()
        log.info("hangar.stopped")

    async def _authenticator(self, host: str, tg: anyio.abc.TaskGroup) -> Authenticator | None:
        """Authentication is on when configured so, and by default off loopback."""
        from mcp_hangar.security.auth import Authenticator

        settings = self.config.auth
        enabled = settings.enabled if settings.enabled is not None else host not in LOOPBACK
        if not enabled:
            if host not in LOOPBACK:
                log.warning("hangar.unauthenticated", host=host, hint="anyone who can reach this address can use it")
            return None
        store = self.writer.store if self.writer is not None else None
        authenticator = Authenticator(settings, store, self.emit)
        await authenticator.refresh_keys()
        tg.start_soon(authenticator.keep_keys_fresh)
        if settings.jwt is None and not authenticator.has_keys:
            log.warning("hangar.no_credentials", hint="no API key exists yet: mcp-hangar keys create --name N --role R")
        return authenticator

    def _known_tool(self, provider: str, tool: str) -> bool:
        found = self.registry.lookup(provider) if self.registry is not None else None
        return found is not None and found.tool(tool) is not None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Large or sensitive payloads stay out of log lines; the event store keeps what it may of them.
_NOT_LOGGED = ("arguments", "result", "tools")


def _fields(event: ev.DomainEvent) -> dict[str, Any]:
    data = event.to_dict()
    data.pop("kind", None)
    data.pop("at", None)
    if isinstance(data.get("tools"), list):
        data["tools_count"] = len(data["tools"])
    for key in _NOT_LOGGED:
        data.pop(key, None)
    return {k: v.value if isinstance(v, Enum) else v for k, v in data.items()}


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _secrets(loaded: LoadedConfig) -> set[str]:
    envs = (p.env for p in loaded.config.providers.values() if isinstance(p, SubprocessProvider | ContainerProvider))
    return secrets_from(envs, os.environ, loaded.from_environment)


async def _on_signals(scope: anyio.CancelScope, hangar: Hangar) -> None:
    """SIGTERM and SIGINT stop hangar; SIGHUP reloads the configuration."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("config.reloading", path=str(hangar.loaded.path))
                await hangar.safe_reload()
                continue
            log.info("hangar.stopping", reason=signal.Signals(signum).name)
            scope.cancel()
            return
