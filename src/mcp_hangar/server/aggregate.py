"""Aggregated mode: the providers' own tools, listed and called directly as ``<provider>__<tool>``;
their prompts (``<provider>__<prompt>``) and resources (``hangar://<provider>/<uri>``) too.

Any MCP client can then use them without the ``registry_*`` indirection. A cold provider's tools
are listed as soon as they are known (predefined in the config, remembered from an earlier run in
the event log, or live); clients are told ``notifications/tools/list_changed`` whenever that set
changes (a provider started and listed new tools, a reload, discovery). A call is the same as
``registry_invoke`` of that provider and tool, for authorization, rate limits, events and results.
Prompts and resources are listed for running providers only (listing them must not start every
provider); getting or reading one starts its provider like a call does.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.abc
import mcp_types as types
import structlog
from pydantic import ValidationError

from mcp_hangar.config import AggregateConfig
from mcp_hangar.runtime.provider import Provider
from mcp_hangar.runtime.registry import Registry

log = structlog.get_logger("mcp_hangar.aggregate")

NOTIFY_SETTLE_S = 0.05  # changes arriving together make one notification


def visible(spec: AggregateConfig, name: str) -> bool:
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.deny):
        return False
    return not spec.allow or any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.allow)


def listed(registry: Registry, usable: set[str] | None = None) -> list[types.Tool]:
    """The aggregated tools; ``usable``: only those of these providers (the caller's allowlist)."""
    spec = registry.aggregate
    if spec is None or not spec.enabled:
        return []
    out: list[types.Tool] = []
    for item in [*registry, *registry.groups()]:
        if not item.tools_known or (usable is not None and item.id not in usable):
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


# --- prompts and resources of running providers ----------------------------------------------

RESOURCE_SCHEME = "hangar"  # hangar://<provider>/<the provider's own URI, percent-encoded>
LIST_TIMEOUT_S = 5.0  # a provider slow to list is left out of that listing, not waited for


def resource_uri(provider: str, uri: str) -> str:
    return f"{RESOURCE_SCHEME}://{provider}/{quote(uri, safe='')}"


def resource_target(registry: Registry, uri: str) -> tuple[str, str] | None:
    """``(provider, its own URI)`` for a URI of ours, or None."""
    spec = registry.aggregate
    prefix = f"{RESOURCE_SCHEME}://"
    if spec is None or not spec.enabled or not uri.startswith(prefix) or "/" not in uri[len(prefix) :]:
        return None
    provider, encoded = uri[len(prefix) :].split("/", 1)
    if registry.lookup(provider) is None:
        return None
    return provider, unquote(encoded)


async def _gather(
    registry: Registry, capability: str, method: str, key: str, usable: set[str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """Every running provider's items of one list (in parallel, each bounded by LIST_TIMEOUT_S)."""
    found: list[tuple[str, dict[str, Any]]] = []

    async def one(provider: Any) -> None:
        try:
            with anyio.fail_after(LIST_TIMEOUT_S):
                items = await provider.relay(method, listing=key)
        except Exception as exc:
            log.warning("aggregate.list_failed", provider=provider.id, method=method, error=str(exc)[:200])
            return
        found.extend((provider.id, item) for item in items)

    async with anyio.create_task_group() as tg:
        for provider in registry:
            if provider.offers(capability) and (usable is None or provider.id in usable):
                tg.start_soon(one, provider)
    return sorted(found, key=lambda pair: pair[0])


async def list_prompts(registry: Registry, usable: set[str] | None = None) -> list[types.Prompt]:
    spec = registry.aggregate
    if spec is None or not spec.enabled:
        return []
    out = []
    for pid, prompt in await _gather(registry, "prompts", "prompts/list", "prompts", usable):
        name = f"{pid}{spec.separator}{prompt.get('name')}"
        if visible(spec, name):
            described = f"[{pid}] {prompt.get('description') or ''}".strip()
            with _skip_invalid(pid, name):
                out.append(types.Prompt.model_validate({**prompt, "name": name, "description": described}))
    return out


async def list_resources(registry: Registry, usable: set[str] | None = None) -> list[types.Resource]:
    spec = registry.aggregate
    if spec is None or not spec.enabled:
        return []
    out = []
    for pid, resource in await _gather(registry, "resources", "resources/list", "resources", usable):
        if visible(spec, f"{pid}{spec.separator}{resource.get('name')}"):
            with _skip_invalid(pid, str(resource.get("uri"))):
                out.append(
                    types.Resource.model_validate(
                        {
                            **resource,
                            "uri": resource_uri(pid, str(resource["uri"])),
                            "name": f"[{pid}] {resource.get('name')}",
                        }
                    )
                )
    return out


async def read_resource(registry: Registry, uri: str) -> dict[str, Any]:
    target = resource_target(registry, uri)
    if target is None:
        raise LookupError(f"unknown resource {uri!r}: hangar's resources are {RESOURCE_SCHEME}://<provider>/...")
    provider = _provider(registry, target[0])
    result: dict[str, Any] = await provider.relay("resources/read", {"uri": target[1]})
    for item in result.get("contents") or ():
        if isinstance(item, dict) and "uri" in item:
            item["uri"] = resource_uri(target[0], str(item["uri"]))
    return result


async def get_prompt(registry: Registry, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
    target = route(registry, name)
    if target is None:
        raise LookupError(f"unknown prompt {name!r}")
    provider = _provider(registry, target[0])
    result: dict[str, Any] = await provider.relay("prompts/get", {"name": target[1], "arguments": arguments or {}})
    return result


def _provider(registry: Registry, pid: str) -> Provider:
    found = registry.get(pid)
    if not isinstance(found, Provider):
        raise LookupError(f"{pid!r} is a group: ask one of its members ({', '.join(m.id for m in found.members)})")
    return found


@contextmanager
def _skip_invalid(provider: str, what: str) -> Iterator[None]:
    try:
        yield
    except (ValidationError, KeyError) as exc:
        log.warning("aggregate.bad_item", provider=provider, item=what, error=str(exc)[:200])


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
                for kind in ("tools", "prompts", "resources"):
                    await connection.outbound.notify(f"notifications/{kind}/list_changed", None)
            except Exception as exc:  # a client that went away meanwhile
                log.debug("aggregate.notify_failed", error=str(exc))
                self._connections.discard(connection)
