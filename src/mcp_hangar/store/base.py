"""What every event store backend offers, and the shapes that cross it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

SCHEMA_VERSION = 2


class StoreError(Exception):
    """The event store cannot be used; the message says which store and why."""


@dataclass(frozen=True, slots=True)
class Record:
    """One event ready to append: encoded, scrubbed, versioned."""

    stream: str
    replica: str
    version: int
    type: str
    at: float
    correlation_id: str | None
    principal: str | None
    data: str  # JSON text


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    stream: str
    replica: str
    version: int
    type: str
    at: float
    correlation_id: str | None
    principal: str | None
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> StoredEvent:
        """From a row of ``position, stream, replica, version, type, at, correlation_id, principal, data``
        with ``data`` as JSON text (the order both SQL backends select in)."""
        position, stream, replica, version, kind, at, correlation_id, principal, data = row
        return cls(position, stream, replica, version, kind, at, correlation_id, principal, json.loads(data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream": self.stream,
            "replica": self.replica,
            "version": self.version,
            "type": self.type,
            "at": self.at,
            "correlation_id": self.correlation_id,
            "principal": self.principal,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: only the SHA-256 of the key, never the key."""

    id: str
    name: str
    role: str
    hash: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    stream: str | None = None
    type: str | None = None
    since: float | None = None  # epoch seconds
    after_position: int | None = None
    limit: int = 100  # the newest `limit` matches, returned oldest first


@dataclass(slots=True)
class StreamHistory:
    """What the log says about one provider: the projection rebuilt at start."""

    counts: dict[str, int] = field(default_factory=dict)  # event type -> how many
    last_used_at: float | None = None
    tools: list[dict[str, Any]] | None = None


class EventStore(Protocol):
    description: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, records: list[Record]) -> None: ...

    async def query(self, q: EventQuery) -> list[StoredEvent]: ...

    async def max_versions(self, replica: str) -> dict[str, int]: ...

    async def histories(self) -> dict[str, StreamHistory]: ...

    async def put_key(self, key: ApiKeyRecord) -> None: ...

    async def keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, key_id: str, at: float) -> ApiKeyRecord | None: ...


TOOLS_LISTED = "provider_tools_listed"
TOOL_INVOKED = "tool_invoked"


def build_histories(
    counts: list[tuple[str, str, int, float]], tool_lists: list[tuple[str, Any]]
) -> dict[str, StreamHistory]:
    """Fold the two aggregate queries every backend runs into per-stream histories."""
    histories: dict[str, StreamHistory] = {}
    for stream, kind, n, last_at in counts:
        history = histories.setdefault(stream, StreamHistory())
        history.counts[kind] = history.counts.get(kind, 0) + int(n)
        if kind == TOOL_INVOKED:
            history.last_used_at = max(history.last_used_at or 0.0, float(last_at))
    for stream, data in tool_lists:
        tools = (data if isinstance(data, dict) else {}).get("tools")
        if isinstance(tools, list):
            histories.setdefault(stream, StreamHistory()).tools = tools
    return histories


def where(q: EventQuery, placeholder: Any) -> tuple[str, list[Any]]:
    """The WHERE clause and arguments for a query; ``placeholder(n)`` spells the n-th parameter."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("stream", "=", q.stream),
        ("type", "=", q.type),
        ("at", ">=", q.since),
        ("position", ">", q.after_position),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} {op} {placeholder(len(args))}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def ordering(q: EventQuery) -> str:
    # Following a log reads forward from a position; otherwise the newest events are wanted.
    return " ORDER BY position ASC" if q.after_position is not None else " ORDER BY position DESC"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``7d`` -> seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 10m, 2h, 7d)") from None
    if seconds < 0:
        raise ValueError(f"{text!r} is not a duration: it is negative")
    return seconds
