"""Remote providers: MCP servers elsewhere, over streamable HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import EVERYTHING_JS, everything_command, hangar, write_config
from tests.e2e.test_http import http_hangar

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def everything_http(port: int) -> AsyncIterator[Any]:
    """server-everything in its own streamable HTTP mode on a loopback port."""
    everything_command()  # fails clearly when it is not installed
    process = await anyio.open_process(
        ["node", str(EVERYTHING_JS), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_a_remote_provider_works_relays_progress_and_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "c.yaml",
        {"far": {"mode": "remote", "endpoint": f"http://127.0.0.1:{port}/mcp", "startup_timeout_s": 5}},
    )
    async with hangar(config) as client:
        async with everything_http(port):
            result = await client.call_tool(
                "registry_invoke", {"provider": "far", "tool": "echo", "arguments": {"message": "far away"}}
            )
            assert result.content[0].text == "Echo: far away"  # type: ignore[union-attr]
            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            await client.call_tool(
                "registry_invoke",
                {
                    "provider": "far",
                    "tool": "trigger-long-running-operation",
                    "arguments": {"duration": 0.3, "steps": 3},
                },
                progress_callback=on_progress,
            )
            assert seen == [1, 2, 3]
        # the remote is gone: a clear error, not a hang
        down = await client.call_tool(
            "registry_invoke", {"provider": "far", "tool": "echo", "arguments": {"message": "x"}}
        )
        assert down.is_error
        assert f"cannot reach http://127.0.0.1:{port}/mcp" in down.content[0].text  # type: ignore[union-attr]
        # it comes back on the same address: hangar reconnects by itself
        async with everything_http(port):
            with anyio.fail_after(20):
                while True:
                    again = await client.call_tool(
                        "registry_invoke", {"provider": "far", "tool": "echo", "arguments": {"message": "back"}}
                    )
                    if not again.is_error:
                        break
                    await anyio.sleep(0.3)
            assert again.content[0].text == "Echo: back"  # type: ignore[union-attr]


async def test_headers_carry_a_token_and_a_refusal_says_so(tmp_path: Path) -> None:
    # The remote is another hangar, serving HTTP with API keys required.
    upstream = write_config(
        tmp_path / "up.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        auth={"enabled": True},
    )
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_hangar",
            "keys",
            "create",
            "--name",
            "edge",
            "--role",
            "user",
            "--config",
            str(upstream),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    async with http_hangar(upstream) as (base, _):
        config = write_config(
            tmp_path / "edge.yaml",
            {
                "good": {
                    "mode": "remote",
                    "endpoint": f"{base}/mcp",
                    "headers": {"Authorization": "Bearer ${UPSTREAM_KEY}"},
                },
                "bad": {
                    "mode": "remote",
                    "endpoint": f"{base}/mcp",
                    "headers": {"Authorization": "Bearer mhk_0_wrong"},
                },
                "old": {
                    "mode": "remote",
                    "transport": "sse",
                    "endpoint": f"{base}/sse",
                    "headers": {"Authorization": "Bearer ${UPSTREAM_KEY}"},
                },
                "old-bad": {"mode": "remote", "transport": "sse", "endpoint": f"{base}/sse", "startup_timeout_s": 5},
            },
        )
        async with hangar(config, env={"UPSTREAM_KEY": key}) as client:
            result = await client.call_tool(
                "registry_invoke",
                {
                    "provider": "good",
                    "tool": "registry_invoke",
                    "arguments": {"provider": "everything", "tool": "echo", "arguments": {"message": "chained"}},
                },
            )
            assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
            assert "Echo: chained" in result.content[0].text  # type: ignore[union-attr]
            refused = await client.call_tool("registry_invoke", {"provider": "bad", "tool": "x"})
            assert refused.is_error
            text = refused.content[0].text  # type: ignore[union-attr]
            assert "remote provider 'bad' refused our credentials (HTTP 401)" in text, text

            # the legacy SSE transport, with and without the token
            arguments = {"provider": "everything", "tool": "echo", "arguments": {"message": "over sse"}}
            old = await client.call_tool(
                "registry_invoke", {"provider": "old", "tool": "registry_invoke", "arguments": arguments}
            )
            assert not old.is_error, old.content[0].text  # type: ignore[union-attr]
            assert "Echo: over sse" in old.content[0].text  # type: ignore[union-attr]
            refused = await client.call_tool("registry_invoke", {"provider": "old-bad", "tool": "x"})
            assert refused.is_error
            assert "remote provider 'old-bad' refused our credentials (HTTP 401)" in refused.content[0].text  # type: ignore[union-attr]
