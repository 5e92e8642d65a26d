"""The reconciler: scans every source, merges what they offer, and hands the result to the app.

A cycle runs at start, every ``interval_s``, whenever a source reports a change (a folder), and on
``registry_discover``. Cycles never overlap. Where two sources offer the same id the one of higher
precedence wins (docker, then folder, then entry points; the config file beats them all) and the
other is reported. In ``additive`` mode a provider stays once discovered, until hangar restarts; in
``authoritative`` mode it leaves when its source stops offering it (drained, then stopped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.abc
import structlog

from mcp_hangar.config import DiscoveryConfig
from mcp_hangar.discovery.sources import PRECEDENCE, Found, Scan, Source

log = structlog.get_logger("mcp_hangar.discovery")

SETTLE_S = 0.1  # after a change, wait this long for more before scanning
WATCH_RETRY_S = 5.0

# What the app does with the merged result (and the secrets found with it): apply it, and say
# what changed and which ids it refused because the config file defines them.
Apply = Callable[[dict[str, Found], str, frozenset[str]], tuple[dict[str, list[str]], list[str]]]


@dataclass(slots=True)
class SourceState:
    source: Source
    providers: dict[str, Found] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    scanned_at: float | None = None  # wall clock
    scan_ms: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.source.name,
            "type": self.source.kind,
            "status": "problems" if self.problems else ("ok" if self.scanned_at else "not scanned yet"),
            "providers": sorted(self.providers),
            "problems": self.problems,
            "scanned_at": self.scanned_at,
            "scan_ms": self.scan_ms,
        }


class Discovery:
    def __init__(self, config: DiscoveryConfig, sources: list[Source], apply: Apply) -> None:
        self.config = config
        self._states = [SourceState(s) for s in sources]
        self._apply = apply
        self._lock = anyio.Lock()
        self._kept: dict[str, Found] = {}  # additive mode: everything discovered so far
        self.conflicts: list[str] = []
        self.cycles = 0
        self._secrets: set[str] = set()  # ${VAR} values in discovered files: masked like the config's
        self._wake = anyio.Event()  # a source changed: a cycle is due
        self._why = ""

    @property
    def sources(self) -> list[SourceState]:
        return self._states

    async def follow(self, tg: anyio.abc.TaskGroup) -> None:
        """After the first cycle: the sources' watchers and the periodic rescan, until cancelled.
        A burst of changes (a rolling update, a folder synced at once) makes one cycle, not many."""
        for state in self._states:
            tg.start_soon(self._watch, state.source)
        tg.start_soon(self._cycle_on_change)
        while True:
            await anyio.sleep(self.config.interval_s)
            await self.safe_cycle("interval")

    async def _watch(self, source: Source) -> None:
        """A source's watcher; one that fails (a folder removed, say) is started again later, and
        the periodic rescan covers the gap: discovery never takes hangar down."""
        while True:
            try:
                await source.follow(partial(self._changed, source.name))
            except Exception as exc:
                log.warning("discovery.watch_failed", source=source.name, error=str(exc)[:200])
            await anyio.sleep(WATCH_RETRY_S)

    async def safe_cycle(self, trigger: str) -> None:
        try:
            await self.cycle(trigger)
        except Exception as exc:
            log.error("discovery.cycle_failed", trigger=trigger, error=str(exc)[:300])

    async def close(self) -> None:
        for state in self._states:
            await state.source.close()

    async def _changed(self, name: str) -> None:
        self._why = name
        self._wake.set()

    async def _cycle_on_change(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(SETTLE_S)
            await self.safe_cycle(f"{self._why} changed")

    async def cycle(self, trigger: str) -> dict[str, Any]:
        """Scan every source, merge, apply. Returns what changed and every problem."""
        async with self._lock:
            for state in self._states:
                await self._scan(state)
            merged: dict[str, Found] = {}
            self.conflicts = []
            ranked = sorted(self._states, key=lambda st: PRECEDENCE.get(st.source.kind, 99))
            for state in ranked:
                for pid, found in state.providers.items():
                    if pid in merged:
                        self.conflicts.append(
                            f"provider {pid!r} from {found.origin} is ignored: {merged[pid].origin} offers it too "
                            "and takes precedence"
                        )
                    else:
                        merged[pid] = found
            if self.config.mode == "additive":
                merged = self._kept = {**self._kept, **merged}
            changes, shadowed = self._apply(merged, trigger, frozenset(self._secrets))
            self.conflicts += [
                f"provider {pid!r} from {merged[pid].origin} is ignored: the config file defines it" for pid in shadowed
            ]
            self.cycles += 1
            return {
                "trigger": trigger,
                **changes,
                "sources": [s.snapshot() for s in self._states],
                "conflicts": self.conflicts,
            }

    async def _scan(self, state: SourceState) -> None:
        t0 = time.monotonic()
        try:
            scan = await state.source.scan()
        except Exception as exc:  # an engine that went away, say: keep what the source had
            scan = Scan(providers=state.providers, problems=[f"{state.source.name}: scan failed: {exc}"])
        limit = self.config.max_providers_per_source
        if len(scan.providers) > limit:
            dropped = sorted(scan.providers)[limit:]
            scan.providers = {pid: f for pid, f in scan.providers.items() if pid not in dropped}
            scan.problems.append(
                f"{state.source.name}: offers more than {limit} providers (discovery.max_providers_per_source); "
                f"ignored: {', '.join(dropped)}"
            )
        if scan.problems != state.problems:
            for problem in scan.problems:
                log.warning("discovery.problem", source=state.source.name, problem=problem)
        state.providers, state.problems = scan.providers, scan.problems
        state.scanned_at, state.scan_ms = time.time(), round((time.monotonic() - t0) * 1000, 2)
        self._secrets |= scan.secrets
