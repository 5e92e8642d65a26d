"""The command line: parses, then hands over to the app."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table

from mcp_hangar import __version__
from mcp_hangar.config import (
    LOOPBACK,
    Config,
    ConfigError,
    ContainerProvider,
    LoadedConfig,
    ProviderConfig,
    RemoteProvider,
    SubprocessProvider,
    load_config,
)
from mcp_hangar.domain.events import DomainEvent
from mcp_hangar.domain.roles import Role
from mcp_hangar.observability import logs
from mcp_hangar.store.base import ApiKeyRecord, EventStore, StoreError
from mcp_hangar.store.writer import EventWriter

app = typer.Typer(
    name="mcp-hangar",
    help="One MCP endpoint in front of many MCP providers.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Configuration file (YAML).", envvar="MCP_HANGAR_CONFIG")
]


def _load(config: Path | None) -> LoadedConfig:
    if config is None:
        err.print("[red]error:[/] no configuration given: pass --config FILE (or set MCP_HANGAR_CONFIG)")
        raise typer.Exit(2)
    try:
        return load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {config} is not a valid configuration:")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        print(f"mcp-hangar {__version__}")
        raise typer.Exit()


HttpOption = Annotated[bool, typer.Option("--http", help="Serve HTTP (streamable HTTP at /mcp, SSE) instead of stdio.")]
HostOption = Annotated[
    str | None, typer.Option("--host", envvar="MCP_HANGAR_HOST", help="HTTP bind address [127.0.0.1].")
]
PortOption = Annotated[
    int | None, typer.Option("--port", envvar="MCP_HANGAR_PORT", min=0, max=65535, help="HTTP port [8000].")
]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error (overrides the config).")
]
WatchOption = Annotated[
    bool,
    typer.Option(
        "--watch",
        envvar="MCP_HANGAR_WATCH",
        help="Reload the config when its file changes (SIGHUP always does).",
    ),
]


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    config: ConfigOption = None,
    http: HttpOption = False,
    host: HostOption = None,
    port: PortOption = None,
    log_level: LogLevelOption = None,
    watch: WatchOption = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Without a command: serve the configured providers (stdio by default)."""
    if ctx.invoked_subcommand is not None:
        return
    serve(config=config, http=http, host=host, port=port, log_level=log_level, watch=watch)


