"""Aggregated mode: the providers' own tools, listed and called directly as ``<provider>__<tool>``.

Any MCP client can then use them without the ``registry_*`` indirection. A cold provider's tools
are listed as soon as they are known (predefined in the config, remembered from an earlier run in
the event log, or live); clients are told ``notifications/tools/list_changed`` whenever that set
changes (a provider started and listed new tools, a reload, discovery). A call is the same as
``registry_invoke`` of that provider and tool, for authorization, rate limits, events and results.
"""

from __future__ import annotations

import fnmatch
import weakref
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
import structlog
from pydantic import ValidationError

from mcp_hangar.config import AggregateConfig
from mcp_hangar.runtime.registry import Registry

log = structlog.get_logger("mcp_hangar.aggregate")

NOTIFY_SETTLE_S = 0.05  # changes arriving together make one notification


def visible(spec: AggregateConfig, name: str) -> bool:
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.deny):
        return False
    return not spec.allow or any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.allow)


def listed(registry: Registry) -> list[types.Tool]:
    spec = registry.aggregate
    if spec is None or not spec.enabled:
        return []
    out: list[types.Tool] = []
    for item in [*registry, *registry.groups()]:
        if not item.tools_known:
            continue
        for tool in item.tools:
            name = f"{item.id}{spec.separator}{tool.get('name')}"
            if not visible(spec, name):
                continue
            described = f"[{item.id}] {tool.get('description') or ''}".strip()
            try:
                out.append(types.Tool.model_validate({**tool, "name": name, "description": described}))
            except ValidationError as exc:
                log.warning("aggregate.bad_tool", provider=item.id, tool=tool.get("name"), error=str(exc)[:200])
    return out


def route(registry: Registry, name: str) -> tuple[str, str] | None:
    """``(provider, tool)`` for an aggregated tool name, or None if it is not one."""
    spec = registry.aggregate
    if spec is None or not spec.enabled or spec.separator not in name:
        return None
    provider, tool = name.split(spec.separator, 1)
    if not tool or registry.lookup(provider) is None or not visible(spec, name):
        return None
    return provider, tool


class ListChanged:
    """The client connections that listed tools, told when the aggregated list may have changed.

    The SDK hands handlers a per-request session; the connection behind it (held weakly here, so
    a client that leaves is forgotten) carries server-initiated notifications. Clients of the
    stateless 2026-07-28 protocol have no such channel (they subscribe instead) and list again.
    """

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._tg: anyio.abc.TaskGroup | None = None
        self._pending = False

    def attach(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    def listening(self, session: Any) -> None:
        connection = getattr(session, "_connection", None)
        if connection is not None:
            self._connections.add(connection)

    def changed(self) -> None:
        if self._tg is None or self._pending or not self._connections:
            return
        self._pending = True
        self._tg.start_soon(self._notify)

    async def _notify(self) -> None:
        await anyio.sleep(NOTIFY_SETTLE_S)
        self._pending = False
        for connection in list(self._connections):
            try:
                await connection.outbound.notify("notifications/tools/list_changed", None)
            except Exception as exc:  # a client that went away meanwhile
                log.debug("aggregate.notify_failed", error=str(exc))
                self._connections.discard(connection)
