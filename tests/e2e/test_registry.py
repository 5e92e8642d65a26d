"""The registry tools, end to end: a real mcp-hangar process, the SDK client, real providers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.conftest import everything_command, faulty_command, hangar, pid_alive, time_command, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def call(client: Client, tool: str, /, **arguments: Any) -> dict[str, Any]:
    """Call a registry tool that must succeed; return its structured content."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


async def fail(client: Client, tool: str, /, **arguments: Any) -> str:
    """Call a registry tool that must fail; return its error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return result.content[0].text  # type: ignore[union-attr]


async def provider_row(client: Client, pid: str) -> dict[str, Any]:
    rows = (await call(client, "registry_list"))["providers"]
    return next(r for r in rows if r["id"] == pid)


async def health(client: Client, pid: str) -> dict[str, Any]:
    return (await call(client, "registry_health", provider=pid))["providers"][0]


async def wait_for(predicate: Any, timeout: float = 15.0, every: float = 0.05) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(every)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {
            "everything": {"mode": "subprocess", "command": everything_command()},
            "time": {
                "mode": "subprocess",
                "command": time_command(),
                "tools": [
                    {
                        "name": "get_current_time",
                        "description": "Current time",
                        "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string"}}},
                    }
                ],
            },
            "faulty": {
                "mode": "subprocess",
                "command": faulty_command(),
                "env": {"MARKER_DIR": str(tmp_path), "BUMP_FILE": str(tmp_path / "bumps")},
            },
        },
    )


async def test_lists_registry_tools_with_schemas(config: Path) -> None:
    async with hangar(config) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {
            "registry_list",
            "registry_start",
            "registry_stop",
            "registry_invoke",
            "registry_invoke_ex",
            "registry_invoke_stream",
            "registry_tools",
            "registry_health",
            "registry_status",
            "registry_discover",
            "registry_sources",
            "registry_warm",
            "registry_audit",
        }
        invoke = tools["registry_invoke"].input_schema
        assert invoke["required"] == ["provider", "tool"]
        assert set(invoke["properties"]) == {"provider", "tool", "arguments", "timeout"}


async def test_providers_start_lazily_and_predefined_tools_need_no_start(config: Path) -> None:
    async with hangar(config) as client:
        rows = (await call(client, "registry_list"))["providers"]
        assert {r["id"]: r["state"] for r in rows} == {"everything": "cold", "time": "cold", "faulty": "cold"}

        tools = await call(client, "registry_tools", provider="time")
        assert tools["source"] == "predefined"
        assert [t["name"] for t in tools["tools"]] == ["get_current_time"]
        assert (await provider_row(client, "time"))["state"] == "cold"

        result = await client.call_tool(
            "registry_invoke", {"provider": "time", "tool": "get_current_time", "arguments": {"timezone": "UTC"}}
        )
        assert not result.is_error
        assert result.structured_content is not None and result.structured_content["timezone"] == "UTC"
        row = await provider_row(client, "time")
        assert row["state"] == "ready"
        assert row["protocol_version"] == "2026-07-28"  # a Python SDK 2.x provider speaks the modern era

        live = await call(client, "registry_tools", provider="time")
        assert live["source"] == "live"
        assert {t["name"] for t in live["tools"]} == {"get_current_time", "convert_time"}

        assert [r["id"] for r in (await call(client, "registry_list", state_filter="ready"))["providers"]] == ["time"]
        cold = (await call(client, "registry_list", state_filter="cold"))["providers"]
        assert {r["id"] for r in cold} == {"everything", "faulty"}


async def test_classic_provider_result_passes_through_unchanged(config: Path) -> None:
    async with hangar(config) as client:
        result = await client.call_tool(
            "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "hi"}}
        )
        assert not result.is_error
        assert result.content[0].text == "Echo: hi"  # type: ignore[union-attr]
        assert (await provider_row(client, "everything"))["protocol_version"] == "2025-11-25"

        structured = await client.call_tool(
            "registry_invoke",
            {"provider": "everything", "tool": "get-structured-content", "arguments": {"location": "New York"}},
        )
        assert structured.structured_content is not None and "temperature" in structured.structured_content


async def test_mcp_server_git_works_through_hangar(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "hello.txt").write_text("hi\n")
    config = write_config(tmp_path / "c.yaml", {"git": {"mode": "subprocess", "command": ["mcp-server-git"]}})
    async with hangar(config) as client:
        result = await client.call_tool(
            "registry_invoke", {"provider": "git", "tool": "git_status", "arguments": {"repo_path": str(repo)}}
        )
        assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
        assert "hello.txt" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_both_client_eras_are_served(config: Path, mode: str) -> None:
    async with hangar(config, mode=mode) as client:
        assert (client.protocol_version == "2026-07-28") == (mode == "auto")
        result = await client.call_tool(
            "registry_invoke", {"provider": "everything", "tool": "get-sum", "arguments": {"a": 2, "b": 3}}
        )
        assert not result.is_error
        assert "5" in result.content[0].text  # type: ignore[union-attr]


async def test_fifty_concurrent_first_calls_start_one_process(config: Path) -> None:
    async with hangar(config) as client:
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append(
                await client.call_tool(
                    "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": str(i)}}
                )
            )

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert len(results) == 50 and not any(r.is_error for r in results)
        assert sorted(r.content[0].text for r in results) == sorted(f"Echo: {i}" for i in range(50))
        stats = await health(client, "everything")
        assert stats["starts"] == 1
        assert stats["invocations"] == 50


async def test_slow_calls_overlap_and_do_not_block_others(config: Path) -> None:
    async with hangar(config) as client:
        await call(client, "registry_warm", providers=["faulty", "everything"])
        done: list[str] = []

        async def slow() -> None:
            result = await client.call_tool(
                "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 3}}
            )
            assert not result.is_error
            done.append("slow")

        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(slow)

            async def all_in_flight() -> bool:
                return (await provider_row(client, "faulty"))["in_flight"] == 16

            # All 16 are inside the provider at once: nothing serializes them.
            await wait_for(all_in_flight, timeout=10)
            echo = await client.call_tool(
                "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "quick"}}
            )
            assert echo.content[0].text == "Echo: quick"  # type: ignore[union-attr]
            assert done == []  # the other provider answered while every slow call was still running
        assert done == ["slow"] * 16


async def test_timeout_cancels_the_upstream_request(config: Path, tmp_path: Path) -> None:
    async with hangar(config) as client:
        text = await fail(
            client, "registry_invoke", provider="faulty", tool="sleep", arguments={"seconds": 30}, timeout=0.5
        )
        assert "did not answer within 0.5s" in text

        async def provider_saw_cancel() -> bool:
            return any(tmp_path.glob("cancelled-30*"))

        await wait_for(provider_saw_cancel, timeout=10)
        # The provider is still fine and the slot was released.
        ok = await client.call_tool(
            "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 0}}
        )
        assert not ok.is_error
        assert (await provider_row(client, "faulty"))["in_flight"] == 0


async def test_progress_is_relayed_to_the_caller(config: Path) -> None:
    async with hangar(config) as client:
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total))

        result = await client.call_tool(
            "registry_invoke_stream",
            {
                "provider": "everything",
                "tool": "trigger-long-running-operation",
                "arguments": {"duration": 1, "steps": 4},
            },
            progress_callback=on_progress,
        )
        assert not result.is_error
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
        recorded = result.meta["mcp_hangar"]["progress"]  # type: ignore[index]
        assert [p["progress"] for p in recorded] == [1, 2, 3, 4]

        # Plain registry_invoke relays progress too when the caller asks for it.
        seen.clear()
        await client.call_tool(
            "registry_invoke",
            {
                "provider": "everything",
                "tool": "trigger-long-running-operation",
                "arguments": {"duration": 0.4, "steps": 2},
            },
            progress_callback=on_progress,
        )
        assert seen == [(1, 2), (2, 2)]


async def test_killed_provider_fails_in_flight_calls_fast_then_recovers(config: Path) -> None:
    async with hangar(config) as client:
        await call(client, "registry_start", provider="faulty")
        first_pid = (await provider_row(client, "faulty"))["pid"]
        outcome: dict[str, Any] = {}

        async def long_call() -> None:
            outcome["result"] = await client.call_tool(
                "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 60}}
            )

        with anyio.fail_after(20):  # far below the 60 s the call would take if the death went unnoticed
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)

                async def in_flight() -> bool:
                    return (await provider_row(client, "faulty"))["in_flight"] == 1

                await wait_for(in_flight)
                os.kill(first_pid, signal.SIGKILL)
        text = outcome["result"].content[0].text
        assert outcome["result"].is_error
        assert "'faulty'" in text and "exited" in text, text
        assert (await provider_row(client, "faulty"))["state"] == "dead"

        again = await client.call_tool("registry_invoke", {"provider": "faulty", "tool": "pid", "arguments": {}})
        assert not again.is_error
        second_pid = int(again.content[0].text)  # type: ignore[union-attr]
        assert second_pid != first_pid
        stats = await health(client, "faulty")
        assert stats["crashes"] == 1 and stats["starts"] == 2 and stats["state"] == "ready"


async def test_crash_error_carries_the_stderr_tail(config: Path) -> None:
    async with hangar(config) as client:
        text = await fail(client, "registry_invoke", provider="faulty", tool="crash")
        assert "exited with code 3" in text
        assert "crashing on purpose" in text


async def test_invoke_ex_retries_only_when_safe(config: Path, tmp_path: Path) -> None:
    async with hangar(config) as client:
        await call(client, "registry_start", provider="faulty")
        # A read-only tool whose provider dies mid-call is retried on a fresh process.
        pid = (await provider_row(client, "faulty"))["pid"]
        outcome: dict[str, Any] = {}

        async def read_only_call() -> None:
            outcome["r"] = await client.call_tool(
                "registry_invoke_ex",
                {
                    "provider": "faulty",
                    "tool": "sleep",
                    "arguments": {"seconds": 0.5},
                    "max_retries": 2,
                    "correlation_id": "req-42",
                },
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_only_call)

            async def in_flight() -> bool:
                return (await provider_row(client, "faulty"))["in_flight"] == 1

            await wait_for(in_flight)
            os.kill(pid, signal.SIGKILL)
        result = outcome["r"]
        assert not result.is_error, result.content[0].text
        meta = result.meta["mcp_hangar"]
        assert meta["attempts"] == 2 and meta["correlation_id"] == "req-42"
        assert "exited" in meta["errors"][0]

        # A tool that is not annotated read-only or idempotent is not repeated once it was sent.
        failed = await client.call_tool("registry_invoke_ex", {"provider": "faulty", "tool": "crash", "max_retries": 3})
        assert failed.is_error
        assert "attempts: 1" in failed.content[0].text and "not retried" in failed.content[0].text
        assert failed.meta["mcp_hangar"]["attempts"] == 1

        ok = await client.call_tool("registry_invoke_ex", {"provider": "faulty", "tool": "bump", "max_retries": 3})
        assert not ok.is_error and ok.meta["mcp_hangar"]["attempts"] == 1
        assert (tmp_path / "bumps").read_text() == "bump\n"


async def test_idle_provider_is_stopped(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command(), "idle_ttl_s": 1}}
    )
    async with hangar(config) as client:
        await call(client, "registry_start", provider="everything")
        pid = (await provider_row(client, "everything"))["pid"]

        async def stopped() -> bool:
            return (await provider_row(client, "everything"))["state"] == "cold"

        await wait_for(stopped, timeout=15, every=0.2)
        await wait_for(lambda: _async(not pid_alive(pid)))


async def _async(value: bool) -> bool:
    return value


async def test_unanswered_health_checks_degrade_then_recover(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "everything": {
                "mode": "subprocess",
                "command": everything_command(),
                "health_check_interval_s": 0.5,
                "max_consecutive_failures": 2,
            }
        },
    )
    async with hangar(config) as client:
        await call(client, "registry_start", provider="everything")
        pid = (await provider_row(client, "everything"))["pid"]

        async def state_is(state: str) -> bool:
            return (await provider_row(client, "everything"))["state"] == state

        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        try:
            await wait_for(lambda: state_is("degraded"), timeout=20, every=0.2)
            stats = await health(client, "everything")
            assert stats["consecutive_failures"] >= 2
            assert "no answer to ping" in stats["last_error"]
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_for(lambda: state_is("ready"), timeout=20, every=0.2)
        assert (await health(client, "everything"))["health_checks"] >= 3


async def test_start_failures_are_explained(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "missing": {"mode": "subprocess", "command": ["/nonexistent/mcp-server"]},
            "garbage": {
                "mode": "subprocess",
                "command": ["sh", "-c", "echo 'this is not json'; sleep 60"],
                "startup_timeout_s": 1,
            },
            "exits": {"mode": "subprocess", "command": faulty_command("--exit-at-start")},
            "chatty": {"mode": "subprocess", "command": faulty_command("--garbage")},
        },
    )
    async with hangar(config) as client:
        text = await fail(client, "registry_invoke", provider="missing", tool="x")
        assert "'/nonexistent/mcp-server' was not found" in text

        text = await fail(client, "registry_invoke", provider="garbage", tool="x")
        assert "did not complete the MCP handshake within 1s" in text
        assert "'this is not json'" in text and "stdout must carry only MCP JSON-RPC" in text

        text = await fail(client, "registry_invoke", provider="exits", tool="x")
        assert "exited with code 7" in text and "cannot open database" in text

        # One stray line on stdout is survivable: the provider still works.
        ok = await client.call_tool("registry_invoke", {"provider": "chatty", "tool": "pid"})
        assert not ok.is_error

        text = await fail(client, "registry_invoke", provider="nope", tool="x")
        assert "unknown provider 'nope'" in text
        text = await fail(client, "registry_invoke", provider="chatty", tool="nope")
        assert "has no tool 'nope'" in text and "sleep" in text
        text = await fail(client, "registry_invoke", provider="chatty")
        assert "argument 'tool' is required" in text

        status = await client.call_tool("registry_status", {})
        dashboard = status.content[0].text  # type: ignore[union-attr]
        assert "missing" in dashboard and "dead" in dashboard and "Last errors:" in dashboard


async def test_status_discover_sources_and_stop(config: Path) -> None:
    async with hangar(config) as client:
        await call(client, "registry_warm")
        status = await client.call_tool("registry_status", {})
        assert "3 providers (3 ready)" in status.content[0].text  # type: ignore[union-attr]
        discover = await client.call_tool("registry_discover", {})
        assert not discover.is_error and "No discovery source is configured" in discover.content[0].text  # type: ignore[union-attr]
        assert (await call(client, "registry_sources"))["sources"] == []

        pid = (await provider_row(client, "everything"))["pid"]
        stopped = await call(client, "registry_stop", provider="everything")
        assert stopped == {"provider": "everything", "stopped": True, "state": "cold"}
        assert not pid_alive(pid)


async def test_client_hangup_leaves_no_process(config: Path) -> None:
    async with hangar(config) as client:
        await call(client, "registry_warm")
        pids = [r["pid"] for r in (await call(client, "registry_list"))["providers"]]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    await wait_for(lambda: _async(not any(pid_alive(p) for p in pids)), timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_every_provider(config: Path, sig: signal.Signals) -> None:
    import subprocess
    import sys

    proc = await anyio.open_process(
        [sys.executable, "-m", "mcp_hangar", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin and proc.stdout
    buffer = b""

    async def rpc(message: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal buffer
        await proc.stdin.send(json.dumps(message).encode() + b"\n")  # type: ignore[union-attr]
        if "id" not in message:
            return None
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                reply = json.loads(line)
                if reply.get("id") == message["id"]:
                    return reply
            buffer += await proc.stdout.receive()  # type: ignore[union-attr]

    with anyio.fail_after(30):
        init = await rpc(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
        )
        assert init and init["result"]["serverInfo"]["name"] == "mcp-hangar"
        await rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await rpc(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "registry_warm", "arguments": {}}}
        )
        listed = await rpc(
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "registry_list", "arguments": {}}}
        )
        assert listed is not None
        pids = [r["pid"] for r in listed["result"]["structuredContent"]["providers"]]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
        proc.send_signal(sig)
        code = await proc.wait()
    assert code == 0
    assert not any(pid_alive(p) for p in pids)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_client_cancellation_reaches_the_provider(config: Path, tmp_path: Path, mode: str) -> None:
    async with hangar(config, mode=mode) as client:
        await call(client, "registry_start", provider="faulty")
        with anyio.CancelScope() as scope:

            async def cancel_once_in_flight() -> None:
                async def in_flight() -> bool:
                    return (await provider_row(client, "faulty"))["in_flight"] == 1

                await wait_for(in_flight)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_once_in_flight)
                await client.call_tool(
                    "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 31}}
                )
        assert scope.cancelled_caught

        async def provider_saw_cancel() -> bool:
            return any(tmp_path.glob("cancelled-31*"))

        await wait_for(provider_saw_cancel, timeout=10)
        assert (await provider_row(client, "faulty"))["in_flight"] == 0


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_progress_reaches_clients_of_both_eras(config: Path, mode: str) -> None:
    async with hangar(config, mode=mode) as client:
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        result = await client.call_tool(
            "registry_invoke",
            {
                "provider": "everything",
                "tool": "trigger-long-running-operation",
                "arguments": {"duration": 0.3, "steps": 3},
            },
            progress_callback=on_progress,
        )
        assert not result.is_error
        assert seen == [1, 2, 3]


async def test_stdin_from_a_plain_file_is_served(config: Path, tmp_path: Path) -> None:
    """stdin that is a regular file (not a pipe) falls back to the SDK's own stdio transport.

    End of file is the client hanging up, so only the handshake, answered before anything else
    is read, can be relied on.
    """
    import subprocess
    import sys

    requests = tmp_path / "requests.jsonl"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "script", "version": "1"},
        },
    }
    requests.write_text(json.dumps(initialize) + "\n")
    with requests.open("rb") as stdin:
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "mcp_hangar", "--config", str(config)],
                stdin=stdin,
                capture_output=True,
                timeout=60,
                check=False,
            )
        )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.decode().splitlines()[0])
    assert reply["id"] == 1 and reply["result"]["serverInfo"]["name"] == "mcp-hangar"
    assert b"Traceback" not in done.stderr


async def test_arguments_are_validated_against_the_provider_schema(config: Path) -> None:
    async with hangar(config) as client:
        text = await fail(client, "registry_invoke", provider="everything", tool="echo", arguments={"message": 5})
        assert "provider 'everything', tool 'echo': argument 'message' is invalid: 5 is not of type 'string'" in text
        text = await fail(client, "registry_invoke", provider="everything", tool="get-sum", arguments={"a": 1})
        assert "'b' is a required property" in text
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(100):
            node["x"] = {}
            node = node["x"]
        text = await fail(
            client, "registry_invoke", provider="everything", tool="echo", arguments={"message": "m", "d": deep}
        )
        assert "arguments nest deeper than 64 levels" in text
        assert (await health(client, "everything"))["invocations"] == 0  # nothing bad reached the provider


async def test_a_provider_rate_limit_refuses_with_a_clear_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "everything": {
                "mode": "subprocess",
                "command": everything_command(),
                "rate_limit": {"rate": 0.5, "burst": 2},
            }
        },
    )
    async with hangar(config) as client:
        results = [
            await client.call_tool(
                "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "m"}}
            )
            for _ in range(3)
        ]
        assert [r.is_error for r in results] == [False, False, True]
        assert "rate limit for provider 'everything' exceeded (0.5/s, burst 2); retry in" in results[2].content[0].text  # type: ignore[union-attr]
        audit = await call(client, "registry_audit", type="security_decision")
        assert [e["data"]["decision"] for e in audit["events"]] == ["rate_limited"]
        assert audit["events"][0]["stream"] == "hangar.security"


async def test_circuit_breaker_opens_fails_fast_and_closes_after_a_probe(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "faulty": {
                "mode": "subprocess",
                "command": faulty_command(),
                "circuit_breaker": {"failure_threshold": 2, "reset_timeout_s": 1},
                "max_consecutive_failures": 10,
            }
        },
    )
    async with hangar(config) as client:
        for _ in range(2):
            text = await fail(
                client, "registry_invoke", provider="faulty", tool="sleep", arguments={"seconds": 5}, timeout=0.1
            )
            assert "did not answer" in text
        sent_before = (await health(client, "faulty"))["invocations"]
        text = await fail(client, "registry_invoke", provider="faulty", tool="sleep", arguments={"seconds": 0})
        assert "circuit breaker open" in text and "the call was not sent" in text and "next attempt allowed in" in text
        stats = await health(client, "faulty")
        assert stats["circuit_breaker"] == "open" and stats["invocations"] == sent_before  # failed fast

        await anyio.sleep(1.1)
        ok = await client.call_tool(
            "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 0}}
        )
        assert not ok.is_error  # the probe went through
        assert (await health(client, "faulty"))["circuit_breaker"] == "closed"
        audit = await call(client, "registry_audit", type="circuit_breaker_changed")
        assert [e["data"]["state"] for e in audit["events"]] == ["open", "half_open", "closed"]


async def test_eager_recovery_restarts_a_dead_provider_without_a_call(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command(), "recovery": {"mode": "eager"}}},
    )
    async with hangar(config) as client:
        await call(client, "registry_start", provider="everything")
        first = (await provider_row(client, "everything"))["pid"]
        os.kill(first, signal.SIGKILL)

        async def back_by_itself() -> bool:
            row = await provider_row(client, "everything")
            return row["state"] == "ready" and row["pid"] not in (None, first)

        await wait_for(back_by_itself, timeout=15, every=0.1)
        audit = await call(client, "registry_audit", type="provider_recovery_attempt")
        assert audit["events"][0]["data"]["mode"] == "eager"


async def test_a_crash_loop_stops_restarts_until_registry_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "flaky": {
                "mode": "subprocess",
                "command": faulty_command("--exit-at-start"),
                "recovery": {"max_attempts": 2, "backoff_base_s": 0.1, "cooldown_s": 600},
            }
        },
    )
    async with hangar(config) as client:
        for _ in range(2):
            text = await fail(client, "registry_invoke", provider="flaky", tool="pid")
            assert "exited with code 7" in text
        text = await fail(client, "registry_invoke", provider="flaky", tool="pid")
        assert "crash loop (2 failures in a row" in text and "call registry_start" in text
        assert (await health(client, "flaky"))["start_failures"] == 2  # no third attempt was made
        audit = await call(client, "registry_audit", type="provider_crash_loop")
        assert audit["events"][0]["data"]["failures"] == 2
        # an operator's registry_start tries again (and here fails again, for the same reason)
        text = await fail(client, "registry_start", provider="flaky")
        assert "exited with code 7" in text
        assert (await health(client, "flaky"))["start_failures"] == 3
