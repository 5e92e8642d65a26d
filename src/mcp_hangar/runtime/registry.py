"""All providers by id, and the background loops that keep them in shape."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from mcp_hangar.config import AggregateConfig, Config, GroupProvider, ProviderConfig
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.errors import UnknownProvider
from mcp_hangar.domain.states import RUNNING
from mcp_hangar.launchers.container import Containers
from mcp_hangar.runtime.group import Group
from mcp_hangar.runtime.provider import Backpressure, EventSink, Provider
from mcp_hangar.store.base import StreamHistory

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from mcp_hangar.discovery.reconcile import Discovery

log = structlog.get_logger("mcp_hangar.registry")

TICK_S = 0.5  # how often the idle and health loops look at the providers
DRAIN_POLL_S = 0.05


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
        tracer: Tracer | None = None,
    ) -> None:
        self._emit = emit
        self.tracer = tracer  # None: tracing is off
        self._tg = task_group
        self._base_dir = base_dir
        self._backpressure = backpressure
        self.secrets = secrets
        self._containers = containers
        histories = histories or {}
        self._providers = {
            pid: self._make_provider(pid, spec, histories.get(pid))
            for pid, spec in config.providers.items()
            if not isinstance(spec, GroupProvider)
        }
        self._groups = {
            gid: Group(gid, spec, [self._providers[m.id] for m in spec.members], emit)
            for gid, spec in config.providers.items()
            if isinstance(spec, GroupProvider)
        }
        self._checking: set[str] = set()
        self._retiring: set[Provider] = set()  # removed by a reload, finishing their calls
        self.discovery: Discovery | None = None  # set by the app when discovery sources are configured
        self.aggregate: AggregateConfig | None = None  # provider tools served directly (server/aggregate.py)

    def _make_provider(
        self, pid: str, spec: ProviderConfig, history: StreamHistory | None = None, base_dir: Path | None = None
    ) -> Provider:
        return Provider(
            pid,
            spec,
            base_dir=base_dir or self._base_dir,
            emit=self._emit,
            task_group=self._tg,
            history=history,
            backpressure=self._backpressure,
            secrets=self.secrets,
            containers=self._containers,
            tracer=self.tracer,
        )

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

    def lookup(self, provider_id: str) -> Provider | Group | None:
        """Like ``get``, without raising, and also finding providers a reload removed that are
        still finishing their calls (their events keep arriving)."""
        found = self._providers.get(provider_id) or self._groups.get(provider_id)
        return found or next((p for p in self._retiring if p.id == provider_id), None)

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
                for provider in [*self, *self._retiring]:
                    tg.start_soon(provider.stop, reason)

    # --- reload ---------------------------------------------------------------------------

    def apply(
        self, config: Config, secrets: frozenset[str] | None = None, base_dirs: Mapping[str, Path] | None = None
    ) -> ev.ConfigReloaded:
        """Make the providers and groups those of ``config``, at once and without dropping a call.

        A provider that is gone, or whose definition changed, leaves the registry now (new calls
        no longer reach it), finishes the calls it has, then stops; a changed one is replaced by a
        fresh instance that starts on its next call. Unchanged providers keep running untouched.
        Groups take their new member sets from the next call on. ``base_dirs`` gives providers
        that were not defined in the config file (discovered ones) their own folder for relative paths.
        """
        if secrets is not None:
            self.secrets = secrets
        now = time.time()
        new_specs = {pid: spec for pid, spec in config.providers.items() if not isinstance(spec, GroupProvider)}
        group_specs: dict[str, GroupProvider] = {}
        for gid, spec in config.providers.items():
            if not isinstance(spec, GroupProvider):
                continue
            missing = [m.id for m in spec.members if m.id not in new_specs]
            if missing:  # (a config file cannot say this; a discovered group could): left out whole
                log.error("registry.group_without_members", group=gid, missing=missing)
            else:
                group_specs[gid] = spec
        added = [pid for pid in new_specs if pid not in self._providers]
        removed = [pid for pid in self._providers if pid not in new_specs]
        changed = [
            pid for pid, spec in new_specs.items() if pid in self._providers and self._providers[pid].spec != spec
        ]
        for pid in [*removed, *changed]:
            old = self._providers.pop(pid)
            why = "removed from the configuration" if pid in removed else "its configuration changed"
            self._retire(old, why)
        for pid in [*added, *changed]:
            self._providers[pid] = self._make_provider(pid, new_specs[pid], base_dir=(base_dirs or {}).get(pid))
        groups: dict[str, Group] = {}
        old_groups = {gid: g.spec for gid, g in self._groups.items()}
        for gid, spec in group_specs.items():
            members = [self._providers[m.id] for m in spec.members]
            group = self._groups.get(gid)
            if group is None:
                groups[gid] = Group(gid, spec, members, self._emit)
                continue
            before = [m.id for m in group.members]
            swapped = [m.id for m in group.members if self._providers.get(m.id) is not m]
            group.update(spec, members)
            after = [m.id for m in members]
            if before != after or swapped:
                self._emit(
                    ev.GroupRebalanced(
                        provider_id=gid,
                        at=now,
                        members=after,
                        added=[m for m in after if m not in before or m in swapped],
                        removed=[m for m in before if m not in after or m in swapped],
                    )
                )
            groups[gid] = group
        added += [gid for gid in groups if gid not in self._groups]
        removed += [gid for gid in self._groups if gid not in groups]
        changed += [gid for gid, g in groups.items() if gid in self._groups and g.spec != old_groups.get(gid)]
        self._groups = groups
        return ev.ConfigReloaded(
            provider_id=ev.CONFIG_STREAM, at=now, added=added, removed=removed, changed=changed, not_applied=[]
        )

    def _retire(self, provider: Provider, why: str) -> None:
        provider.retired = True
        self._retiring.add(provider)
        self._tg.start_soon(self._drain_then_stop, provider, why)

    async def _drain_then_stop(self, provider: Provider, why: str) -> None:
        """Let the calls in flight finish (up to their own timeout), then stop the provider."""
        try:
            deadline = time.monotonic() + provider.spec.call_timeout_s + 1
            while provider.busy and time.monotonic() < deadline:  # noqa: ASYNC110 (a count, not an event)
                await anyio.sleep(DRAIN_POLL_S)
            log.info("provider.retired", provider=provider.id, reason=why)
            await provider.stop(f"{why} (drained)")
        finally:
            self._retiring.discard(provider)
