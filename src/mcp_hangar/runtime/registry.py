"""All providers by id, and the background loops that keep them in shape."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import anyio
import anyio.abc
import structlog

from mcp_hangar.config import Config, GroupProvider
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.errors import UnknownProvider
from mcp_hangar.domain.states import RUNNING
from mcp_hangar.launchers.container import Containers
from mcp_hangar.runtime.group import Group
from mcp_hangar.runtime.provider import Backpressure, EventSink, Provider
from mcp_hangar.store.base import StreamHistory

log = structlog.get_logger("mcp_hangar.registry")

TICK_S = 0.5  # how often the idle and health loops look at the providers


class Registry:
    def __init__(
        self,
        config: Config,
        *,
        base_dir: Path,
        emit: EventSink,
        task_group: anyio.abc.TaskGroup,
        histories: Mapping[str, StreamHistory] | None = None,
        backpressure: Backpressure | None = None,
        secrets: frozenset[str] = frozenset(),
        containers: Containers | None = None,
    ) -> None:
        self._emit = emit
        self._tg = task_group
        histories = histories or {}
        self._providers = {
            pid: Provider(
                pid,
                spec,
                base_dir=base_dir,
                emit=emit,
                task_group=task_group,
                history=histories.get(pid),
                backpressure=backpressure,
                secrets=secrets,
                containers=containers,
            )
            for pid, spec in config.providers.items()
            if not isinstance(spec, GroupProvider)
        }
        self._groups = {
            gid: Group(gid, spec, [self._providers[m.id] for m in spec.members], emit)
            for gid, spec in config.providers.items()
            if isinstance(spec, GroupProvider)
        }
        self._checking: set[str] = set()

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers.values())

    def __len__(self) -> int:
        return len(self._providers)

    def get(self, provider_id: str) -> Provider | Group:
        found = self._providers.get(provider_id) or self._groups.get(provider_id)
        if found is None:
            known = ", ".join(sorted([*self._providers, *self._groups])) or "none configured"
            raise UnknownProvider(f"unknown provider {provider_id!r} (known: {known})")
        return found

    def groups(self) -> list[Group]:
        return list(self._groups.values())

    def start_background(self) -> None:
        self._tg.start_soon(self._idle_loop)
        self._tg.start_soon(self._health_loop)

    async def _idle_loop(self) -> None:
        while True:
            await anyio.sleep(TICK_S)
            now = time.monotonic()
            for provider in self:
                idle = provider.idle_for(now)
                if provider.state in RUNNING and idle >= provider.spec.idle_ttl_s:
                    self._tg.start_soon(self._stop_idle, provider, idle)

    async def _stop_idle(self, provider: Provider, idle: float) -> None:
        # Re-check: a call may have arrived between the scan and now.
        if provider.idle_for(time.monotonic()) < provider.spec.idle_ttl_s:
            return
        if await provider.stop("idle"):
            self._emit(ev.IdleStopped(provider_id=provider.id, at=time.time(), idle_s=round(idle, 3)))

    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(TICK_S)
            now = time.monotonic()
            for provider in self:
                if provider.state not in RUNNING or provider.id in self._checking:
                    continue
                last = provider.last_health_check or provider.started_at or now
                if now - last >= provider.spec.health_check_interval_s:
                    self._checking.add(provider.id)
                    self._tg.start_soon(self._check, provider)

    async def _check(self, provider: Provider) -> None:
        try:
            await provider.check_health()
        finally:
            self._checking.discard(provider.id)

    async def stop_all(self, reason: str = "shutdown") -> None:
        """Stop every provider at once; used on shutdown, so it shields itself from cancellation."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for provider in self:
                    tg.start_soon(provider.stop, reason)
