"""Aggregated mode: provider tools listed and called directly as <provider>__<tool>."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import everything_command, hangar, time_command, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TIME_TOOL = {
    "name": "get_current_time",
    "description": "The time now",
    "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
}


def config_for(tmp_path: Path, **aggregate: Any) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        {
            "everything": {"mode": "subprocess", "command": everything_command()},
            "time": {"mode": "subprocess", "command": time_command(), "tools": [TIME_TOOL]},
            "pool": {"mode": "group", "members": ["everything"]},
        },
        aggregate={"enabled": True, **aggregate},
    )


async def test_provider_tools_are_listed_called_and_announced(tmp_path: Path) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(getattr(message, "root", message), "method", None) == "notifications/tools/list_changed":
            changed.set()

    config = config_for(tmp_path, deny=["*__get-env"])
    async with hangar(config, mode="legacy", message_handler=on_message) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "registry_invoke" in names and "time__get_current_time" in names  # predefined: no start
        assert not any(n.startswith(("everything__", "pool__")) for n in names)  # not known until it runs

        echo = await client.call_tool("everything__echo", {"message": "direct"})
        assert not echo.is_error and echo.content[0].text == "Echo: direct"  # type: ignore[union-attr]
        with anyio.fail_after(5):
            await changed.wait()  # the client is told the list grew
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "everything__echo" in tools and "pool__echo" in tools
        assert tools["everything__echo"].description.startswith("[everything] ")  # type: ignore[union-attr]
        assert tools["everything__echo"].input_schema["required"] == ["message"]
        assert "everything__get-env" not in tools and "pool__get-env" not in tools  # denied

        via_group = await client.call_tool("pool__echo", {"message": "pooled"})
        assert via_group.content[0].text == "Echo: pooled"  # type: ignore[union-attr]
        now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not now.is_error and "UTC" in now.content[0].text  # type: ignore[union-attr]

        # the same checks as registry_invoke: arguments validated against the tool's schema
        bad = await client.call_tool("everything__echo", {})
        assert bad.is_error and "'message' is a required property" in bad.content[0].text  # type: ignore[union-attr]
        for name in ("everything__get-env", "nobody__echo", "everything__"):
            refused = await client.call_tool(name, {})
            assert refused.is_error and f"unknown tool {name!r}" in refused.content[0].text  # type: ignore[union-attr]


async def test_allow_patterns_and_roles_over_http(tmp_path: Path) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.e2e.test_auth import call_body, invoke_as, make_key, post
    from tests.e2e.test_http import http_hangar

    config = config_for(tmp_path, allow=["time__*"])
    config.write_text(config.read_text() + "auth: {enabled: true}\n")
    viewer, user = make_key(config, "viewer"), make_key(config, "user")
    async with http_hangar(config) as (base, _):
        refused = await post(base, call_body("time__get_current_time", {"timezone": "UTC"}), {"x-api-key": viewer})
        assert refused.status_code == 403 and "may not call registry_invoke" in refused.text
        result = await invoke_as(base, user, "time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error, result
        started = await invoke_as(
            base, user, "registry_invoke", {"provider": "everything", "tool": "echo", "arguments": {"message": "x"}}
        )
        assert not started.is_error
        http = httpx2.AsyncClient(headers={"x-api-key": user}, timeout=30)
        async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert "time__get_current_time" in names
        assert not any(n.startswith(("everything__", "pool__")) for n in names)  # outside the allow list
        http = httpx2.AsyncClient(headers={"x-api-key": viewer}, timeout=30)
        async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
            seen = {t.name for t in (await client.list_tools()).tools}
        assert "registry_list" in seen and not any("__" in n for n in seen)  # a viewer may not call them
        # a provider's prompts and resources need the same rights as its tools, decided before the SDK
        for method, params in (
            ("prompts/get", {"name": "time__some-prompt"}),
            ("resources/read", {"uri": "hangar://time/file%3A%2F%2F%2Fx"}),
        ):
            body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
            denied = await post(base, body, {"x-api-key": viewer})
            assert denied.status_code == 403 and "may not call registry_invoke" in denied.text, (method, denied.text)
        # outside the allow list it is no tool at all, refused before it could reach anything
        outside = await post(base, call_body("everything__echo", {"message": "x"}), {"x-api-key": user})
        assert outside.status_code == 403 and "may not call everything__echo" in outside.text


async def test_prompts_and_resources_of_running_providers(tmp_path: Path) -> None:
    from mcp.shared.exceptions import MCPError

    config = config_for(tmp_path)
    async with hangar(config, mode="legacy") as client:
        assert (await client.list_prompts()).prompts == []  # listing never starts a provider
        assert (await client.list_resources()).resources == []
        await client.call_tool("registry_start", {"provider": "everything"})

        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert "everything__simple-prompt" in prompts and "everything__args-prompt" in prompts
        got = await client.get_prompt("everything__simple-prompt", {})
        assert got.messages[0].content.text == "This is a simple prompt without arguments."  # type: ignore[union-attr]

        resources = (await client.list_resources()).resources
        static = next(r for r in resources if str(r.uri).endswith("architecture.md"))
        assert str(static.uri) == "hangar://everything/demo%3A%2F%2Fresource%2Fstatic%2Fdocument%2Farchitecture.md"
        assert static.name == "[everything] architecture.md"
        read = await client.read_resource(static.uri)
        assert str(read.contents[0].uri) == str(static.uri)  # the provider's URI is rewritten back to ours
        assert "Architecture" in read.contents[0].text  # type: ignore[union-attr]

        with pytest.raises(MCPError, match="unknown prompt 'nobody__x'"):
            await client.get_prompt("nobody__x", {})
        with pytest.raises(MCPError, match="unknown resource"):
            await client.read_resource("file:///etc/passwd")
        with pytest.raises(MCPError, match="is a group"):
            await client.get_prompt("pool__simple-prompt", {})


async def test_over_http_connected_clients_are_told_the_lists_changed(tmp_path: Path) -> None:
    from mcp import Client

    from tests.e2e.test_http import http_hangar

    seen: list[str] = []
    told = anyio.Event()

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if isinstance(method, str) and method.endswith("/list_changed"):
            seen.append(method)
            told.set()

    config = config_for(tmp_path)
    async with (
        http_hangar(config) as (base, _),
        Client(f"{base}/mcp", mode="legacy", message_handler=on_message) as client,
    ):
        await client.list_tools()  # a client that listed is one to tell
        await client.call_tool("everything__echo", {"message": "x"})  # a provider starts
        with anyio.fail_after(5):
            await told.wait()
        await anyio.sleep(0.3)
    assert "notifications/tools/list_changed" in seen and "notifications/resources/list_changed" in seen
