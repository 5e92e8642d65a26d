"""The configuration: a pydantic model of the YAML file, with ``${VAR}`` interpolation and errors
that point at the file, line, provider and key.

Loading is three steps: parse YAML keeping each node's line, interpolate environment variables
into every string, validate with pydantic. Every failure becomes a ``ConfigError`` whose lines
read like ``config.yaml:7: provider 'math': key 'comand': unknown key``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROVIDER_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
PROVIDER_ID_MAX = 64
MODES = ("subprocess", "container", "docker", "remote", "group")
SOURCE_TYPES = ("folder", "docker", "entrypoints", "kubernetes")
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # bind addresses only this machine can reach


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ToolSpec(_Strict):
    """A predefined tool: listed before the provider ever starts."""

    name: str = Field(min_length=1)
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, alias="inputSchema"
    )
    annotations: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_snake_case(cls, data: Any) -> Any:
        if isinstance(data, dict) and "input_schema" in data and "inputSchema" not in data:
            data = dict(data)
            data["inputSchema"] = data.pop("input_schema")
        return data


class AuditConfig(_Strict):
    # What the event store keeps of tool arguments: size and hash only, those with the values of
    # secret-looking keys masked, or everything.
    arguments: Literal["hashed", "redacted", "full"] = "hashed"


class RateLimit(_Strict):
    rate: float = Field(gt=0)  # requests per second, sustained
    burst: int = Field(ge=1)  # requests at once after a quiet spell


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1)  # transport failures within window_s open it
    window_s: float = Field(default=60, gt=0)
    reset_timeout_s: float = Field(default=30, gt=0)  # open this long, then probe
    half_open_max_calls: int = Field(default=1, ge=1)


class RecoveryConfig(_Strict):
    # lazy: a dead provider starts again on its next call; eager: hangar restarts it in the
    # background as soon as the backoff allows.
    mode: Literal["lazy", "eager"] = "lazy"
    max_attempts: int = Field(default=5, ge=1)  # consecutive failures before it is a crash loop
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30, gt=0)
    cooldown_s: float = Field(default=300, gt=0)  # a crash loop ends after this, or at registry_start


class _ProviderBase(_Strict):
    description: str = ""
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    circuit_breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rate_limit: RateLimit | None = None  # calls to this provider, from all callers together
    idle_ttl_s: float = Field(default=300, gt=0)
    health_check_interval_s: float = Field(default=60, gt=0)
    max_consecutive_failures: int = Field(default=3, ge=1)
    max_concurrency: int = Field(default=32, ge=1, le=10_000)
    startup_timeout_s: float = Field(default=30, gt=0)
    call_timeout_s: float = Field(default=60, gt=0)
    tools: list[ToolSpec] | None = None


def _split_command(value: Any) -> Any:
    if isinstance(value, str):
        return shlex.split(value)
    return value


class SubprocessProvider(_ProviderBase):
    mode: Literal["subprocess"]
    command: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None

    _split = field_validator("command", mode="before")(_split_command)


class ContainerResources(_Strict):
    memory: str = Field(default="512m", pattern=r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$")  # e.g. 256m, 1g
    cpus: float = Field(default=1.0, gt=0, le=1024)
    pids: int = Field(default=256, ge=16)


class ContainerBuild(_Strict):
    context: str = Field(min_length=1)  # a folder, relative to the config file
    dockerfile: str = "Dockerfile"  # relative to the context
    tag: str | None = None  # default: the provider's image
    timeout_s: float = Field(default=600, gt=0)


_VOLUME = re.compile(r"^(?P<host>[^:]+):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?$")


def _volume_form(item: str) -> str:
    if not _VOLUME.match(item):
        raise ValueError(f"volume {item!r}: expected 'host:/container/path' with an optional ':ro' or ':rw'")
    return item


Volume = Annotated[str, AfterValidator(_volume_form)]


class ContainerProvider(_ProviderBase):
    mode: Literal["container", "docker"]
    image: str = Field(min_length=1)
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # host:container[:ro|rw]; read-only unless :rw. A host path (/, ./, ../ or ~) is resolved
    # against the config file's folder and must exist; a bare name is a named volume.
    volumes: list[Volume] = Field(default_factory=list)
    network: str = "none"
    read_only: bool = True
    user: str | None = None  # uid[:gid] or a name; default: the image's
    resources: ContainerResources = Field(default_factory=ContainerResources)
    tmpfs_size: str = Field(default="64m", pattern=r"^[0-9]+[kmgKMG]?$")  # the writable /tmp
    build: ContainerBuild | None = None  # build the image from a Dockerfile when it is missing

    _split = field_validator("command", mode="before")(_split_command)


def parse_volume(item: str) -> tuple[str, str, str]:
    """``host:/target[:mode]`` -> (host, target, mode); mode defaults to read-only."""
    found = _VOLUME.match(item)
    if found is None:  # the model validated it already
        raise ValueError(item)
    return found["host"], found["target"], found["mode"] or "ro"


class RemoteProvider(_ProviderBase):
    mode: Literal["remote"]
    endpoint: str = Field(pattern=r"^https?://")
    transport: Literal["streamable_http", "sse"] = "streamable_http"
    headers: dict[str, str] = Field(default_factory=dict)


class GroupMember(_Strict):
    id: str
    weight: int = Field(default=1, ge=1)
    priority: int = Field(default=1, ge=0)


class GroupProvider(_ProviderBase):
    mode: Literal["group"]
    strategy: Literal["round_robin", "weighted_round_robin", "priority", "least_connections", "random"] = "round_robin"
    members: Annotated[list[GroupMember], Field(min_length=1)]
    min_healthy: int = Field(default=1, ge=1)  # below this many available members the group is degraded
    # priority: a member that comes back is used again only after being available this long
    failback_delay_s: float = Field(default=0, ge=0)

    @field_validator("members", mode="before")
    @classmethod
    def _member_refs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": m} if isinstance(m, str) else m for m in value]
        return value


ProviderConfig = Annotated[
    SubprocessProvider | ContainerProvider | RemoteProvider | GroupProvider,
    Field(discriminator="mode"),
]


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class EventStoreConfig(_Strict):
    enabled: bool = True
    driver: Literal["sqlite", "postgres", "memory"] = "sqlite"
    path: str | None = None  # sqlite; relative to the config file; default in the user's state dir
    dsn: str | None = None  # postgres, e.g. postgresql://user:${PGPASSWORD}@db:5432/hangar
    max_backlog: int = Field(default=10_000, ge=100)

    @model_validator(mode="after")
    def _needs_dsn(self) -> EventStoreConfig:
        if self.driver == "postgres" and not self.dsn:
            raise ValueError("driver 'postgres' needs a 'dsn'")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # No session state on the server: any replica can answer any request (no sticky sessions).
    stateless: bool = False


class JwtConfig(_Strict):
    jwks_url: str | None = Field(default=None, pattern=r"^https?://")
    public_key: str | None = None  # PEM, usually "${JWT_PUBLIC_KEY}"
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    roles_claim: str = "roles"  # a role name, or a list (the highest known role counts)
    default_role: Literal["viewer", "user", "operator", "admin"] | None = None
    leeway_s: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        if (self.jwks_url is None) == (self.public_key is None):
            raise ValueError("jwt needs exactly one of 'jwks_url' or 'public_key'")
        return self


class LockoutConfig(_Strict):
    max_failures: int = Field(default=5, ge=1)
    window_s: float = Field(default=60, gt=0)
    lock_s: float = Field(default=300, gt=0)


class AuthConfig(_Strict):
    # None: required whenever hangar listens on a non-loopback address.
    enabled: bool | None = None
    api_keys: bool = True  # accept keys made with `mcp-hangar keys create`
    jwt: JwtConfig | None = None
    lockout: LockoutConfig = Field(default_factory=LockoutConfig)
    # Per role, the providers it may reach (a role not listed reaches all).
    providers: dict[Literal["viewer", "user", "operator", "admin"], list[str]] = Field(default_factory=dict)


class ContainerEngineConfig(_Strict):
    # The Docker Engine API to use (Docker or Podman's compatible service), e.g.
    # unix:///run/podman/podman.sock or tcp://127.0.0.1:2375. Default: DOCKER_HOST, then the usual sockets.
    host: str | None = None


class FolderSource(_Strict):
    """Provider files in a folder: each ``*.yaml``/``*.yml`` holds a ``providers:`` mapping."""

    type: Literal["folder"]
    path: str = Field(min_length=1)  # relative to the config file


class DockerSource(_Strict):
    """Running containers labelled ``mcp.hangar.enable=true`` that serve MCP over HTTP."""

    type: Literal["docker"]
    host: str | None = None  # default: the engine of `container:`


class EntryPointsSource(_Strict):
    """Providers that installed Python packages declare under an entry point group."""

    type: Literal["entrypoints"]
    group: str = Field(default="mcp.providers", min_length=1)


class KubernetesSource(_Strict):
    """Running, ready pods annotated ``mcp.hangar.io/enabled: "true"`` that serve MCP over HTTP."""

    type: Literal["kubernetes"]
    namespaces: list[str] = Field(default_factory=list)  # empty: every namespace
    label_selector: str | None = None  # e.g. "app.kubernetes.io/part-of=tools"
    kubeconfig: str | None = None  # default: in-cluster service account, else ~/.kube/config


DiscoverySource = Annotated[
    FolderSource | DockerSource | EntryPointsSource | KubernetesSource, Field(discriminator="type")
]


class DiscoveryConfig(_Strict):
    # additive: discovered providers stay until restart; authoritative: they leave with their source
    mode: Literal["additive", "authoritative"] = "additive"
    interval_s: float = Field(default=30, gt=0)  # rescan period (a folder is also watched)
    max_providers_per_source: int = Field(default=100, ge=1)
    sources: list[DiscoverySource] = Field(default_factory=list)


class AggregateConfig(_Strict):
    """Provider tools listed and callable directly, as ``<provider><separator><tool>``."""

    enabled: bool = False
    separator: str = Field(default="__", min_length=1, max_length=8, pattern=r"^[A-Za-z0-9_.-]+$")
    allow: list[str] = Field(default_factory=list)  # glob patterns on the full name; empty: all
    deny: list[str] = Field(default_factory=list)  # glob patterns; deny beats allow


class TracingConfig(_Strict):
    enabled: bool = False
    # OTLP/HTTP traces URL; default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT,
    # else http://localhost:4318/v1/traces (the exporter's own rules)
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. {Authorization: "Bearer ${OTLP_TOKEN}"}
    service_name: str = Field(default="mcp-hangar", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of new traces; a caller's sampled trace is kept


class RateLimitsConfig(_Strict):
    per_principal: RateLimit | None = None  # each authenticated caller (or the stdio client)


class Config(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    container: ContainerEngineConfig = Field(default_factory=ContainerEngineConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    event_store: EventStoreConfig = Field(default_factory=EventStoreConfig)
    # Names this process in the event log; replicas sharing a store must differ.
    # Default: host name and process id.
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)


def provider_id_problem(key: Any) -> str | None:
    if not isinstance(key, str) or not PROVIDER_ID.match(key) or len(key) > PROVIDER_ID_MAX:
        return (
            f"bad provider id {key!r}: use letters, digits, '-' and single '_' "
            f"(at most {PROVIDER_ID_MAX} characters, starting with a letter or digit)"
        )
    return None


_MEMBER_KEYS = ("id", "weight", "priority")


def _lift_inline_members(data: dict[str, Any], lines: dict[tuple[Any, ...], int]) -> None:
    """A group member written as a whole provider definition (it has a ``mode``) becomes a provider
    of its own, ``<group>-<n>`` unless it names an ``id``; the member entry keeps only the reference,
    weight and priority. Line numbers move along, so errors still point into the group."""
    providers = data.get("providers")
    if not isinstance(providers, dict):
        return
    for gid, group in list(providers.items()):
        if not isinstance(group, dict) or group.get("mode") != "group" or not isinstance(group.get("members"), list):
            continue
        for i, member in enumerate(group["members"]):
            if not isinstance(member, dict) or "mode" not in member:
                continue
            mid = member.get("id") or f"{gid}-{i + 1}"
            old = ("providers", gid, "members", i)
            providers[mid] = {k: v for k, v in member.items() if k not in _MEMBER_KEYS}
            for path, line in list(lines.items()):
                if path[: len(old)] == old and len(path) > len(old) and path[len(old)] not in _MEMBER_KEYS:
                    lines[("providers", mid, *path[len(old) :])] = line
            lines.setdefault(("providers", mid), lines.get(old, 0))
            group["members"][i] = {k: v for k, v in member.items() if k in _MEMBER_KEYS} | {"id": mid}


def _group_problems(config: Config) -> list[tuple[tuple[Any, ...], str]]:
    found = []
    for pid, provider in config.providers.items():
        if not isinstance(provider, GroupProvider):
            continue
        for i, member in enumerate(provider.members):
            path = ("providers", pid, "members", i)
            if member.id == pid:
                found.append((path, "group lists itself as a member"))
            elif member.id not in config.providers:
                found.append((path, f"member {member.id!r} is not a provider defined in this file"))
            elif isinstance(config.providers[member.id], GroupProvider):
                found.append((path, f"member {member.id!r} is a group; groups cannot nest"))
    return found


def _aggregate_problems(config: Config) -> list[tuple[tuple[Any, ...], str]]:
    """Aggregated names are <provider><separator><tool>, split at the first separator: no
    provider id may contain it."""
    sep = config.aggregate.separator
    if not config.aggregate.enabled:
        return []
    return [
        (("providers", pid), f"the id contains aggregate.separator {sep!r}: its tools could not be told apart")
        for pid in config.providers
        if sep in pid
    ]


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    path: Path
    from_environment: frozenset[str] = frozenset()  # values that ${VAR}s brought in: possible secrets


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: str, environ: Mapping[str, str], taken: set[str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``.

    An unset variable without a default is an error: a silent empty string would hide a
    missing secret until a provider fails in an obscure way.
    """

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found is not None and (found != "" or default is None):
            if taken is not None:
                taken.add(found)  # it came from the environment: treat it as a possible secret
            return found
        if default is not None:
            return default
        raise KeyError(name)

    return _VAR.sub(sub, value)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""


