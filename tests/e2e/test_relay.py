"""Providers' requests of their client mid-call - sampling, elicitation, roots - relayed to the client
whose call the provider is serving, over stdio and over HTTP, and refused clearly when they cannot be."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from tests.conftest import everything_command, hangar, write_config
from tests.e2e.test_http import http_hangar

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled: {prompt}"), model="test-model"
    )


async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"color": "blue"})


async def roots(ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///srv/project", name="project")])


CALLBACKS = {"sampling_callback": sampling, "elicitation_callback": elicitation, "list_roots_callback": roots}


def text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def invoke(client: Client, tool: str, **arguments: Any) -> Any:
    return await client.call_tool("registry_invoke", {"provider": "everything", "tool": tool, "arguments": arguments})


async def test_over_stdio_sampling_elicitation_and_roots_reach_the_client(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with hangar(config, mode="legacy", **CALLBACKS) as client:
        sampled = await invoke(client, "trigger-sampling-request", prompt="what is MCP?")
        assert not sampled.is_error and "sampled: " in text(sampled) and "what is MCP?" in text(sampled), text(sampled)
        elicited = await invoke(client, "trigger-elicitation-request")
        assert not elicited.is_error and "Favorite Color: blue" in text(elicited), text(elicited)
        listed = await invoke(client, "get-roots-list")
        assert "file:///srv/project" in text(listed), text(listed)


async def test_a_client_that_cannot_sample_is_not_asked(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with hangar(config, mode="legacy") as client:
        refused = await invoke(client, "trigger-sampling-request", prompt="x")
        assert refused.is_error, text(refused)
        assert "the calling client did not declare 'sampling' support" in text(refused), text(refused)
        listed = await invoke(client, "get-roots-list")  # roots it may simply not have: an empty list
        assert not listed.is_error


async def test_over_http_each_call_asks_its_own_client(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with http_hangar(config) as (base, _), Client(f"{base}/mcp", mode="legacy", **CALLBACKS) as client:
        sampled = await invoke(client, "trigger-sampling-request", prompt="over http")
        assert "sampled: " in text(sampled) and "over http" in text(sampled), text(sampled)

        # two clients with calls in flight on one provider: a request cannot be told apart
        async with Client(f"{base}/mcp", mode="legacy", **CALLBACKS) as other, anyio.create_task_group() as tg:
            tg.start_soon(partial(invoke, other, "trigger-long-running-operation", duration=2, steps=2))
            await anyio.sleep(0.5)
            ambiguous = await invoke(client, "trigger-sampling-request", prompt="whose?")
        assert ambiguous.is_error and "calls of several clients are in flight" in text(ambiguous), text(ambiguous)


async def test_a_client_answering_garbage_does_not_take_hangar_down(tmp_path: Path) -> None:
    import json

    from tests.conftest import RawHangar

    config = write_config(tmp_path / "c.yaml", {"everything": {"mode": "subprocess", "command": everything_command()}})
    async with RawHangar.running(config) as raw:
        await raw.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"sampling": {}},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
        )
        assert (await raw.receive())["id"] == 1
        await raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        answers = [{"result": {"foo": 1}}, {"error": {"code": "not a number", "message": 42}}]
        for n, answer in enumerate(answers):
            call = {"provider": "everything", "tool": "trigger-sampling-request", "arguments": {"prompt": "p"}}
            await raw.send(
                {
                    "jsonrpc": "2.0",
                    "id": 100 + n,
                    "method": "tools/call",
                    "params": {"name": "registry_invoke", "arguments": call},
                }
            )
            while (message := await raw.receive()).get("method") != "sampling/createMessage":
                pass
            await raw.send({"jsonrpc": "2.0", "id": message["id"], **answer})
            while (reply := await raw.receive()).get("id") != 100 + n:
                pass
            assert reply["result"]["isError"], json.dumps(reply)[:300]  # the provider's tool failed, cleanly
        alive = await raw.tool("registry_list")
        assert json.loads(alive["content"][0]["text"])["providers"][0]["state"] == "ready"
