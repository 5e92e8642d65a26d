"""The MCP face of hangar: a low-level SDK server whose tools are the registry tools."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions

from mcp_hangar import __version__
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Guard
from mcp_hangar.server import aggregate, tools
from mcp_hangar.store.writer import EventWriter

INSTRUCTIONS = (
    "MCP Hangar runs MCP providers for you. Use registry_list to see them, registry_tools to see a "
    "provider's tools, and registry_invoke to call one; providers start on first use."
)


class HangarServer(Server[Any]):
    """The SDK's low-level server, announcing ``tools.listChanged`` when aggregated mode is on."""

    notify_tools_changed = False

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        if notification_options is None and self.notify_tools_changed:
            notification_options = NotificationOptions(tools_changed=True)
        return super().create_initialization_options(notification_options, experimental_capabilities, extensions)


def build_server(
    registry: Registry,
    events: EventWriter | None = None,
    guard: Guard | None = None,
    list_changed: aggregate.ListChanged | None = None,
) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        served = aggregate.listed(registry)
        if list_changed is not None and registry.aggregate is not None and registry.aggregate.enabled:
            list_changed.listening(ctx.session)
        return types.ListToolsResult(tools=[*tools.TOOLS, *served])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | dict[str, Any]:
        return await tools.call(
            tools.ToolContext.from_sdk(registry, events, guard, ctx), params.name, params.arguments or {}
        )

    server = HangarServer(
        "mcp-hangar",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,  # type: ignore[arg-type]
    )
    server.notify_tools_changed = registry.aggregate is not None and registry.aggregate.enabled
    return server
