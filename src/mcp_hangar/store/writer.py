"""Events leave the call path here: a bounded backlog drained in batches by one writer task.

``emit`` only appends to a deque. The writer wakes, encodes and versions whatever has gathered,
and appends it in one transaction. When the backlog is full, callers of ``room()`` (the call
path checks ``backlogged`` first) wait until it has drained: back-pressure, never dropping.
On close everything queued is written before the store is closed.
"""

from __future__ import annotations

import asyncio
import collections

import anyio
import structlog

from mcp_hangar.domain import events as ev
from mcp_hangar.store.base import EventStore, Record
from mcp_hangar.store.encode import Encoder

log = structlog.get_logger("mcp_hangar.store")

BATCH = 1000
# Group commit: after the first event arrives the writer waits this long for more, so a burst of
# calls costs one transaction, and the work runs after the calls that caused it have answered.
LINGER_S = 0.02
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
CLOSE_TIMEOUT_S = 10.0


class EventWriter:
    def __init__(self, store: EventStore, encoder: Encoder, replica: str, max_backlog: int = 10_000) -> None:
        self.store = store
        self.encoder = encoder  # replaced on a config reload (new secrets, audit modes)
        self._replica = replica
        self._max_backlog = max_backlog
        self._queue: collections.deque[ev.DomainEvent] = collections.deque()
        self._versions: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._urgent = asyncio.Event()  # set by flush() and close(): skip the linger
        self._done = asyncio.Event()
        self.written = 0

    # --- the call path --------------------------------------------------------------------

    def emit(self, event: ev.DomainEvent) -> None:
        self._queue.append(event)
        self._wake.set()
        self._drained.clear()
        if len(self._queue) >= self._max_backlog:
            self._room.clear()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def backlogged(self) -> bool:
        return len(self._queue) >= self._max_backlog

    async def room(self) -> None:
        await self._room.wait()

    # --- the writer task ------------------------------------------------------------------

    async def run(self) -> None:
        self._versions = await self.store.max_versions(self._replica)
        try:
            while not (self._closing and not self._queue):
                await self._wake.wait()
                with anyio.move_on_after(LINGER_S):
                    await self._urgent.wait()
                self._wake.clear()
                self._urgent.clear()
                await self._drain()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
                await self._drain()
            if self._queue:
                log.error("store.events_lost", count=len(self._queue), store=self.store.description)
            self._done.set()

    async def _drain(self) -> None:
        while self._queue:
            take = min(BATCH, len(self._queue))
            batch = [self._queue[i] for i in range(take)]
            # Versions count per stream and per replica, so replicas sharing a store never collide.
            versions = dict(self._versions)
            records = []
            for event in batch:
                versions[event.provider_id] = version = versions.get(event.provider_id, 0) + 1
                records.append(self._record(event, version))
            await self._append(records)
            for _ in range(take):
                self._queue.popleft()
            self._versions = versions
            self.written += take
            if len(self._queue) < self._max_backlog // 2:
                self._room.set()
        self._drained.set()

    async def flush(self) -> None:
        """Wait until everything emitted so far is in the store (for queries that must see it)."""
        while self._queue and not self._done.is_set():
            self._wake.set()
            self._urgent.set()
            await self._drained.wait()

    def _record(self, event: ev.DomainEvent, version: int) -> Record:
        return Record(
            stream=event.provider_id,
            replica=self._replica,
            version=version,
            type=event.kind,
            at=event.at,
            correlation_id=getattr(event, "correlation_id", None),
            principal=getattr(event, "principal", None),
            data=self.encoder.data(event),
        )

    async def _append(self, records: list[Record]) -> None:
        """Append, retrying while the store is unreachable: the backlog holds the events meanwhile
        (and, once full, holds back the calls that make them)."""
        failures = 0
        while True:
            try:
                await self.store.append(records)
                return
            except Exception as exc:
                failures += 1
                if self._closing and failures > len(RETRY_S):
                    raise
                log.warning("store.append_failed", store=self.store.description, error=str(exc), failures=failures)
                await anyio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])

    async def close(self) -> None:
        """Write everything queued, then stop the writer task."""
        self._closing = True
        self._wake.set()
        self._urgent.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
            await self._done.wait()