@app.command()
def serve(
    config: ConfigOption = None,
    http: HttpOption = False,
    host: HostOption = None,
    port: PortOption = None,
    log_level: LogLevelOption = None,
    watch: WatchOption = False,
) -> None:
    """Serve the configured providers: over stdio (one desktop client) or HTTP (many clients)."""
    from mcp_hangar.app import Hangar

    loaded = _load(config)
    level = log_level or loaded.config.logging.level
    if level not in logs.LEVELS:
        err.print(f"[red]error:[/] --log-level must be one of {', '.join(logs.LEVELS)}, not {level!r}")
        raise typer.Exit(2)
    hangar = Hangar(loaded, log_calls=level == "debug", watch_config=watch)
    logs.configure(level, loaded.config.logging.format, hangar.masker)
    settings = loaded.config.server
    bind_host = host or settings.host
    if http:
        _check_exposure(bind_host, loaded.config)
    try:
        if http:
            stateless = settings.stateless
            anyio.run(
                partial(hangar.serve_http, bind_host, settings.port if port is None else port, stateless=stateless)
            )
        else:
            anyio.run(hangar.serve_stdio)
    except (StoreError, OSError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _check_exposure(host: str, config: Config) -> None:
    """Authentication that is on must have a way to succeed."""
    auth = config.auth
    enabled = auth.enabled if auth.enabled is not None else host not in LOOPBACK
    keys_possible = auth.api_keys and config.event_store.enabled  # keys live in the event store
    if enabled and not keys_possible and auth.jwt is None:
        err.print(
            "[red]error:[/] authentication is on but nothing can pass it: configure auth.jwt, or allow API keys "
            "(auth.api_keys: true, with the event store enabled, where keys are kept)"
        )
        raise typer.Exit(2)


@app.command()
def events(
    config: ConfigOption = None,
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Only this provider's events.")] = None,
    kind: Annotated[str | None, typer.Option("--type", "-t", help="Only this event type.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="How far back: 90s, 10m, 2h, 7d.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000, help="At most this many (newest).")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the event log: who called what, when, with what outcome, and why providers restarted."""
    from mcp_hangar.server.tools import format_event
    from mcp_hangar.store import make_store
    from mcp_hangar.store.base import EventQuery, parse_duration

    loaded = _load(config)
    if not loaded.config.event_store.enabled:
        err.print("[red]error:[/] the event store is disabled in this configuration (event_store.enabled: false)")
        raise typer.Exit(2)
    try:
        cutoff = time.time() - parse_duration(since) if since else None
    except ValueError as exc:
        err.print(f"[red]error:[/] --since: {exc}")
        raise typer.Exit(2) from None
    out = Console(soft_wrap=True, highlight=False)

    def show(found: list[Any]) -> None:
        for event in found:
            if as_json:
                print(json.dumps(event.to_dict()), flush=True)
            else:
                out.print(format_event(event), markup=False)

    async def run() -> None:
        store = make_store(loaded.config.event_store, loaded.path.parent)
        await store.open()
        try:
            found = await store.query(EventQuery(stream=provider, type=kind, since=cutoff, limit=limit))
            show(found)
            last = found[-1].position if found else 0
            while follow:
                await anyio.sleep(0.5)
                found = await store.query(EventQuery(stream=provider, type=kind, after_position=last, limit=1000))
                show(found)
                last = found[-1].position if found else last
        finally:
            await store.close()

    try:
        anyio.run(run)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


keys_app = typer.Typer(help="API keys for HTTP clients (kept, hashed, in the event store).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


async def _with_store(loaded: LoadedConfig, work: Callable[[EventStore, EventWriter], Awaitable[Any]]) -> Any:
    """Open the configured store for a command, with a writer so the change is an audit event too."""
    from mcp_hangar.store import make_store
    from mcp_hangar.store.encode import Encoder
    from mcp_hangar.store.writer import EventWriter

    if not loaded.config.event_store.enabled:
        raise StoreError("the event store is disabled in this configuration, and API keys are kept there")
    store = make_store(loaded.config.event_store, loaded.path.parent)
    await store.open()
    writer = EventWriter(store, Encoder({}, []), f"cli-{socket.gethostname()}-{os.getpid()}")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            try:
                return await work(store, writer)
            finally:
                await writer.close()
    finally:
        await store.close()


def _run_store(loaded: LoadedConfig, work: Callable[[EventStore, EventWriter], Awaitable[Any]]) -> Any:
    try:
        return anyio.run(_with_store, loaded, work)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", "-n", help="Who or what the key is for.")],
    role: Annotated[Role, typer.Option("--role", "-r", help="viewer, user, operator or admin.")],
    config: ConfigOption = None,
) -> None:
    """Create a key. It is shown once; only its hash is stored."""
    from mcp_hangar.security.auth import new_key

    loaded = _load(config)
    token, record = new_key(name, role)

    async def create(store: EventStore, writer: EventWriter) -> None:
        await store.put_key(record)
        writer.emit(_key_event(record, "created"))

    _run_store(loaded, create)
    err.print(f"created key {record.id} for {name!r} with role {role.value}; it is shown only this once:")
    print(token)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    loaded = _load(config)
    keys = _run_store(loaded, lambda store, writer: store.keys())
    table = Table(title=f"{len(keys)} API keys", title_justify="left")
    for column in ("id", "name", "role", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        revoked = _when(key.revoked_at) if key.revoked_at is not None else "-"
        table.add_row(key.id, key.name, key.role, _when(key.created_at), revoked)
    Console(soft_wrap=True).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `keys list`.")], config: ConfigOption = None
) -> None:
    """Revoke a key; every hangar sharing the store refuses it within seconds."""
    loaded = _load(config)

    async def revoke(store: EventStore, writer: EventWriter) -> Any:
        key = await store.revoke_key(key_id, time.time())
        if key is not None:
            writer.emit(_key_event(key, "revoked"))
        return key

    key = _run_store(loaded, revoke)
    if key is None:
        err.print(f"[red]error:[/] no key with id {key_id!r} (see mcp-hangar keys list)")
        raise typer.Exit(2)
    err.print(f"revoked key {key.id} ({key.name})")


def _key_event(key: ApiKeyRecord, change: str) -> DomainEvent:
    from mcp_hangar.domain import events as ev

    return ev.ApiKeyChanged(
        provider_id=ev.SECURITY_STREAM, at=time.time(), key_id=key.id, name=key.name, role=key.role, change=change
    )


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command()
def call(
    provider: Annotated[str, typer.Argument(help="Provider (or group) id.")],
    tool: Annotated[str, typer.Argument(help="Tool name.")],
    arguments: Annotated[
        list[str] | None, typer.Argument(help="key=value pairs; a value that parses as JSON is taken as JSON.")
    ] = None,
    config: ConfigOption = None,
    args_json: Annotated[str | None, typer.Option("--args", help="All arguments as one JSON object.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole MCP result as JSON.")] = False,
) -> None:
    """Call one tool once, without serving: try a provider out, or script against it."""
    from mcp_hangar.app import Hangar

    loaded = _load(config)
    try:
        payload = _call_arguments(arguments or [], args_json)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    hangar = Hangar(loaded)
    logs.configure("warning", loaded.config.logging.format, hangar.masker)
    try:
        result = anyio.run(hangar.call_once, provider, tool, payload)
    except (StoreError, OSError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for item in result.get("content") or ():
            print(item.get("text") if item.get("type") == "text" else json.dumps(item))
    if result.get("isError"):
        raise typer.Exit(1)


def _call_arguments(pairs: list[str], whole: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if whole is not None:
        try:
            parsed = json.loads(whole)
        except ValueError as exc:
            raise ValueError(f"--args is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("--args must be a JSON object")
        found.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {pair!r}: expected key=value")
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


@app.command()
def status(
    config: ConfigOption = None,
    url: Annotated[
        str | None, typer.Option("--url", help="The running hangar's MCP endpoint [the config's server address].")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="MCP_HANGAR_API_KEY", help="When the hangar requires one.")
    ] = None,
) -> None:
    """Show a running hangar's providers (it serves HTTP): states, calls, failures, starts."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    if url is None:
        settings = _load(config).config.server
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{host}:{settings.port}/mcp"

    async def fetch() -> str:
        import httpx2

        headers = {"x-api-key": api_key} if api_key else {}
        http = httpx2.AsyncClient(headers=headers, timeout=10)
        async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            result = await client.call_tool("registry_status", {})
        return "\n".join(getattr(c, "text", "") for c in result.content)

    try:
        print(anyio.run(fetch))
    except Exception as exc:
        err.print(f"[red]error:[/] cannot read the status from {url}: {_first_line(exc)}", highlight=False)
        raise typer.Exit(2) from None


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return (str(exc) or type(exc).__name__).splitlines()[0]


@app.command()
def check(config: Annotated[Path, typer.Argument(help="Configuration file to validate.")]) -> None:
    """Validate a configuration file and show what was understood."""
    loaded = _load(config)
    out = Console()
    table = Table(title=f"{loaded.path}: {len(loaded.config.providers)} providers", title_justify="left")
    for column in ("provider", "mode", "runs", "idle ttl", "health every", "tools"):
        table.add_column(column)
    for pid, spec in loaded.config.providers.items():
        runs = _what_runs(spec)
        tools = "predefined: " + str(len(spec.tools)) if spec.tools is not None else "on start"
        table.add_row(pid, spec.mode, runs, f"{spec.idle_ttl_s:g}s", f"{spec.health_check_interval_s:g}s", tools)
    out.print(table)
    discovery = loaded.config.discovery
    for source in discovery.sources:
        where = getattr(source, "path", None) or getattr(source, "group", None) or getattr(source, "host", None)
        extra = ", ".join(getattr(source, "namespaces", [])) or where or "default"
        out.print(f"discovery ({discovery.mode}): {source.type} source: {extra}", highlight=False)
    out.print("[green]configuration is valid[/]")


def _what_runs(spec: ProviderConfig) -> str:
    if isinstance(spec, SubprocessProvider):
        return " ".join(spec.command)
    if isinstance(spec, ContainerProvider):
        root = "read-only root" if spec.read_only else "WRITABLE root"
        return f"{spec.image} (network {spec.network}, {root}, memory {spec.resources.memory})"
    if isinstance(spec, RemoteProvider):
        return spec.endpoint
    return f"{spec.strategy}: " + ", ".join(m.id for m in spec.members)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
