"""The event store: an append-only log of every domain event, the audit trail."""

from __future__ import annotations

import os
from pathlib import Path

from mcp_hangar.config import EventStoreConfig
from mcp_hangar.store.base import EventStore


def default_sqlite_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "mcp-hangar" / "events.db"


def make_store(config: EventStoreConfig, base_dir: Path) -> EventStore:
    """The backend a configuration asks for (not yet opened)."""
    if config.driver == "postgres":
        from mcp_hangar.store.postgres import PostgresStore

        assert config.dsn is not None
        return PostgresStore(config.dsn)
    if config.driver == "memory":
        from mcp_hangar.store.memory import MemoryStore

        return MemoryStore()
    from mcp_hangar.store.sqlite import SqliteStore

    path = Path(config.path).expanduser() if config.path else default_sqlite_path()
    return SqliteStore(path if path.is_absolute() else (base_dir / path).resolve())
