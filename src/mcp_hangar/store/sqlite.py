"""The embedded default: one SQLite file in WAL mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite

from mcp_hangar.store.base import (
    SCHEMA_VERSION,
    TOOLS_LISTED,
    EventQuery,
    Record,
    StoredEvent,
    StoreError,
    StreamHistory,
    build_histories,
    ordering,
    where,
)

MIGRATIONS = {
    1: [
        """CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            stream TEXT NOT NULL,
            replica TEXT NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            at REAL NOT NULL,
            correlation_id TEXT,
            principal TEXT,
            data TEXT NOT NULL,
            UNIQUE (stream, replica, version)
        )""",
        "CREATE INDEX events_stream ON events (stream, position)",
        "CREATE INDEX events_type ON events (type, position)",
        "CREATE INDEX events_at ON events (at)",
    ]
}
COLUMNS = "position, stream, replica, version, type, at, correlation_id, principal, data"


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            # WAL: readers (mcp-hangar events) never block the writer. NORMAL: a commit survives
            # a crash of hangar; a power cut may lose the last commits (see README, durability).
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except StoreError:
            await self.close()
            raise
        except (OSError, aiosqlite.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open the event store {self.description}: {exc}") from None

    async def _migrate(self) -> None:
        db = self._require()
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            async with db.execute("SELECT max(version) FROM schema_version") as cursor:
                row = await cursor.fetchone()
            current = (row[0] if row else None) or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the event store {self.description} has schema version {current}, newer than this "
                    f"mcp-hangar understands ({SCHEMA_VERSION}); upgrade mcp-hangar or point it at another store"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"the event store {self.description} is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def append(self, records: list[Record]) -> None:
        db = self._require()
        rows = [(r.stream, r.replica, r.version, r.type, r.at, r.correlation_id, r.principal, r.data) for r in records]
        await db.execute("BEGIN")
        try:
            await db.executemany(
                "INSERT INTO events (stream, replica, version, type, at, correlation_id, principal, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def query(self, q: EventQuery) -> list[StoredEvent]:
        clause, args = where(q, lambda n: "?")
        sql = f"SELECT {COLUMNS} FROM events{clause}{ordering(q)} LIMIT ?"
        async with self._require().execute(sql, (*args, q.limit)) as cursor:
            rows = list(await cursor.fetchall())
        if q.after_position is None:
            rows.reverse()
        return [_event(row) for row in rows]

    async def max_versions(self, replica: str) -> dict[str, int]:
        sql = "SELECT stream, max(version) FROM events WHERE replica = ? GROUP BY stream"
        async with self._require().execute(sql, (replica,)) as cursor:
            return {stream: version for stream, version in await cursor.fetchall()}

    async def histories(self) -> dict[str, StreamHistory]:
        db = self._require()
        async with db.execute("SELECT stream, type, count(*), max(at) FROM events GROUP BY stream, type") as cursor:
            counts = [tuple(row) for row in await cursor.fetchall()]
        sql = (
            "SELECT stream, data FROM events WHERE position IN "
            "(SELECT max(position) FROM events WHERE type = ? GROUP BY stream)"
        )
        async with db.execute(sql, (TOOLS_LISTED,)) as cursor:
            tools = [(stream, json.loads(data)) for stream, data in await cursor.fetchall()]
        return build_histories(counts, tools)


def _event(row: Any) -> StoredEvent:
    position, stream, replica, version, kind, at, correlation_id, principal, data = row
    return StoredEvent(position, stream, replica, version, kind, at, correlation_id, principal, json.loads(data))
