"""The event log end to end: what a session records, what survives a restart or a kill -9,
two replicas on one PostgreSQL store, and secrets that never reach a row or a log line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_hangar.config import EventStoreConfig
from mcp_hangar.store import make_store
from mcp_hangar.store.base import EventQuery, StoredEvent
from tests.conftest import RawHangar, everything_command, hangar, pid_alive, write_config
from tests.e2e.test_registry import call, health, provider_row, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def invoke(client: Any, tool: str, /, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result


async def stored(settings: EventStoreConfig, base: Path) -> list[StoredEvent]:
    store = make_store(settings, base)
    await store.open()
    try:
        return await store.query(EventQuery(limit=1_000_000))
    finally:
        await store.close()


def assert_intact(events: list[StoredEvent]) -> None:
    """Positions strictly increase and every (stream, replica) has versions 1..n with no gap."""
    positions = [e.position for e in events]
    assert positions == sorted(set(positions))
    streams: dict[tuple[str, str], list[int]] = {}
    for e in events:
        streams.setdefault((e.stream, e.replica), []).append(e.version)
        assert isinstance(e.data, dict)
    for versions in streams.values():
        assert versions == list(range(1, len(versions) + 1))


async def test_a_session_is_recorded_and_survives_a_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with hangar(config) as client:
        for n in range(3):
            await invoke(
                client,
                "registry_invoke_ex",
                provider="everything",
                tool="echo",
                arguments={"message": f"hello {n}"},
                correlation_id=f"c-{n}",
            )
        live = len((await call(client, "registry_tools", provider="everything"))["tools"])
        await call(client, "registry_stop", provider="everything")
        audit = await call(client, "registry_audit", provider="everything")
        kinds = [e["type"] for e in audit["events"]]
        for expected in (
            "provider_started",
            "provider_tools_listed",
            "tool_invoked",
            "tool_completed",
            "provider_stopped",
        ):
            assert expected in kinds
        assert kinds.count("tool_completed") == 3
        invoked = [e for e in audit["events"] if e["type"] == "tool_invoked"]
        assert [e["correlation_id"] for e in invoked] == ["c-0", "c-1", "c-2"]
        assert set(invoked[0]["data"]["arguments"]) == {"size", "sha256"}  # never the raw arguments
        only_crashes = await call(client, "registry_audit", type="provider_crashed")
        assert only_crashes["events"] == []

    # A new process on the same store: counters and the tool catalog come back from the log.
    async with hangar(config) as client:
        row = await provider_row(client, "everything")
        assert row["state"] == "cold" and row["tools"] == live
        tools = await call(client, "registry_tools", provider="everything")
        assert tools["source"] == "cached" and tools["state"] == "cold"
        assert "echo" in {t["name"] for t in tools["tools"]}
        stats = await health(client, "everything")
        assert stats["invocations"] == 3 and stats["starts"] == 1 and stats["last_used_at"] is not None
        status = await client.call_tool("registry_status", {})
        assert f"everything  subprocess  cold   {live}     0          3" in status.content[0].text  # type: ignore[union-attr]

    cli = subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "events", "--config", str(config), "--type", "tool_invoked", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [e["correlation_id"] for e in lines] == ["c-0", "c-1", "c-2"]
    table = subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "events", "--config", str(config), "--provider", "everything", "-n", "3"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3
    assert "provider_stopped" in table.stdout.splitlines()[-1]


async def test_kill_9_in_a_flood_leaves_a_readable_store(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with RawHangar.running(config) as raw:
        await raw.initialize()
        listed = await raw.tool("registry_start", provider="everything")
        assert not listed.get("isError")
        pid = (await raw.tool("registry_list"))["structuredContent"]["providers"][0]["pid"]
        answered = 0
        for n in range(3000):  # pipelined: no waiting for answers
            await raw.send(
                {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {
                        "name": "registry_invoke",
                        "arguments": {"provider": "everything", "tool": "echo", "arguments": {"message": str(n)}},
                    },
                }
            )
        while answered < 1000:
            await raw.receive()
            answered += 1
        raw.process.send_signal(signal.SIGKILL)
        await raw.process.wait()
    events = await stored(EventStoreConfig(path=str(tmp_path / "c-events.db")), tmp_path)
    assert_intact(events)
    assert sum(e.type == "tool_completed" for e in events) > 0
    # the provider did not outlive hangar: the kernel sent it SIGTERM (PR_SET_PDEATHSIG)
    await wait_for(lambda: _async(not pid_alive(pid)), timeout=10)
    cli = subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "events", "--config", str(config), "-n", "5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0 and len(cli.stdout.splitlines()) == 5


async def _async(value: bool) -> bool:
    return value


async def test_two_replicas_share_one_postgres_store(tmp_path: Path, pg_dsn: str) -> None:
    calls = 200

    async def replica(name: str) -> None:
        config = write_config(
            tmp_path / f"{name}.yaml",
            {"everything": {"mode": "subprocess", "command": everything_command()}},
            event_store={"driver": "postgres", "dsn": pg_dsn},
            replica_id=name,
        )
        async with hangar(config) as client:

            async def some(k: int) -> None:
                for n in range(calls // 4):
                    await invoke(
                        client, "registry_invoke", provider="everything", tool="echo", arguments={"message": f"{k}.{n}"}
                    )

            async with anyio.create_task_group() as tg:
                for k in range(4):
                    tg.start_soon(some, k)

    async with anyio.create_task_group() as tg:
        tg.start_soon(replica, "replica-a")
        tg.start_soon(replica, "replica-b")
    events = await stored(EventStoreConfig(driver="postgres", dsn=pg_dsn), tmp_path)
    assert_intact(events)
    completed = [e for e in events if e.type == "tool_completed"]
    assert len(completed) == 2 * calls
    assert {e.replica for e in completed} == {"replica-a", "replica-b"}
    assert sum(e.replica == "replica-a" for e in completed) == calls


async def test_secrets_reach_no_row_and_no_log_line(tmp_path: Path) -> None:
    secret = "s3cr3t-Value-9f8e7d"
    config = write_config(
        tmp_path / "c.yaml",
        {
            "everything": {
                "mode": "subprocess",
                "command": everything_command(),
                "env": {"UPSTREAM_API_TOKEN": "${HANGAR_TEST_SECRET}"},
                "audit": {"arguments": "redacted"},
            },
            "faulty": {
                "mode": "subprocess",
                "command": ["sh", "-c", 'echo "starting with token $UPSTREAM_API_TOKEN" >&2; exit 3'],
                "env": {"UPSTREAM_API_TOKEN": "${HANGAR_TEST_SECRET}"},
            },
        },
    )
    log_file = tmp_path / "hangar.log"
    env = {"HANGAR_TEST_SECRET": secret}
    with log_file.open("w") as errlog:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcp_hangar", "--config", str(config), "--log-level", "debug"],
            env={**os.environ, **env},
        )
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            # the provider's result carries its whole environment, secret included
            result = await client.call_tool("registry_invoke", {"provider": "everything", "tool": "get-env"})
            assert secret in result.content[0].text  # type: ignore[union-attr]  # the caller gets it, as it should
            await invoke(
                client,
                "registry_invoke",
                provider="everything",
                tool="echo",
                arguments={"message": "hi", "api_key": secret},
            )
            failed = await client.call_tool("registry_invoke", {"provider": "faulty", "tool": "x"})
            assert failed.is_error and secret not in failed.content[0].text  # type: ignore[union-attr]
    events = await stored(EventStoreConfig(path=str(tmp_path / "c-events.db")), tmp_path)
    assert any(e.type == "provider_start_failed" for e in events)
    dump = json.dumps([e.to_dict() for e in events])
    assert secret not in dump
    assert "***" in dump
    logged = log_file.read_text()
    assert "provider.stderr" in logged and "starting with token ***" in logged  # the line is logged, masked
    assert secret not in logged


async def test_events_follow_prints_new_events_as_they_come(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    follower = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "mcp_hangar",
            "events",
            "--config",
            str(config),
            "--follow",
            "--json",
            "-t",
            "tool_completed",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with hangar(config) as client:
            await invoke(client, "registry_invoke", provider="everything", tool="echo", arguments={"message": "one"})
            await invoke(client, "registry_invoke", provider="everything", tool="echo", arguments={"message": "two"})
            audit = await call(client, "registry_audit", since="1h", limit=2, type="tool_completed")
            assert len(audit["events"]) == 2
            bad = await client.call_tool("registry_audit", {"since": "yesterday"})
            assert bad.is_error and "'yesterday' is not a duration" in bad.content[0].text  # type: ignore[union-attr]
        seen: list[dict[str, Any]] = []
        buffer = b""
        assert follower.stdout is not None
        with anyio.fail_after(15):
            while len(seen) < 2:
                buffer += await follower.stdout.receive()
                *lines, buffer = buffer.split(b"\n")
                seen += [json.loads(line) for line in lines if line.strip()]
        assert [e["type"] for e in seen] == ["tool_completed", "tool_completed"]
        assert seen[0]["position"] < seen[1]["position"]
    finally:
        follower.terminate()
        await follower.wait()
