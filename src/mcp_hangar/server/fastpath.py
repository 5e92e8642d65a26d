"""The hot path: ``tools/call`` served straight from the parsed JSON, beside the SDK's server.

Every other message (the handshake, listings, pings, anything unusual) goes to the official SDK
server. A tool call, once the connection is established, is taken here instead: the SDK's layers
(dispatcher, per-version validation of params and result, middleware, model dumps) cost more CPU
than relaying the call itself (DESIGN.md, "Where the time goes"). The tool logic is the same
``tools.call`` the SDK path runs; only the framing differs, and it follows what the SDK does:

- the connection's era is decided by the first request (a 2026-07-28 ``_meta`` envelope or not);
- classic connections are served only after ``initialize`` and ``notifications/initialized``;
- 2026-07-28 results carry ``resultType`` and the server's identity stamp in ``_meta``;
- a request the client cancels is never answered.

Anything this module is not sure about is left to the SDK, which answers it correctly.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import structlog
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from mcp_hangar.observability import tracing
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.policy import Guard
from mcp_hangar.server import tools
from mcp_hangar.server.relay import WireLink, WireRequests
from mcp_hangar.store.writer import EventWriter

log = structlog.get_logger("mcp_hangar.fastpath")

Send = Callable[[bytes], Awaitable[None]]
INTERNAL_ERROR = -32603


class FastPath:
    def __init__(
        self,
        registry: Registry,
        events: EventWriter | None,
        guard: Guard | None,
        send: Send,
        server_info: dict[str, Any],
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        self._registry = registry
        self._events = events
        self._guard = guard
        self._send = send
        self._server_info = server_info
        self._tg = task_group
        self._modern: bool | None = None  # decided by the first request, as the SDK decides
        self._legacy_version: str | None = None
        self._initialized = False
        self._in_flight: dict[Any, anyio.CancelScope] = {}
        self._client_capabilities: dict[str, Any] | None = None
        self._asked = WireRequests(self._write)  # providers' requests of the client, relayed

    def take(self, message: Any) -> bool:
        """Look at one parsed incoming message; True if it was taken here (the SDK must not see it)."""
        if not isinstance(message, dict):
            return False
        method = message.get("method")
        if not isinstance(method, str):
            return self._asked.take(message)  # an answer to our request, or to one of the SDK's
        params = message.get("params")
        if "id" not in message:
            return self._notification(method, params)
        if self._modern is None:
            self._modern = _has_envelope(params)
        if method == "initialize" and not self._modern:
            requested = params.get("protocolVersion") if isinstance(params, dict) else None
            capabilities = params.get("capabilities") if isinstance(params, dict) else None
            self._client_capabilities = capabilities if isinstance(capabilities, dict) else None
            self._legacy_version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
            return False
        if method != "tools/call" or not isinstance(params, dict):
            return False
        version = self._version(params)
        name, arguments = params.get("name"), params.get("arguments")
        if version is None or not isinstance(name, str) or not isinstance(arguments, dict | None):
            return False
        meta = params.get("_meta")
        meta = meta if isinstance(meta, dict) else None
        token = meta.get("progressToken") if meta is not None else None
        self._tg.start_soon(self._serve, message["id"], name, arguments or {}, version, token, meta)
        return True

    def _notification(self, method: str, params: Any) -> bool:
        if method == "notifications/initialized":
            self._initialized = self._legacy_version is not None
        elif method == "notifications/cancelled" and isinstance(params, dict):
            scope = self._in_flight.get(params.get("requestId"))
            if scope is not None:
                scope.cancel()
                return True
        return False

    def _version(self, params: dict[str, Any]) -> str | None:
        """The protocol version this call is served at, or None to leave it to the SDK."""
        if not self._modern:
            return self._legacy_version if self._initialized else None
        return modern_version(params)

    async def _serve(
        self,
        request_id: Any,
        name: str,
        arguments: dict[str, Any],
        version: str,
        token: Any,
        meta: dict[str, Any] | None = None,
    ) -> None:
        report = None
        if token is not None:

            async def report(progress: float, total: float | None, message: str | None) -> None:
                params: dict[str, Any] = {"progressToken": token, "progress": progress}
                if total is not None:
                    params["total"] = total
                if message is not None:
                    params["message"] = message
                await self._write({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

        guard = self._guard
        validator = guard.validator if guard is not None else None
        link = WireLink(self._asked, self._client_capabilities) if not self._modern else None
        context = tools.ToolContext(
            self._registry, self._events, version, report, guard=guard, validator=validator, client=link
        )
        with anyio.CancelScope() as scope:
            self._in_flight[request_id] = scope
            try:
                with tracing.server_span(self._registry.tracer, name, meta, version, request_id) as span:
                    result = await tools.call(context, name, arguments)
                    tracing.mark_result(span, result)
            except Exception as exc:
                log.exception("tool.internal_error", tool=name)
                error = {"code": INTERNAL_ERROR, "message": f"mcp-hangar internal error in {name}: {exc}"}
                await self._write({"jsonrpc": "2.0", "id": request_id, "error": error})
                return
            finally:
                self._in_flight.pop(request_id, None)
        if scope.cancelled_caught:
            return  # the client cancelled it: cancelled requests are never answered
        await self._write(
            {"jsonrpc": "2.0", "id": request_id, "result": shape_result(result, version, self._server_info)}
        )

    async def _write(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def _has_envelope(params: Any) -> bool:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


def shape_result(
    result: types.CallToolResult | dict[str, Any], version: str, server_info: dict[str, Any]
) -> dict[str, Any]:
    """A tools/call result in the wire form of the client's protocol era (what the SDK would send)."""
    if isinstance(result, types.CallToolResult):
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    else:
        wire = dict(result)
    if version in MODERN_PROTOCOL_VERSIONS:
        wire.setdefault("resultType", "complete")
        meta = wire.get("_meta")
        wire["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_META_KEY: server_info}
    else:
        wire.pop("resultType", None)
    return wire


def modern_version(params: dict[str, Any]) -> str | None:
    """The 2026-07-28 version a request's envelope asks for, if the envelope is complete."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or CLIENT_INFO_META_KEY not in meta or CLIENT_CAPABILITIES_META_KEY not in meta:
        return None
    version = meta.get(PROTOCOL_VERSION_META_KEY)
    return version if version in MODERN_PROTOCOL_VERSIONS else None
