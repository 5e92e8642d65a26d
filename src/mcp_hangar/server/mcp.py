"""The MCP face of hangar: a low-level SDK server whose tools are the registry tools."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from mcp_hangar import __version__
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Guard
from mcp_hangar.server import tools
from mcp_hangar.store.writer import EventWriter

INSTRUCTIONS = (
    "MCP Hangar runs MCP providers for you. Use registry_list to see them, registry_tools to see a "
    "provider's tools, and registry_invoke to call one; providers start on first use."
)


def build_server(registry: Registry, events: EventWriter | None = None, guard: Guard | None = None) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools.TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | dict[str, Any]:
        return await tools.call(
            tools.ToolContext.from_sdk(registry, events, guard, ctx), params.name, params.arguments or {}
        )

    server: Server[Any] = Server(
        "mcp-hangar",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,  # type: ignore[arg-type]
    )
    return server
