"""The embedded default: one SQLite file in WAL mode.

The standard library's sqlite3 runs in a worker thread (one at a time, through a limiter), and
each operation is one hop to that thread: a whole batch of appends is one transaction in one hop,
rather than a hop per statement.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from mcp_hangar.store.base import (
    SCHEMA_VERSION,
    TOOLS_LISTED,
    ApiKeyRecord,
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
    ],
    2: [
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
    ],
}
COLUMNS = "position, stream, replica, version, type, at, correlation_id, principal, data"
KEY_COLUMNS = "id, name, role, hash, created_at, revoked_at"
INSERT = (
    "INSERT INTO events (stream, replica, version, type, at, correlation_id, principal, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
T = TypeVar("T")


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)  # the connection is used by one thread at a time

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"the event store {self.description} is not open")
        return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
            # WAL: readers (mcp-hangar events) never block the writer. NORMAL: a commit survives
            # a crash of hangar; a power cut may lose the last commits (see README, durability).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn

        try:
            self._conn = await anyio.to_thread.run_sync(connect, limiter=self._limiter)
            await self._run(self._migrate)
        except StoreError:
            await self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StoreError(f"cannot open the event store {self.description}: {exc}") from None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the event store {self.description} has schema version {current}, newer than this "
                    f"mcp-hangar understands ({SCHEMA_VERSION}); upgrade mcp-hangar or point it at another store"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def append(self, records: list[Record]) -> None:
        rows = [(r.stream, r.replica, r.version, r.type, r.at, r.correlation_id, r.principal, r.data) for r in records]

        def insert(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(INSERT, rows)

        await self._run(insert)

    async def query(self, q: EventQuery) -> list[StoredEvent]:
        clause, args = where(q, lambda n: "?")
        sql = f"SELECT {COLUMNS} FROM events{clause}{ordering(q)} LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(sql, (*args, q.limit)).fetchall())
        if q.after_position is None:
            rows.reverse()
        return [StoredEvent.from_row(row) for row in rows]

    async def max_versions(self, replica: str) -> dict[str, int]:
        sql = "SELECT stream, max(version) FROM events WHERE replica = ? GROUP BY stream"
        rows = await self._run(lambda conn: conn.execute(sql, (replica,)).fetchall())
        return {stream: version for stream, version in rows}

    async def histories(self) -> dict[str, StreamHistory]:
        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            counts = conn.execute("SELECT stream, type, count(*), max(at) FROM events GROUP BY stream, type").fetchall()
            tools = conn.execute(
                "SELECT stream, data FROM events WHERE position IN "
                "(SELECT max(position) FROM events WHERE type = ? GROUP BY stream)",
                (TOOLS_LISTED,),
            ).fetchall()
            return counts, tools

        counts, tools = await self._run(read)
        return build_histories([tuple(r) for r in counts], [(s, json.loads(d)) for s, d in tools])

    async def put_key(self, key: ApiKeyRecord) -> None:
        row = (key.id, key.name, key.role, key.hash, key.created_at, key.revoked_at)
        await self._run(
            lambda conn: conn.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
        )

    async def keys(self) -> list[ApiKeyRecord]:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
        return [ApiKeyRecord(*row) for row in await self._run(lambda conn: conn.execute(sql).fetchall())]

    async def revoke_key(self, key_id: str, at: float) -> ApiKeyRecord | None:
        def revoke(conn: sqlite3.Connection) -> Any:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
            return conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()

        row = await self._run(revoke)
        return ApiKeyRecord(*row) if row else None


class _transaction:
    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN") -> None:
        self._conn, self._begin = conn, begin

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, kind: object, *rest: object) -> None:
        self._conn.execute("COMMIT" if kind is None else "ROLLBACK")
