"""Discovery sources. Each scan returns the providers a source offers now, and its problems.

A source never raises for bad input: a file that does not parse, a container with a bad label or a
package whose entry point fails is a problem named in the scan (shown by ``registry_sources``),
and the rest of the source still counts. A folder file that breaks keeps its last good version
(quarantine): a typo while editing does not take a running provider away.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import structlog
from pydantic import TypeAdapter, ValidationError

from mcp_hangar.config import (
    ConfigError,
    DockerSource,
    EntryPointsSource,
    FolderSource,
    KubernetesSource,
    ProviderConfig,
    parse_providers,
    provider_id_problem,
)
from mcp_hangar.launchers.container import LABEL_MANAGED, Containers

log = structlog.get_logger("mcp_hangar.discovery")

PROVIDER = TypeAdapter[ProviderConfig](ProviderConfig)
FOLDER_POLL_S = 1.0  # how soon a removed or replaced watched folder is noticed
LABEL = "mcp.hangar"  # container labels: mcp.hangar.enable=true, .id, .port, .path, .endpoint, .transport


@dataclass(frozen=True, slots=True)
class Found:
    spec: ProviderConfig
    base_dir: Path  # what relative paths in the definition are relative to
    origin: str  # where it was found: a file, a container, a package


@dataclass(slots=True)
class Scan:
    providers: dict[str, Found] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)  # values ${VAR}s brought in


class Source(Protocol):
    name: str
    kind: str

    async def scan(self) -> Scan: ...

    async def follow(self, changed: Changed) -> None:
        """Run until cancelled, awaiting ``changed()`` whenever the source knows it changed (a
        folder, a Kubernetes watch); sources that cannot tell just sleep."""
        ...

    async def close(self) -> None:
        """Let go of connections (at shutdown)."""
        ...


async def _nothing_to_close() -> None:
    return None


Changed = Callable[[], Awaitable[object]]


async def _never(changed: Changed) -> None:
    await anyio.sleep_forever()


def validated(definition: Any, where: str, pid: str) -> ProviderConfig | str:
    """A provider definition from outside a config file, or the problem with it."""
    if problem := provider_id_problem(pid):
        return f"{where}: {problem}"
    try:
        return PROVIDER.validate_python(definition)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"][1:] if p != "[key]") or "definition"
        return f"{where}: provider {pid!r}: key {key!r}: {first['msg']} ({len(exc.errors())} problem(s))"


# --- a folder of provider files ------------------------------------------------------------


class Folder:
    kind = "folder"

    def __init__(self, spec: FolderSource, base_dir: Path) -> None:
        self.path = (base_dir / Path(spec.path).expanduser()).resolve()
        self.name = f"folder:{self.path}"
        self._last_good: dict[Path, dict[str, Found]] = {}

    async def scan(self) -> Scan:
        return await anyio.to_thread.run_sync(self._scan)

    def _scan(self) -> Scan:
        scan = Scan()
        if not self.path.is_dir():
            scan.problems.append(f"{self.path}: the folder does not exist")
            return scan
        files = sorted(p for p in self.path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        self._last_good = {f: v for f, v in self._last_good.items() if f in files}
        for file in files:
            try:
                taken: set[str] = set()
                found = parse_providers(file.read_text(encoding="utf-8"), str(file), taken=taken)
                scan.secrets |= taken
                self._last_good[file] = {pid: Found(spec, self.path, str(file)) for pid, spec in found.items()}
            except ConfigError as exc:
                kept = " (its last good version stays in use)" if file in self._last_good else ""
                scan.problems += [p + kept for p in exc.problems]
            except (OSError, UnicodeDecodeError) as exc:
                scan.problems.append(f"{file}: cannot read: {exc}")
            for pid, item in self._last_good.get(file, {}).items():
                if pid in scan.providers:
                    scan.problems.append(f"{file}: provider {pid!r} is defined in {scan.providers[pid].origin} already")
                else:
                    scan.providers[pid] = item
        return scan

    close = staticmethod(_nothing_to_close)

    async def follow(self, changed: Changed) -> None:
        """Watch the folder; one that is removed (or replaced) is waited for and watched again,
        with a rescan as it comes back, since files may have changed meanwhile."""
        from watchfiles import awatch

        while True:
            while not self.path.is_dir():  # noqa: ASYNC110 - a folder that appears later is polled for
                await anyio.sleep(FOLDER_POLL_S)
            watched = self.path.stat().st_ino
            await changed()
            async for events in awatch(
                self.path, debounce=300, recursive=False, rust_timeout=int(FOLDER_POLL_S * 1000), yield_on_timeout=True
            ):
                if not self.path.is_dir() or self.path.stat().st_ino != watched:
                    break  # the folder went away: its watch sees nothing more
                if events:
                    await changed()


# --- running containers with labels --------------------------------------------------------


class DockerLabels:
    """Running containers labelled ``mcp.hangar.enable=true`` that serve MCP over HTTP:
    ``mcp.hangar.port`` (and ``.path``, default ``/mcp``) or a whole ``mcp.hangar.endpoint``;
    ``mcp.hangar.id`` (default: the container's name), ``.transport``, ``.description``."""

    kind = "docker"

    def __init__(self, spec: DockerSource, containers: Containers, base_dir: Path) -> None:
        self._containers = containers if spec.host is None else Containers(spec.host)
        self._base_dir = base_dir
        self.name = f"docker:{spec.host or 'default engine'}"

    async def scan(self) -> Scan:
        scan = Scan()
        engine = await self._containers.engine()
        listed = await engine.run(engine.api.containers, filters={"label": f"{LABEL}.enable=true"})
        for item in listed:
            labels = item.get("Labels") or {}
            if labels.get(LABEL_MANAGED) == "true":
                continue  # one of ours: a container provider, not a discovered one
            name = (item.get("Names") or ["?"])[0].lstrip("/")
            where = f"container {name} ({item['Id'][:12]})"
            pid = labels.get(f"{LABEL}.id") or name
            endpoint = labels.get(f"{LABEL}.endpoint")
            if endpoint is None:
                port = labels.get(f"{LABEL}.port")
                if port is None:
                    scan.problems.append(f"{where}: needs a label {LABEL}.port or {LABEL}.endpoint")
                    continue
                info = await engine.run(engine.api.inspect_container, item["Id"])
                endpoint = f"http://{_address(info)}:{port}{labels.get(f'{LABEL}.path', '/mcp')}"
            definition = {"mode": "remote", "endpoint": endpoint}
            for key in ("transport", "description"):
                if f"{LABEL}.{key}" in labels:
                    definition[key] = labels[f"{LABEL}.{key}"]
            spec = validated(definition, where, pid)
            if isinstance(spec, str):
                scan.problems.append(spec)
            elif pid in scan.providers:
                scan.problems.append(f"{where}: provider id {pid!r} is taken by {scan.providers[pid].origin}")
            else:
                scan.providers[pid] = Found(spec, self._base_dir, where)
        return scan

    follow = staticmethod(_never)
    close = staticmethod(_nothing_to_close)


def _address(info: dict[str, Any]) -> str:
    """Where hangar reaches a container: loopback for host networking, else its IP address."""
    settings = info.get("NetworkSettings") or {}
    if (info.get("HostConfig") or {}).get("NetworkMode") == "host":
        return "127.0.0.1"
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return "127.0.0.1"


# --- installed Python packages -------------------------------------------------------------


class EntryPoints:
    """Entry points in a group (default ``mcp.providers``). Each names a provider definition
    (a dict with ``mode``; the entry point's name is the id), a mapping of id to definition, or a
    function returning either."""

    kind = "entrypoints"

    def __init__(self, spec: EntryPointsSource, base_dir: Path) -> None:
        self._group = spec.group
        self._base_dir = base_dir
        self.name = f"entrypoints:{spec.group}"

    async def scan(self) -> Scan:
        return await anyio.to_thread.run_sync(self._scan)

    def _scan(self) -> Scan:
        scan = Scan()
        for ep in importlib.metadata.entry_points(group=self._group):
            dist = ep.dist.name if ep.dist is not None else "?"
            where = f"entry point {ep.name} = {ep.value} (package {dist})"
            try:
                value = ep.load()
                if callable(value):
                    value = value()
            except Exception as exc:  # a broken plugin is its problem, not ours
                scan.problems.append(f"{where}: cannot load: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(value, dict):
                scan.problems.append(f"{where}: expected a provider definition or a mapping of them")
                continue
            definitions = {ep.name: value} if "mode" in value else value
            for pid, definition in definitions.items():
                spec = validated(definition, where, str(pid))
                if isinstance(spec, str):
                    scan.problems.append(spec)
                elif pid in scan.providers:
                    scan.problems.append(f"{where}: provider id {pid!r} is taken by {scan.providers[pid].origin}")
                else:
                    scan.providers[str(pid)] = Found(spec, self._base_dir, where)
        return scan

    follow = staticmethod(_never)
    close = staticmethod(_nothing_to_close)


def build_sources(specs: list[Any], base_dir: Path, containers: Containers) -> list[Source]:
    sources: list[Source] = []
    for spec in specs:
        if isinstance(spec, FolderSource):
            sources.append(Folder(spec, base_dir))
        elif isinstance(spec, DockerSource):
            sources.append(DockerLabels(spec, containers, base_dir))
        elif isinstance(spec, EntryPointsSource):
            sources.append(EntryPoints(spec, base_dir))
        elif isinstance(spec, KubernetesSource):
            from mcp_hangar.discovery.kubernetes import KubernetesPods

            sources.append(KubernetesPods(spec, base_dir))
    return sources


# Which source wins when two offer the same id (the config file beats them all).
PRECEDENCE = {"kubernetes": 0, "docker": 1, "folder": 2, "entrypoints": 3}
