"""Shared fixtures: the real third-party providers, and a real mcp-hangar process to talk to."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING_JS = ROOT / ".cache/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
FAULTY = Path(__file__).resolve().parent / "providers" / "faulty.py"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def everything_command() -> list[str]:
    if not EVERYTHING_JS.exists():
        pytest.fail(f"{EVERYTHING_JS} is missing: run scripts/bootstrap.sh first")
    node = shutil.which("node")
    assert node, "node is not installed: run scripts/bootstrap.sh first"
    return [node, str(EVERYTHING_JS), "stdio"]


def time_command() -> list[str]:
    exe = BIN / "mcp-server-time"
    if not exe.exists():
        pytest.fail("mcp-server-time is not installed: run scripts/bootstrap.sh first")
    return [str(exe), "--local-timezone", "UTC"]


def faulty_command(*flags: str) -> list[str]:
    return [sys.executable, str(FAULTY), *flags]


def write_config(path: Path, providers: dict[str, Any], **extra: Any) -> Path:
    """A config file; its event store is a SQLite file beside it unless ``event_store`` is given,
    so no test reads another's history."""
    extra.setdefault("event_store", {"path": str(path.parent / f"{path.stem}-events.db")})
    path.write_text(yaml.safe_dump({"providers": providers, **extra}, sort_keys=False))
    return path


@asynccontextmanager
async def hangar(
    config: Path, *, mode: str = "auto", env: dict[str, str] | None = None, **client_options: Any
) -> AsyncIterator[Client]:
    """A real `mcp-hangar --config FILE` process, spoken to by the SDK's client over stdio."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_hangar", "--config", str(config), "--log-level", "debug"],
        env={**os.environ, **(env or {})},
        cwd=str(ROOT),
    )
    async with Client(params, mode=mode, read_timeout_seconds=60, **client_options) as client:
        yield client


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- PostgreSQL: one fresh database per test run, one schema per test -------------------------

PG_ADMIN_DSN = os.environ.get("HANGAR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of its own for this run, dropped at the end. PostgreSQL must be running
    (127.0.0.1:5432, trust auth on this machine kind; .ci/run starts it)."""
    import asyncio
    import uuid

    import asyncpg

    name = f"hangar_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}); start it (see .ci/run)")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    """A DSN whose tables land in a schema of this test's own."""
    import asyncio
    import uuid

    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_database)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()

    asyncio.run(create())
    return f"{pg_database}?search_path={schema}"


class RawHangar:
    """mcp-hangar as a plain child process spoken to in raw JSON-RPC lines: for tests that must
    signal or kill it, or pipeline requests without a client library in between."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self._buffer = b""
        self._next_id = 100

    @classmethod
    @asynccontextmanager
    async def running(cls, config: Path, *extra: str) -> AsyncIterator[RawHangar]:
        import subprocess

        import anyio

        process = await anyio.open_process(
            [sys.executable, "-m", "mcp_hangar", "--config", str(config), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        raw = cls(process)
        try:
            yield raw
        finally:
            # As a client leaves: stdin closed, so hangar stops and writes its last events;
            # killed only if it does not exit (a test may have killed it already).
            if process.returncode is None:
                with anyio.move_on_after(15):
                    await process.stdin.aclose()
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def send(self, message: dict[str, Any]) -> None:
        import json

        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        import json

        while b"\n" not in self._buffer:
            self._buffer += await self.process.stdout.receive()
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; several tasks may have requests in flight at once (replies matched by id)."""
        import anyio

        self._next_id += 1
        rid = self._next_id
        self._replies: dict[Any, dict[str, Any]] = getattr(self, "_replies", {})
        self._reading = getattr(self, "_reading", None) or anyio.Lock()
        await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        while rid not in self._replies:
            async with self._reading:
                if rid in self._replies:
                    break
                reply = await self.receive()
                if "id" in reply:
                    self._replies[reply["id"]] = reply
        return self._replies.pop(rid)

    async def initialize(self) -> None:
        reply = await self.request(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
        )
        assert reply["result"]["serverInfo"]["name"] == "mcp-hangar"
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        reply = await self.request("tools/call", {"name": name, "arguments": arguments})
        return reply["result"]


@pytest.fixture(scope="session")
def container_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Podman API service for this test run (see tests/podman.py); its unix:// address."""
    from tests.podman import podman_service

    try:
        with podman_service(tmp_path_factory.mktemp("podman")) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))
