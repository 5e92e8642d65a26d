"""HTTP mode end to end: a real `mcp-hangar --http` process, the SDK's streamable HTTP and SSE
clients, health endpoints and /metrics scraped and parsed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import everything_command, faulty_command, pid_alive, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@asynccontextmanager
async def http_hangar(config: Path, *extra: str) -> AsyncIterator[tuple[str, Any]]:
    """Start `mcp-hangar --http --port 0`; yield its base URL (read from its start log) and the process."""
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_hangar", "--config", str(config), "--http", "--port", "0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    log = b""
    try:
        with anyio.fail_after(30):
            while (found := re.search(rb"url='(http://[^']+)/mcp'", log)) is None:
                chunk = await process.stderr.receive()
                log += chunk
        base = found.group(1).decode()

        async def drain() -> None:
            async for _ in process.stderr:  # keep the pipe flowing
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            yield base, process
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
        await process.wait()


async def client_after_crash(base: str) -> None:
    """One more call to the crashed provider: a lazy recovery attempt."""
    async with Client(f"{base}/mcp") as client:
        result = await client.call_tool("registry_invoke", {"provider": "faulty", "tool": "pid"})
        assert not result.is_error


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {
            "everything": {"mode": "subprocess", "command": everything_command()},
            "faulty": {"mode": "subprocess", "command": faulty_command()},
        },
    )


async def test_streamable_http_both_eras_and_sse(config: Path) -> None:
    async with http_hangar(config) as (base, _):
        async with Client(f"{base}/mcp") as client:
            assert client.protocol_version == "2026-07-28"
            result = await client.call_tool(
                "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "modern"}}
            )
            assert result.content[0].text == "Echo: modern"  # type: ignore[union-attr]
        async with Client(f"{base}/mcp", mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            result = await client.call_tool(
                "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "classic"}}
            )
            assert result.content[0].text == "Echo: classic"  # type: ignore[union-attr]
        async with Client(sse_client(f"{base}/sse"), mode="legacy") as client:
            result = await client.call_tool(
                "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "sse"}}
            )
            assert result.content[0].text == "Echo: sse"  # type: ignore[union-attr]
            failed = await client.call_tool("registry_invoke", {"provider": "nope", "tool": "x"})
            assert failed.is_error and "unknown provider 'nope'" in failed.content[0].text  # type: ignore[union-attr]


async def test_stateless_mode_serves_without_sessions(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        server={"stateless": True},
    )
    async with http_hangar(config) as (base, _), Client(f"{base}/mcp", mode="legacy") as client:
        result = await client.call_tool(
            "registry_invoke", {"provider": "everything", "tool": "get-sum", "arguments": {"a": 1, "b": 2}}
        )
        assert not result.is_error and "3" in result.content[0].text  # type: ignore[union-attr]


async def test_health_answers_while_a_call_takes_seconds(config: Path) -> None:
    async with http_hangar(config) as (base, _), httpx2.AsyncClient(base_url=base) as web:
        startup = await web.get("/health/startup")
        assert startup.status_code == 200 and startup.json()["status"] == "started"
        ready = await web.get("/health/ready")
        assert ready.status_code == 200  # cold providers do not make hangar unready
        assert ready.json()["checks"] == {"started": True, "accepting": True, "event_store": True}

        async with Client(f"{base}/mcp") as client:
            done: list[bool] = []

            async def slow() -> None:
                await client.call_tool(
                    "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": 4}}
                )
                done.append(True)

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                with anyio.fail_after(20):
                    while True:  # wait until the slow call is inside the provider
                        gauge = samples((await web.get("/metrics")).text)
                        if gauge.get(("mcp_hangar_tool_calls_in_flight", (("provider", "faulty"),))) == 1:
                            break
                        await anyio.sleep(0.05)
                live = await web.get("/health/live")
                assert live.status_code == 200 and live.json() == {"status": "alive"}
                assert done == []  # answered while the call was still running


async def test_metrics_move_with_calls(config: Path) -> None:
    async with http_hangar(config) as (base, _), httpx2.AsyncClient(base_url=base) as web:
        before = samples((await web.get("/metrics")).text)
        assert before[("mcp_hangar_provider_state", (("provider", "everything"), ("state", "cold")))] == 1
        async with Client(f"{base}/mcp") as client:
            for n in range(3):
                await client.call_tool(
                    "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": str(n)}}
                )
            await client.call_tool("registry_invoke", {"provider": "faulty", "tool": "crash"})
        after = samples((await web.get("/metrics")).text)
        ok = ("mcp_hangar_tool_calls_total", (("outcome", "ok"), ("provider", "everything"), ("tool", "echo")))
        assert after[ok] == 3
        errors = ("mcp_hangar_tool_calls_total", (("outcome", "error"), ("provider", "faulty"), ("tool", "crash")))
        assert after[errors] == 1
        assert after[("mcp_hangar_provider_crashes_total", (("provider", "faulty"),))] == 1
        await client_after_crash(base)
        recovered = samples((await web.get("/metrics")).text)
        assert (
            recovered[("mcp_hangar_provider_recovery_attempts_total", (("mode", "lazy"), ("provider", "faulty")))] == 1
        )
        assert after[("mcp_hangar_provider_starts_total", (("provider", "everything"),))] == 1
        assert after[("mcp_hangar_provider_state", (("provider", "everything"), ("state", "ready")))] == 1
        assert after[("mcp_hangar_provider_state", (("provider", "everything"), ("state", "cold")))] == 0
        assert after[("mcp_hangar_tool_call_duration_seconds_count", (("provider", "everything"),))] == 3
        assert after[("mcp_hangar_provider_cold_start_seconds_count", (("provider", "everything"),))] == 1
        assert after[("mcp_hangar_http_requests_total", (("route", "/metrics"), ("status", "200")))] >= 1
        assert after[("mcp_hangar_tool_calls_in_flight", (("provider", "everything"),))] == 0
        assert after[("mcp_hangar_tool_calls_in_flight", (("provider", "faulty"),))] == 0
        await web.get("/no/such/page")
        unknown = samples((await web.get("/metrics")).text)
        assert unknown[("mcp_hangar_http_requests_total", (("route", "other"), ("status", "404")))] == 1
        tools = {dict(labels).get("tool") for (name, labels) in unknown if name == "mcp_hangar_tool_calls_total"}
        assert tools == {"echo", "crash", "pid"}  # only tools the providers really have


async def test_a_taken_port_is_a_clear_error(config: Path) -> None:
    async with http_hangar(config) as (base, _):
        port = base.rsplit(":", 1)[1]
        clash = subprocess.run(
            [sys.executable, "-m", "mcp_hangar", "--config", str(config), "--http", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert clash.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in clash.stderr


async def test_sigterm_stops_http_hangar_and_its_providers(config: Path) -> None:
    async with http_hangar(config) as (base, process):
        async with Client(f"{base}/mcp") as client:
            await client.call_tool("registry_warm", {})
            listed = await client.call_tool("registry_list", {})
            pids = [row["pid"] for row in json.loads(listed.content[0].text)["providers"]]  # type: ignore[union-attr]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
    assert not any(pid_alive(p) for p in pids)


@pytest.mark.parametrize(("mode", "seconds"), [("legacy", 31), ("auto", 32)])
async def test_progress_and_cancellation_over_http(tmp_path: Path, mode: str, seconds: int) -> None:
    config = write_config(
        tmp_path / "m.yaml",
        {
            "everything": {"mode": "subprocess", "command": everything_command()},
            "faulty": {"mode": "subprocess", "command": faulty_command(), "env": {"MARKER_DIR": str(tmp_path)}},
        },
    )
    async with http_hangar(config) as (base, _), Client(f"{base}/mcp", mode=mode) as client:
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
        assert not result.is_error and seen == [1, 2, 3]

        # the client gives up on a call: the provider's request is cancelled too
        with anyio.move_on_after(1.5):
            await client.call_tool(
                "registry_invoke", {"provider": "faulty", "tool": "sleep", "arguments": {"seconds": seconds}}
            )
        with anyio.fail_after(10):
            while not any(tmp_path.glob(f"cancelled-{seconds}*")):
                await anyio.sleep(0.05)