def _compose(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    lines: dict[tuple[Any, ...], int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    if node is None:
        return {}, lines
    loader = _LineLoader("")

    def build(n: yaml.Node, path: tuple[Any, ...]) -> Any:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = loader.construct_object(key_node, deep=True)
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    return build(node, ()), lines


def _interpolate_tree(
    data: Any, path: tuple[Any, ...], environ: Mapping[str, str], bad: list[tuple[Any, ...]], taken: set[str]
) -> Any:
    if isinstance(data, str):
        try:
            return interpolate(data, environ, taken)
        except KeyError as missing:
            bad.append((*path, f"environment variable {missing.args[0]} is not set (use ${{VAR:-default}})"))
            return data
    if isinstance(data, dict):
        return {k: _interpolate_tree(v, (*path, k), environ, bad, taken) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate_tree(v, (*path, i), environ, bad, taken) for i, v in enumerate(data)]
    return data


def _line_of(path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _describe(path: tuple[Any, ...]) -> str:
    """``('providers', 'math', 'env', 'X')`` -> ``provider 'math': key 'env.X'``."""
    if len(path) >= 2 and path[0] == "providers":
        where = f"provider {path[1]!r}"
        rest = path[2:]
        if len(path) == 2:
            return where
    else:
        where, rest = "", path
    key = ".".join(str(p) for p in rest)
    if where and key:
        return f"{where}: key {key!r}"
    return where or f"key {key!r}"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the discriminator tag (the mode) into the location; a user never wrote it.
    if len(loc) >= 3 and loc[0] == "providers" and loc[2] in MODES:
        loc = loc[:2] + loc[3:]
    if len(loc) >= 4 and loc[:2] == ("discovery", "sources") and loc[3] in SOURCE_TYPES:
        loc = loc[:3] + loc[4:]
    # "[key]" markers pydantic adds for dict-key errors carry no information for a reader.
    return tuple(p for p in loc if p != "[key]")


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind.startswith("union_tag") and "sources" in err["loc"]:
        return f"'type' must be one of: {', '.join(SOURCE_TYPES)}"
    if kind == "union_tag_invalid":
        tag = err.get("input", {}).get("mode") if isinstance(err.get("input"), dict) else None
        return f"unknown mode {tag!r} (expected one of: {', '.join(MODES)})"
    if kind == "union_tag_not_found":
        return f"'mode' is required (one of: {', '.join(MODES)})"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def parse_config(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None, taken: set[str] | None = None
) -> Config:
    """The configuration in ``text``; ``taken`` collects every value read from the environment."""
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the configuration must be a mapping with a 'providers' key"])
    _lift_inline_members(data, lines)
    providers = data.get("providers")
    if isinstance(providers, dict):
        id_problems = [(("providers", k), p) for k in providers if (p := provider_id_problem(k))]
        if id_problems:
            raise ConfigError(_format(id_problems, lines, source))
    bad: list[tuple[Any, ...]] = []
    data = _interpolate_tree(
        data, (), os.environ if environ is None else environ, bad, set() if taken is None else taken
    )
    if bad:
        raise ConfigError(_format([(tuple(path), why) for *path, why in bad], lines, source))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found = [(_clean_loc(tuple(err["loc"])), _message(err)) for err in exc.errors()]
        raise ConfigError(_format(found, lines, source)) from None
    if group_problems := _group_problems(config) + _aggregate_problems(config):
        raise ConfigError(_format(group_problems, lines, source))
    return config


def parse_providers(
    text: str, source: str, environ: Mapping[str, str] | None = None, taken: set[str] | None = None
) -> dict[str, ProviderConfig]:
    """A provider file found by discovery: a ``providers:`` mapping and nothing else."""
    config = parse_config(text, source, environ, taken)
    others = sorted(config.model_fields_set - {"providers"})
    if others:
        raise ConfigError([f"{source}: only 'providers' belongs in a discovered file, not {', '.join(others)}"])
    return dict(config.providers)


def _format(found: list[tuple[tuple[Any, ...], str]], lines: dict[tuple[Any, ...], int], source: str) -> list[str]:
    problems = []
    for path, why in found:
        line = _line_of(path, lines)
        prefix = f"{source}:{line}" if line is not None else source
        problems.append(f"{prefix}: {_describe(path) if path else 'config'}: {why}")
    return problems


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> LoadedConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{file}: configuration file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read configuration: {exc.strerror}"]) from None
    taken: set[str] = set()
    config = parse_config(text, str(file), environ, taken)
    return LoadedConfig(config, file.resolve(), frozenset(taken))
