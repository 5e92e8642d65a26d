"""PostgreSQL: one store shared by many hangar replicas."""

from __future__ import annotations

import json

import asyncpg

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
            position BIGSERIAL PRIMARY KEY,
            stream TEXT NOT NULL,
            replica TEXT NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            correlation_id TEXT,
            principal TEXT,
            data JSONB NOT NULL,
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
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
    ],
}
KEY_COLUMNS = "id, name, role, hash, created_at, revoked_at"
COLUMNS = "position, stream, replica, version, type, at, correlation_id, principal, data::text"
MIGRATION_LOCK = 0x6D6370_68616E  # any constant shared by every replica: serializes migrations


class PostgresStore:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.description = f"postgres:{_redact(dsn)}"
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4, command_timeout=30)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"the event store {self.description} has schema version {current}, newer than this "
                        f"mcp-hangar understands ({SCHEMA_VERSION}); upgrade mcp-hangar or point it at another store"
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version]:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        except StoreError:
            await self.close()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            await self.close()
            raise StoreError(f"cannot open the event store {self.description}: {exc}") from None

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"the event store {self.description} is not open")
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def append(self, records: list[Record]) -> None:
        rows = [(r.stream, r.replica, r.version, r.type, r.at, r.correlation_id, r.principal, r.data) for r in records]
        async with self._require().acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO events (stream, replica, version, type, at, correlation_id, principal, data) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
                rows,
            )

    async def query(self, q: EventQuery) -> list[StoredEvent]:
        clause, args = where(q, lambda n: f"${n}")
        sql = f"SELECT {COLUMNS} FROM events{clause}{ordering(q)} LIMIT ${len(args) + 1}"
        rows = list(await self._require().fetch(sql, *args, q.limit))
        if q.after_position is None:
            rows.reverse()
        return [StoredEvent.from_row(row) for row in rows]

    async def max_versions(self, replica: str) -> dict[str, int]:
        rows = await self._require().fetch(
            "SELECT stream, max(version) FROM events WHERE replica = $1 GROUP BY stream", replica
        )
        return {row[0]: row[1] for row in rows}

    async def histories(self) -> dict[str, StreamHistory]:
        pool = self._require()
        counts = await pool.fetch("SELECT stream, type, count(*), max(at) FROM events GROUP BY stream, type")
        tools = await pool.fetch(
            "SELECT stream, data::text FROM events WHERE position IN "
            "(SELECT max(position) FROM events WHERE type = $1 GROUP BY stream)",
            TOOLS_LISTED,
        )
        counted = [(r[0], r[1], r[2], r[3]) for r in counts]
        return build_histories(counted, [(r[0], json.loads(r[1])) for r in tools])

    async def put_key(self, key: ApiKeyRecord) -> None:
        await self._require().execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            key.id,
            key.name,
            key.role,
            key.hash,
            key.created_at,
            key.revoked_at,
        )

    async def keys(self) -> list[ApiKeyRecord]:
        rows = await self._require().fetch(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at")
        return [ApiKeyRecord(*row) for row in rows]

    async def revoke_key(self, key_id: str, at: float) -> ApiKeyRecord | None:
        pool = self._require()
        await pool.execute("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", at, key_id)
        row = await pool.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return ApiKeyRecord(*row) if row else None


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
