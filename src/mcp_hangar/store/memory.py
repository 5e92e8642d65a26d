"""A store that lives and dies with the process: for tests and throwaway runs."""

from __future__ import annotations

import dataclasses
import json

from mcp_hangar.store.base import (
    TOOLS_LISTED,
    ApiKeyRecord,
    EventQuery,
    Record,
    StoredEvent,
    StreamHistory,
    build_histories,
)


class MemoryStore:
    description = "memory"

    def __init__(self) -> None:
        self._events: list[StoredEvent] = []
        self._keys: dict[str, ApiKeyRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, records: list[Record]) -> None:
        for r in records:
            position = len(self._events) + 1
            self._events.append(
                StoredEvent(
                    position,
                    r.stream,
                    r.replica,
                    r.version,
                    r.type,
                    r.at,
                    r.correlation_id,
                    r.principal,
                    json.loads(r.data),
                )
            )

    async def query(self, q: EventQuery) -> list[StoredEvent]:
        found = [
            e
            for e in self._events
            if (q.stream is None or e.stream == q.stream)
            and (q.type is None or e.type == q.type)
            and (q.since is None or e.at >= q.since)
            and (q.after_position is None or e.position > q.after_position)
        ]
        return found[: q.limit] if q.after_position is not None else found[-q.limit :]

    async def max_versions(self, replica: str) -> dict[str, int]:
        versions: dict[str, int] = {}
        for e in self._events:
            if e.replica == replica:
                versions[e.stream] = max(versions.get(e.stream, 0), e.version)
        return versions

    async def histories(self) -> dict[str, StreamHistory]:
        counts: dict[tuple[str, str], tuple[int, float]] = {}
        latest_tools: dict[str, StoredEvent] = {}
        for e in self._events:
            n, last = counts.get((e.stream, e.type), (0, 0.0))
            counts[(e.stream, e.type)] = (n + 1, max(last, e.at))
            if e.type == TOOLS_LISTED:
                latest_tools[e.stream] = e
        return build_histories(
            [(s, t, n, last) for (s, t), (n, last) in counts.items()],
            [(s, e.data) for s, e in latest_tools.items()],
        )

    async def put_key(self, key: ApiKeyRecord) -> None:
        self._keys[key.id] = key

    async def keys(self) -> list[ApiKeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    async def revoke_key(self, key_id: str, at: float) -> ApiKeyRecord | None:
        key = self._keys.get(key_id)
        if key is not None and key.revoked_at is None:
            key = self._keys[key_id] = dataclasses.replace(key, revoked_at=at)
        return key
