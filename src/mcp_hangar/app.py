"""The composition root: builds the running system from a Config, owns its task group, and takes
it down again so that no task and no provider process outlives it."""

from __future__ import annotations

import signal
from enum import Enum
from typing import Any

import anyio
import anyio.abc
import structlog

from mcp_hangar.config import LoadedConfig
from mcp_hangar.domain import events as ev
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.server.fastpath import FastPath
from mcp_hangar.server.mcp import build_server
from mcp_hangar.server.stdio import stdio_transport

log = structlog.get_logger("mcp_hangar")

# Per-call events are many and cheap; they are logged at debug so the call path stays quiet.
_CALL_EVENTS = (ev.ToolInvoked, ev.ToolCompleted, ev.HealthCheckPassed)


class Hangar:
    def __init__(self, loaded: LoadedConfig, *, log_calls: bool = False) -> None:
        self.loaded = loaded
        self.registry: Registry | None = None
        self._log_calls = log_calls

    def emit(self, event: ev.DomainEvent) -> None:
        """Where every domain event goes. Per-call events are only logged at debug level, and
        are not even formatted otherwise: this runs on the call path."""
        if not isinstance(event, _CALL_EVENTS):
            log.info(event.kind, **_fields(event))
        elif self._log_calls:
            log.debug(event.kind, **_fields(event))

    async def serve_stdio(self) -> None:
        """Serve one MCP client over stdin/stdout until it hangs up or we are signalled."""
        async with anyio.create_task_group() as tg:
            registry = self._open(tg)
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            server = build_server(registry)
            log.info("hangar.started", transport="stdio", providers=len(registry), config=str(self.loaded.path))
            try:
                async with stdio_transport() as wire:
                    if wire.lines is not None:
                        wire.take = FastPath(registry, wire.send, server.server_info_stamp, tg).take
                    await server.run(wire.incoming, wire.outgoing, server.create_initialization_options())
                log.info("hangar.stopping", reason="stdin closed")
            finally:
                await registry.stop_all()
                tg.cancel_scope.cancel()
        log.info("hangar.stopped")

    def _open(self, tg: anyio.abc.TaskGroup) -> Registry:
        self.registry = Registry(self.loaded.config, base_dir=self.loaded.path.parent, emit=self.emit, task_group=tg)
        self.registry.start_background()
        return self.registry


def _fields(event: ev.DomainEvent) -> dict[str, Any]:
    data = event.to_dict()
    data.pop("kind", None)
    data.pop("at", None)
    return {k: v.value if isinstance(v, Enum) else v for k, v in data.items()}


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("hangar.stopping", reason=signal.Signals(signum).name)
            scope.cancel()
            return
