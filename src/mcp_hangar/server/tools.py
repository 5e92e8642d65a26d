"""The registry_* tools: their schemas, and what each one does."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_hangar.domain.errors import NotSupported, ProviderError, RemoteError, UnknownProvider
from mcp_hangar.domain.retry import retry_safe
from mcp_hangar.domain.states import ProviderState
from mcp_hangar.launchers.session import ProgressFn
from mcp_hangar.runtime.group import Group
from mcp_hangar.runtime.provider import ClientLink, Provider
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Denied, Guard, Principal
from mcp_hangar.security.validation import ArgumentValidator, InvalidArguments
from mcp_hangar.server import aggregate
from mcp_hangar.server.dashboard import render_status
from mcp_hangar.server.relay import SdkLink
from mcp_hangar.store.base import EventQuery, StoredEvent, parse_duration
from mcp_hangar.store.writer import EventWriter

STATES = [s.value for s in ProviderState]
MAX_RETRIES = 10
MAX_RECORDED_PROGRESS = 100
MAX_AUDIT_EVENTS = 1000
# Keys of a modern-era provider result that describe the provider's own connection, not the
# tool's answer. Our server stamps its own; passing the provider's on would misinform the client.
_PROVIDER_META_KEYS = ("io.modelcontextprotocol/serverInfo",)


class BadArguments(Exception):
    pass


Handler = Callable[["ToolContext", dict[str, Any]], Awaitable[types.CallToolResult | dict[str, Any]]]


@dataclass(slots=True)
class ToolContext:
    """What a registry tool needs to know about the request it serves."""

    registry: Registry
    events: EventWriter | None  # the event log, when one is configured
    protocol_version: str  # the client's, which decides the result's shape
    report_progress: ProgressFn | None = None  # set when the client asked for progress
    principal: Principal | None = None  # None: the local stdio client
    guard: Guard | None = None  # None when the HTTP layer has already decided
    validator: ArgumentValidator | None = None
    client: ClientLink | None = None  # for the provider's requests of the client mid-call

    @classmethod
    def from_sdk(
        cls, registry: Registry, events: EventWriter | None, guard: Guard | None, ctx: ServerRequestContext[Any]
    ) -> ToolContext:
        meta = ctx.meta or {}
        wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None
        state = getattr(ctx.request, "state", None)
        principal = getattr(state, "principal", None)
        decided = getattr(state, "decided", False)  # the HTTP middleware checked this request already
        return cls(
            registry,
            events,
            ctx.protocol_version,
            ctx.session.report_progress if wants_progress else None,
            principal=principal,
            guard=None if decided else guard,
            validator=guard.validator if guard is not None else None,
            client=SdkLink(ctx.session, ctx.request_id),
        )


# --- schemas --------------------------------------------------------------------------------

_PROVIDER = {"type": "string", "description": "Provider id, as in the configuration."}
_INVOKE_PROPS: dict[str, Any] = {
    "provider": _PROVIDER,
    "tool": {"type": "string", "description": "Name of the provider's tool."},
    "arguments": {"type": "object", "description": "Arguments for the tool.", "additionalProperties": True},
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 3600,
        "description": "Seconds to wait for the answer; on expiry the call is cancelled upstream. "
        "Defaults to the provider's call_timeout_s.",
    },
}


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _tool(name: str, description: str, schema: dict[str, Any], *, read_only: bool = False) -> types.Tool:
    annotations = types.ToolAnnotations(read_only_hint=True) if read_only else None
    return types.Tool(name=name, description=description, input_schema=schema, annotations=annotations)


TOOLS: list[types.Tool] = [
    _tool(
        "registry_list",
        "List every provider with its state, mode, tool count and calls in flight.",
        _schema({"state_filter": {"type": "string", "enum": STATES, "description": "Only this state."}}),
        read_only=True,
    ),
    _tool(
        "registry_start",
        "Start a provider now (it would otherwise start on its first call).",
        _schema({"provider": _PROVIDER}, ["provider"]),
    ),
    _tool(
        "registry_stop",
        "Stop a running provider; calls in flight fail. A dead provider is reset to cold.",
        _schema({"provider": _PROVIDER}, ["provider"]),
    ),
    _tool(
        "registry_invoke",
        "Call a tool on a provider, starting the provider if needed. Returns the tool's result as is.",
        _schema(_INVOKE_PROPS, ["provider", "tool"]),
    ),
    _tool(
        "registry_invoke_ex",
        "Like registry_invoke, with retries and a correlation id. A failed attempt is retried only when "
        "the request never reached the provider or the tool is annotated read-only or idempotent.",
        _schema(
            {
                **_INVOKE_PROPS,
                "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES, "default": 0},
                "correlation_id": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "Echoed in the result.",
                },
            },
            ["provider", "tool"],
        ),
    ),
    _tool(
        "registry_invoke_stream",
        "Like registry_invoke, but asks the provider for progress: each progress notification is relayed "
        "to the caller as it happens and recorded in the result's _meta.",
        _schema(_INVOKE_PROPS, ["provider", "tool"]),
    ),
    _tool(
        "registry_tools",
        "The tool schemas of a provider: predefined ones without starting it, else its live list.",
        _schema({"provider": _PROVIDER}, ["provider"]),
        read_only=True,
    ),
    _tool(
        "registry_health",
        "Health of one provider or all: consecutive failures, last error, crashes, call counters.",
        _schema({"provider": _PROVIDER}),
        read_only=True,
    ),
    _tool("registry_status", "A dashboard of all providers.", _schema({}), read_only=True),
    _tool("registry_discover", "Run a discovery cycle over the configured sources.", _schema({})),
    _tool("registry_sources", "List discovery sources and their status.", _schema({}), read_only=True),
    _tool(
        "registry_audit",
        "Read the event log (the audit trail): starts, stops, crashes, state changes, tool calls.",
        _schema(
            {
                "provider": _PROVIDER,
                "type": {"type": "string", "description": "Event type, e.g. tool_invoked, provider_crashed."},
                "since": {"type": "string", "description": "How far back: 90s, 10m, 2h, 7d."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_EVENTS, "default": 50},
            }
        ),
        read_only=True,
    ),
    _tool(
        "registry_warm",
        "Start providers ahead of use so their first call has no cold start (all providers when none are named).",
        _schema({"providers": {"type": "array", "items": _PROVIDER, "uniqueItems": True}}),
    ),
]


# --- results --------------------------------------------------------------------------------


def ok(data: Any, text: str | None = None) -> types.CallToolResult:
    structured = data if isinstance(data, dict) else {"result": data}
    body = text if text is not None else json.dumps(data, indent=2, default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=body)], structured_content=structured)


def error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _arg_str(args: dict[str, Any], key: str, tool: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadArguments(f"{tool}: argument {key!r} is required and must be a non-empty string")
    return value


def _arg_number(args: dict[str, Any], key: str, tool: str, low: float, high: float) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise BadArguments(f"{tool}: argument {key!r} must be a number greater than {low:g} and at most {high:g}")
    return float(value)


def _arguments(args: dict[str, Any], tool: str) -> dict[str, Any]:
    value = args.get("arguments")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadArguments(f"{tool}: argument 'arguments' must be an object")
    return value


def _clean(result: dict[str, Any], client_version: str) -> dict[str, Any]:
    """The provider's tool result, shaped for our client's protocol era.

    The provider's own connection metadata (its serverInfo stamp) is dropped: our server stamps
    its own. ``resultType`` is required on 2026-07-28 connections and unknown before them.
    """
    meta = result.get("_meta")
    modern = client_version in MODERN_PROTOCOL_VERSIONS
    if (
        ("resultType" in result) != modern
        or result.get("resultType", "complete") != "complete"
        or (meta and any(k in meta for k in _PROVIDER_META_KEYS))
    ):
        result = dict(result)
        if modern:
            result["resultType"] = "complete"
        else:
            result.pop("resultType", None)
        if isinstance(meta, dict):
            meta = {k: v for k, v in meta.items() if k not in _PROVIDER_META_KEYS}
            if meta:
                result["_meta"] = meta
            else:
                result.pop("_meta")
    return result


def _name(principal: Principal | None) -> str | None:
    return principal.name if principal is not None else None


def _with_meta(result: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    meta = dict(result.get("_meta") or {})
    meta["mcp_hangar"] = extra
    return {**result, "_meta": meta}


# --- invoking -------------------------------------------------------------------------------


async def _check_tool(tc: ToolContext, provider: Provider | Group, tool: str, arguments: dict[str, Any]) -> None:
    await provider.ensure_started()
    spec = provider.tool(tool)
    if provider.tools_known and spec is None:
        names = ", ".join(t["name"] for t in provider.tools) or "none"
        raise BadArguments(f"provider {provider.id!r} has no tool {tool!r} (its tools: {names})")
    if tc.validator is not None and spec is not None:
        try:
            tc.validator.check(provider.id, tool, spec.get("inputSchema"), arguments)
        except InvalidArguments as exc:
            raise BadArguments(str(exc)) from None


def _failure(provider_id: str, tool: str, exc: Exception) -> str:
    if isinstance(exc, RemoteError):
        return f"provider {provider_id!r} rejected the call to {tool!r}: {exc.remote_message} (code {exc.code})"
    return str(exc)


async def _invoke(tc: ToolContext, args: dict[str, Any], name: str, *, stream: bool = False) -> Any:
    pid = _arg_str(args, "provider", name)
    tool = _arg_str(args, "tool", name)
    assert pid is not None and tool is not None
    arguments = _arguments(args, name)
    timeout = _arg_number(args, "timeout", name, 0, 3600)
    provider = tc.registry.get(pid)
    await _check_tool(tc, provider, tool, arguments)
    report = tc.report_progress
    recorded: list[dict[str, Any]] = []
    relay = None
    if stream or report is not None:

        async def relay(progress: float, total: float | None, message: str | None) -> None:
            if stream and len(recorded) < MAX_RECORDED_PROGRESS:
                recorded.append({"progress": progress, "total": total, "message": message})
            if report is not None:
                await report(progress, total, message)

    result = await provider.call_tool(
        tool, arguments, timeout=timeout, on_progress=relay, principal=_name(tc.principal), client=tc.client
    )
    result = _clean(result, tc.protocol_version)
    if stream:
        result = _with_meta(result, {"provider": pid, "progress": recorded})
    return result


async def registry_invoke(tc: ToolContext, args: dict[str, Any]) -> Any:
    return await _invoke(tc, args, "registry_invoke")


async def registry_invoke_stream(tc: ToolContext, args: dict[str, Any]) -> Any:
    return await _invoke(tc, args, "registry_invoke_stream", stream=True)


async def registry_invoke_ex(tc: ToolContext, args: dict[str, Any]) -> Any:
    name = "registry_invoke_ex"
    pid = _arg_str(args, "provider", name)
    tool = _arg_str(args, "tool", name)
    assert pid is not None and tool is not None
    arguments = _arguments(args, name)
    timeout = _arg_number(args, "timeout", name, 0, 3600)
    correlation_id = _arg_str(args, "correlation_id", name, required=False)
    max_retries = args.get("max_retries", 0)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES:
        raise BadArguments(f"{name}: argument 'max_retries' must be an integer from 0 to {MAX_RETRIES}")
    provider = tc.registry.get(pid)
    attempts: list[str] = []
    while True:
        try:
            await _check_tool(tc, provider, tool, arguments)
            result = await provider.call_tool(
                tool,
                arguments,
                timeout=timeout,
                correlation_id=correlation_id,
                principal=_name(tc.principal),
                client=tc.client,
            )
        except ProviderError as exc:
            attempts.append(_failure(pid, tool, exc))
            retryable = not isinstance(exc, UnknownProvider | NotSupported | RemoteError)
            safe = not exc.sent or retry_safe(provider.tool(tool))
            if len(attempts) > max_retries or not (retryable and safe):
                why = (
                    ""
                    if safe or len(attempts) > max_retries
                    else (
                        "; not retried: the request reached the provider and the tool is not annotated "
                        "read-only or idempotent"
                    )
                )
                return _error_with_meta(
                    f"{attempts[-1]} (attempts: {len(attempts)}{why})",
                    {
                        "provider": pid,
                        "attempts": len(attempts),
                        "errors": attempts,
                        "correlation_id": correlation_id,
                    },
                )
            await anyio.sleep(min(0.05 * 2 ** (len(attempts) - 1), 1.0))
            continue
        meta = {
            "provider": pid,
            "attempts": len(attempts) + 1,
            "errors": attempts,
            "correlation_id": correlation_id,
        }
        return _with_meta(_clean(result, tc.protocol_version), meta)


def _error_with_meta(message: str, meta: dict[str, Any]) -> types.CallToolResult:
    result = error(message)
    result.meta = {"mcp_hangar": meta}
    return result


# --- control --------------------------------------------------------------------------------


async def registry_list(tc: ToolContext, args: dict[str, Any]) -> Any:
    state = _arg_str(args, "state_filter", "registry_list", required=False)
    if state is not None and state not in STATES:
        raise BadArguments(f"registry_list: state_filter must be one of {', '.join(STATES)}, not {state!r}")
    rows = [p.snapshot() for p in tc.registry if state is None or p.state.value == state]
    groups = [g.snapshot() for g in tc.registry.groups()]
    return ok({"providers": rows, "groups": groups})


async def registry_start(tc: ToolContext, args: dict[str, Any]) -> Any:
    provider = tc.registry.get(_arg_str(args, "provider", "registry_start") or "")
    was_running = provider.running
    if isinstance(provider, Provider):
        provider.restart_allowed()
    await provider.ensure_started()
    return ok(
        {
            "provider": provider.id,
            "state": _state(provider),
            "already_running": was_running,
            "tools": [t["name"] for t in provider.tools],
        }
    )


async def registry_stop(tc: ToolContext, args: dict[str, Any]) -> Any:
    provider = tc.registry.get(_arg_str(args, "provider", "registry_stop") or "")
    stopped = await provider.stop("stopped by registry_stop")
    return ok({"provider": provider.id, "stopped": stopped, "state": _state(provider)})


async def registry_tools(tc: ToolContext, args: dict[str, Any]) -> Any:
    provider = tc.registry.get(_arg_str(args, "provider", "registry_tools") or "")
    if not provider.tools_known:
        await provider.ensure_started()
    return ok(
        {
            "provider": provider.id,
            "source": provider.tools_source,
            "state": _state(provider),
            "tools": provider.tools,
            **({"mismatched_members": provider.mismatched_tools()} if isinstance(provider, Group) else {}),
        }
    )


def _state(target: Provider | Group) -> str:
    return target.state if isinstance(target, Group) else target.state.value


def _health(provider: Provider | Group) -> dict[str, Any]:
    if isinstance(provider, Group):
        return {**provider.snapshot(), "last_error": provider.last_error, **provider.stats}
    return {
        "id": provider.id,
        "state": provider.state.value,
        "state_reason": provider.state_reason,
        "consecutive_failures": provider.health.consecutive_failures,
        "max_consecutive_failures": provider.spec.max_consecutive_failures,
        "consecutive_crashes": provider.crashes.consecutive,
        "circuit_breaker": provider.breaker.state.value,
        "last_error": provider.last_error,
        "in_flight": provider.in_flight,
        "last_used_at": provider.last_used_at,
        **provider.stats,
    }


async def registry_health(tc: ToolContext, args: dict[str, Any]) -> Any:
    pid = _arg_str(args, "provider", "registry_health", required=False)
    targets = [tc.registry.get(pid)] if pid else [*tc.registry, *tc.registry.groups()]
    return ok({"providers": [_health(p) for p in targets]})


async def registry_status(tc: ToolContext, args: dict[str, Any]) -> Any:
    rows = [{**p.snapshot(), **_health(p)} for p in tc.registry]
    return ok({"providers": rows}, text=render_status(rows))


async def registry_discover(tc: ToolContext, args: dict[str, Any]) -> Any:
    discovery = tc.registry.discovery
    if discovery is None:
        return ok(
            {"sources": [], "added": [], "removed": [], "changed": []},
            text="No discovery source is configured (discovery.sources in the config), so there is nothing "
            "to discover. Providers come from the configuration file only.",
        )
    outcome = await discovery.cycle("registry_discover")
    problems = [p for source in outcome["sources"] for p in source["problems"]] + outcome["conflicts"]
    lines = [
        f"Discovery ran over {len(outcome['sources'])} source(s): "
        + ", ".join(f"{k} {', '.join(outcome[k]) or 'none'}" for k in ("added", "removed", "changed")),
        *(f"problem: {p}" for p in problems),
    ]
    return ok(outcome, text="\n".join(lines))


async def registry_sources(tc: ToolContext, args: dict[str, Any]) -> Any:
    discovery = tc.registry.discovery
    if discovery is None:
        return ok({"sources": []}, text="No discovery source is configured.")
    sources = [s.snapshot() for s in discovery.sources]
    data = {"mode": discovery.config.mode, "sources": sources, "conflicts": discovery.conflicts}
    lines = [f"Discovery ({discovery.config.mode}), {len(sources)} source(s):"]
    for source in sources:
        lines.append(f"- {source['name']}: {source['status']}, providers: {', '.join(source['providers']) or 'none'}")
        lines += [f"    problem: {p}" for p in source["problems"]]
    lines += [f"conflict: {c}" for c in discovery.conflicts]
    return ok(data, text="\n".join(lines))


async def registry_warm(tc: ToolContext, args: dict[str, Any]) -> Any:
    ids = args.get("providers")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise BadArguments("registry_warm: argument 'providers' must be a list of provider ids")
    providers = [tc.registry.get(i) for i in ids] if ids else list(tc.registry)
    outcome: dict[str, str] = {}

    async def warm(provider: Provider | Group) -> None:
        try:
            await provider.ensure_started()
            outcome[provider.id] = "ready"
        except ProviderError as exc:
            outcome[provider.id] = f"failed: {exc}"

    async with anyio.create_task_group() as tg:
        for provider in providers:
            tg.start_soon(warm, provider)
    failed = [pid for pid, res in outcome.items() if res != "ready"]
    data = {"providers": outcome, "ready": len(outcome) - len(failed), "failed": failed}
    if failed and len(failed) == len(outcome):
        return error(f"registry_warm: no provider could be started: {json.dumps(outcome, indent=2)}")
    return ok(data)


async def registry_audit(tc: ToolContext, args: dict[str, Any]) -> Any:
    name = "registry_audit"
    if tc.events is None:
        return error(
            "registry_audit: the event store is disabled (event_store: {enabled: false}), so nothing is recorded"
        )
    pid = _arg_str(args, "provider", name, required=False)
    kind = _arg_str(args, "type", name, required=False)
    since = _arg_str(args, "since", name, required=False)
    limit = args.get("limit", 50)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_AUDIT_EVENTS:
        raise BadArguments(f"{name}: argument 'limit' must be an integer from 1 to {MAX_AUDIT_EVENTS}")
    try:
        cutoff = time.time() - parse_duration(since) if since else None
    except ValueError as exc:
        raise BadArguments(f"{name}: argument 'since': {exc}") from None
    await tc.events.flush()
    found = await tc.events.store.query(EventQuery(stream=pid, type=kind, since=cutoff, limit=limit))
    rows = [e.to_dict() for e in found]
    text = "\n".join(format_event(e) for e in found) or "No events match."
    return ok({"events": rows, "store": tc.events.store.description}, text=text)


def format_event(event: StoredEvent) -> str:
    stamp = datetime.fromtimestamp(event.at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    details = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in event.data.items())
    who = f" principal={event.principal}" if event.principal else ""
    corr = f" correlation_id={event.correlation_id}" if event.correlation_id else ""
    return f"{stamp} #{event.position} {event.stream} v{event.version} {event.type}{who}{corr} {details}".rstrip()


HANDLERS: dict[str, Handler] = {
    "registry_list": registry_list,
    "registry_start": registry_start,
    "registry_stop": registry_stop,
    "registry_invoke": registry_invoke,
    "registry_invoke_ex": registry_invoke_ex,
    "registry_invoke_stream": registry_invoke_stream,
    "registry_tools": registry_tools,
    "registry_health": registry_health,
    "registry_status": registry_status,
    "registry_discover": registry_discover,
    "registry_sources": registry_sources,
    "registry_warm": registry_warm,
    "registry_audit": registry_audit,
}
assert set(HANDLERS) == {t.name for t in TOOLS}


def target(registry: Registry, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registry tool a call means and its arguments: an aggregated ``<provider>__<tool>``
    call is ``registry_invoke`` of that provider and tool (for the guard as for the handler)."""
    if name not in HANDLERS and (found := aggregate.route(registry, name)) is not None:
        return "registry_invoke", {"provider": found[0], "tool": found[1], "arguments": args}
    return name, args


async def call(tc: ToolContext, name: str, args: dict[str, Any]) -> types.CallToolResult | dict[str, Any]:
    name, args = target(tc.registry, name, args)
    handler = HANDLERS.get(name)
    if handler is None:
        return error(f"unknown tool {name!r}; the registry tools are: {', '.join(HANDLERS)}")
    try:
        if tc.guard is not None:
            provider = args.get("provider")
            tc.guard.check_call(tc.principal, name, provider if isinstance(provider, str) else None)
        return await handler(tc, args)
    except Denied as exc:
        return error(str(exc))
    except BadArguments as exc:
        return error(str(exc))
    except ProviderError as exc:
        tool = args.get("tool")
        pid = args.get("provider")
        return error(_failure(str(pid), str(tool), exc) if isinstance(exc, RemoteError) else str(exc))
