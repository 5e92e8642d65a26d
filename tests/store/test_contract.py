"""One contract, every backend: memory, a real SQLite file, a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_hangar.config import EventStoreConfig
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.states import ProviderState
from mcp_hangar.store import make_store
from mcp_hangar.store.base import SCHEMA_VERSION, EventQuery, EventStore, Record, StoreError
from mcp_hangar.store.encode import Encoder
from mcp_hangar.store.writer import EventWriter

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> EventStoreConfig:
    if request.param == "postgres":
        return EventStoreConfig(driver="postgres", dsn=request.getfixturevalue("pg_dsn"))
    return EventStoreConfig(driver=request.param, path=str(tmp_path / "events.db"))


@pytest.fixture(params=["sqlite", "postgres"])
def durable_settings(request: pytest.FixtureRequest, tmp_path: Path) -> EventStoreConfig:
    if request.param == "postgres":
        return EventStoreConfig(driver="postgres", dsn=request.getfixturevalue("pg_dsn"))
    return EventStoreConfig(driver="sqlite", path=str(tmp_path / "events.db"))


@pytest.fixture
async def store(settings: EventStoreConfig, tmp_path: Path) -> AsyncIterator[EventStore]:
    s = make_store(settings, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def record(stream: str, version: int, kind: str = "tool_invoked", at: float = 1000.0, **data: object) -> Record:
    return Record(stream, "r1", version, kind, at, None, None, json.dumps(data))


async def test_append_and_query(store: EventStore) -> None:
    await store.append([record("a", 1, at=100), record("b", 1, at=200), record("a", 2, "provider_crashed", at=300)])
    await store.append([record("a", 3, at=400, n=7)])

    everything = await store.query(EventQuery())
    assert [(e.stream, e.version) for e in everything] == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert everything[-1].data == {"n": 7}

    assert [e.version for e in await store.query(EventQuery(stream="a"))] == [1, 2, 3]
    assert [e.type for e in await store.query(EventQuery(type="provider_crashed"))] == ["provider_crashed"]
    assert [e.at for e in await store.query(EventQuery(since=250))] == [300, 400]
    newest = await store.query(EventQuery(limit=2))
    assert [e.at for e in newest] == [300, 400]  # the newest two, oldest first
    after = await store.query(EventQuery(after_position=positions[1], limit=1))
    assert [e.position for e in after] == [positions[2]]  # following reads forward


async def test_versions_per_stream_and_replica(store: EventStore) -> None:
    await store.append([record("a", 1), record("a", 2), record("b", 1)])
    await store.append([Record("a", "r2", 1, "tool_invoked", 1.0, None, None, "{}")])
    assert await store.max_versions("r1") == {"a": 2, "b": 1}
    assert await store.max_versions("r2") == {"a": 1}
    assert await store.max_versions("nobody") == {}


async def test_a_duplicate_version_is_refused(durable_settings: EventStoreConfig, tmp_path: Path) -> None:
    store = make_store(durable_settings, tmp_path)
    await store.open()
    try:
        await store.append([record("a", 1)])
        with pytest.raises(Exception, match=r"(?i)unique"):
            await store.append([record("a", 2), record("a", 1)])
        assert len(await store.query(EventQuery())) == 1  # the failed batch left nothing behind
    finally:
        await store.close()


async def test_histories_fold_counts_last_use_and_latest_tools(store: EventStore) -> None:
    await store.append(
        [
            record("a", 1, "provider_tools_listed", at=10, tools=[{"name": "old"}]),
            record("a", 2, "tool_invoked", at=20),
            record("a", 3, "tool_invoked", at=30),
            record("a", 4, "provider_tools_listed", at=40, tools=[{"name": "new"}]),
            record("b", 1, "provider_crashed", at=50),
        ]
    )
    histories = await store.histories()
    assert histories["a"].counts == {"provider_tools_listed": 2, "tool_invoked": 2}
    assert histories["a"].last_used_at == 30
    assert histories["a"].tools == [{"name": "new"}]
    assert histories["b"].counts == {"provider_crashed": 1} and histories["b"].tools is None


async def test_reopening_keeps_events_and_a_newer_schema_is_refused(
    durable_settings: EventStoreConfig, tmp_path: Path
) -> None:
    settings = durable_settings
    first = make_store(settings, tmp_path)
    await first.open()
    await first.append([record("a", 1)])
    await first.close()

    again = make_store(settings, tmp_path)
    await again.open()  # migrations are idempotent
    assert len(await again.query(EventQuery())) == 1
    await again.close()

    await _set_schema_version(settings, tmp_path, SCHEMA_VERSION + 1)
    newer = make_store(settings, tmp_path)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this mcp-hangar"):
        await newer.open()


async def _set_schema_version(settings: EventStoreConfig, tmp_path: Path, version: int) -> None:
    if settings.driver == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "events.db") as db:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    else:
        import asyncpg

        assert settings.dsn is not None
        conn = await asyncpg.connect(settings.dsn)
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        await conn.close()


async def test_unreachable_postgres_is_a_clear_error() -> None:
    store = make_store(EventStoreConfig(driver="postgres", dsn="postgresql://u:hunter22@127.0.0.1:1/x"), Path("."))
    with pytest.raises(StoreError) as info:
        await store.open()
    assert "cannot open the event store postgres:postgresql://u:***@127.0.0.1:1/x" in str(info.value)
    assert "hunter22" not in str(info.value)


# --- the writer -------------------------------------------------------------------------------


def invoked(stream: str, n: int) -> ev.ToolInvoked:
    return ev.ToolInvoked(provider_id=stream, at=1000.0 + n, tool="echo", arguments={"n": n})


async def test_writer_stores_everything_with_contiguous_versions(store: EventStore) -> None:
    writer = EventWriter(store, Encoder({}, []), "r1", max_backlog=500)
    async with _running(writer):
        for n in range(3000):
            writer.emit(invoked("a" if n % 3 else "b", n))
            if writer.backlogged:
                await writer.room()
        await writer.flush()
    stored = await store.query(EventQuery(limit=10_000))
    assert len(stored) == 3000
    for stream in ("a", "b"):
        versions = [e.version for e in stored if e.stream == stream]
        assert versions == list(range(1, len(versions) + 1))


async def test_writer_applies_back_pressure_and_retries_a_failing_store(store: EventStore) -> None:
    class Flaky:
        """Fails the first appends, then blocks until released: a store that is down, then slow."""

        def __init__(self, inner: EventStore) -> None:
            self.inner, self.description, self.failures = inner, "flaky", 2
            self.release = asyncio.Event()

        async def append(self, records: list[Record]) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("store is down")
            await self.release.wait()
            await self.inner.append(records)

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    flaky = Flaky(store)
    writer = EventWriter(flaky, Encoder({}, []), "r1", max_backlog=100)  # type: ignore[arg-type]
    async with _running(writer):
        for n in range(150):
            writer.emit(invoked("a", n))
        assert writer.backlogged
        room = asyncio.ensure_future(writer.room())
        await asyncio.sleep(0.3)
        assert not room.done()  # calls would wait here: nothing is dropped
        flaky.release.set()
        await asyncio.wait_for(room, 10)
        await writer.flush()
    assert flaky.failures == 0
    assert len(await store.query(EventQuery(limit=1000))) == 150


class _running:
    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer

    async def __aenter__(self) -> None:
        self.task = asyncio.ensure_future(self.writer.run())

    async def __aexit__(self, *exc: object) -> None:
        await self.writer.close()
        await self.task


# --- what is stored of a call -----------------------------------------------------------------


def test_arguments_are_hashed_by_default_redacted_or_full_on_request() -> None:
    args = {"query": "weather", "api_key": "k-123456", "nested": {"password": "p-654321", "n": 1}}
    event = ev.ToolInvoked(provider_id="p", at=1.0, tool="t", arguments=args)
    hashed = json.loads(Encoder({}, []).data(event))["arguments"]
    assert set(hashed) == {"size", "sha256"} and len(hashed["sha256"]) == 64
    redacted = json.loads(Encoder({"p": "redacted"}, []).data(event))["arguments"]["value"]
    assert redacted == {"query": "weather", "api_key": "***", "nested": {"password": "***", "n": 1}}
    full = json.loads(Encoder({"p": "full"}, []).data(event))["arguments"]["value"]
    assert full == args


def test_known_secret_values_are_masked_everywhere() -> None:
    secret = 'tok"en-with-quote'
    crash = ev.ProviderCrashed(
        provider_id="p", at=1.0, exit_code=1, consecutive=1, restart_delay_s=0, stderr_tail=f"auth failed for {secret}"
    )
    text = Encoder({"p": "full"}, [secret]).data(crash)
    assert "tok" not in text and "***" in text
    full = ev.ToolInvoked(provider_id="p", at=1.0, tool="t", arguments={"q": f"use {secret}"})
    assert "tok" not in Encoder({"p": "full"}, [secret]).data(full)
    result = ev.ToolCompleted(provider_id="p", at=1.0, tool="t", duration_ms=1, is_error=False, result={"x": secret})
    stored = json.loads(Encoder({}, [secret]).data(result))
    assert set(stored["result"]) == {"size", "sha256"}


def test_state_changes_store_plain_values() -> None:
    change = ev.StateChanged(provider_id="p", at=1.0, old=ProviderState.COLD, new=ProviderState.INITIALIZING)
    assert json.loads(Encoder({}, []).data(change)) == {"old": "cold", "new": "initializing", "reason": ""}


async def test_api_keys_are_stored_listed_and_revoked(store: EventStore) -> None:
    from mcp_hangar.store.base import ApiKeyRecord

    await store.put_key(ApiKeyRecord("k1", "ci", "user", "h1", 10.0))
    await store.put_key(ApiKeyRecord("k2", "ops", "admin", "h2", 20.0))
    assert [(k.id, k.role, k.revoked_at) for k in await store.keys()] == [("k1", "user", None), ("k2", "admin", None)]
    revoked = await store.revoke_key("k1", 30.0)
    assert revoked is not None and revoked.revoked_at == 30.0
    again = await store.revoke_key("k1", 40.0)
    assert again is not None and again.revoked_at == 30.0  # revoking twice keeps the first time
    assert await store.revoke_key("nope", 50.0) is None
