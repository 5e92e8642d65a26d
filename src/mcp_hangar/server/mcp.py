"""The MCP face of hangar: a low-level SDK server whose tools are the registry tools."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST

from mcp_hangar import __version__
from mcp_hangar.domain.errors import ProviderError, RemoteError
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Denied, Guard
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
            notification_options = NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
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
        served = aggregate.listed(registry, _usable(guard, ctx))
        if list_changed is not None and registry.aggregate is not None and registry.aggregate.enabled:
            list_changed.listening(ctx.session)
        return types.ListToolsResult(tools=[*tools.TOOLS, *served])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | dict[str, Any]:
        return await tools.call(
            tools.ToolContext.from_sdk(registry, events, guard, ctx), params.name, params.arguments or {}
        )

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=await aggregate.list_prompts(registry, _usable(guard, ctx)))

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
        _check(guard, ctx, "prompts/get", aggregate.route(registry, params.name))
        result = await _relayed(aggregate.get_prompt(registry, params.name, params.arguments))
        return types.GetPromptResult.model_validate(result)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=await aggregate.list_resources(registry, _usable(guard, ctx)))

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        _check(guard, ctx, "resources/read", aggregate.resource_target(registry, str(params.uri)))
        result = await _relayed(aggregate.read_resource(registry, str(params.uri)))
        return types.ReadResourceResult.model_validate(result)

    aggregated = registry.aggregate is not None and registry.aggregate.enabled
    server = HangarServer(
        "mcp-hangar",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,  # type: ignore[arg-type]
        on_list_prompts=list_prompts if aggregated else None,
        on_get_prompt=get_prompt if aggregated else None,
        on_list_resources=list_resources if aggregated else None,
        on_read_resource=read_resource if aggregated else None,
    )
    server.notify_tools_changed = registry.aggregate is not None and registry.aggregate.enabled
    return server


def _usable(guard: Guard | None, ctx: ServerRequestContext[Any]) -> set[str] | None:
    """The providers the caller may use: listings show only those."""
    if guard is None:
        return None
    return guard.usable_providers(getattr(getattr(ctx.request, "state", None), "principal", None))


def _check(guard: Guard | None, ctx: ServerRequestContext[Any], method: str, target: tuple[str, str] | None) -> None:
    """Getting a prompt or reading a resource is using its provider: the same rights as a call."""
    state = getattr(ctx.request, "state", None)
    if guard is None or getattr(state, "decided", False):
        return  # stdio, or the HTTP gate decided already
    try:
        guard.check_call(getattr(state, "principal", None), "registry_invoke", target[0] if target else None)
    except Denied as exc:
        raise MCPError(code=INVALID_REQUEST, message=f"{method}: {exc}") from None


async def _relayed(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A provider's answer, or its failure as a JSON-RPC error a client can read."""
    try:
        return await work
    except LookupError as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
    except RemoteError as exc:
        raise MCPError(code=exc.code, message=exc.remote_message, data=exc.data) from None
    except ProviderError as exc:
        raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from None
