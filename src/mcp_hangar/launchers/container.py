"""Container providers: an MCP server in a container, spoken to over its attached stdin and stdout.

Hangar talks to the Docker Engine API through the ``docker`` package, which works against Docker
and against Podman's Docker-compatible service alike. The package blocks, so every engine call runs
in a worker thread; the attached stream itself is handed to the event loop as a plain socket.

A container is created with isolation on by default (no network, read-only root, every capability
dropped, no new privileges, memory/CPU/process limits, a writable tmpfs ``/tmp``), attached before it
starts so no early output is lost, and removed when it stops. Every container carries labels naming
hangar, the provider and this hangar process, so a later hangar on the same host can remove what a
crashed one left behind. The attach is made with ``StdinOnce``: if hangar dies, the container's
stdin closes and an MCP server on stdio exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog

from mcp_hangar.config import ContainerProvider, parse_volume
from mcp_hangar.launchers.channel import CoalescingWriter, LaunchError, StderrRing
from mcp_hangar.launchers.subprocess import MAX_MESSAGE_BYTES

log = structlog.get_logger("mcp_hangar.container")

LABEL_MANAGED = "mcp.hangar.managed"
LABEL_PROVIDER = "mcp.hangar.provider"
LABEL_INSTANCE = "mcp.hangar.instance"
STOP_GRACE_S = 3
EXIT_AFTER_EOF_S = 0.5  # an MCP server whose stdin closed usually exits at once
PING_TIMEOUT_S = 5
STDERR = 2
FRAME_HEADER = 8
READ_CHUNK = 256 * 1024

T = TypeVar("T")


def this_instance() -> str:
    """``host:pid:start`` for this process; the start time tells a reused pid from ours."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _instance_alive(instance: str) -> bool:
    """Whether the hangar process named by a label still runs; unknown hosts count as alive."""
    host, _, rest = instance.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # not ours to judge: another machine shares the engine
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_ticks(pid) == ticks


def candidate_hosts(configured: str | None, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Engine addresses to try, in order, each with where it came from."""
    env = os.environ if environ is None else environ
    if configured:
        return [(configured, "container.host in the config")]
    found: list[tuple[str, str]] = []
    for var in ("DOCKER_HOST", "CONTAINER_HOST"):
        if env.get(var):
            found.append((env[var], var))
    uid = os.getuid()
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    paths = [
        "/var/run/docker.sock",
        f"{runtime_dir}/podman/podman.sock",
        "/run/podman/podman.sock",
        str(Path("~/.docker/run/docker.sock").expanduser()),
    ]
    for path in dict.fromkeys(paths):
        found.append((f"unix://{path}", "the usual socket paths"))
    return found


class Engine:
    """One reachable Docker Engine API endpoint."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.api = client.api
        self.url = url

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Not abandoned on cancellation: we wait for the engine's answer so that whatever it
        # created can be cleaned up by the caller.
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _connect(url: str) -> Any:
    import docker  # imported on first use: hangar without container providers never pays for it

    if url.startswith("unix://") and not Path(url.removeprefix("unix://")).exists():
        raise FileNotFoundError("no such socket")
    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        client.api.timeout = PING_TIMEOUT_S
        client.ping()
        client.api.timeout = 60
    except BaseException:
        client.close()
        raise
    return client


@dataclass
class _ImageState:
    ready: bool = False
    failed: str | None = None  # a pull that failed: not retried by every start (no pull loop)


class Containers:
    """Hangar's door to the container engine: found lazily, shared by every container provider."""

    def __init__(self, host: str | None = None) -> None:
        self._host = host
        self._engine: Engine | None = None
        self._lock = anyio.Lock()
        self.instance = this_instance()
        self._images: dict[str, _ImageState] = {}
        self._image_locks: dict[str, anyio.Lock] = {}

    async def engine(self) -> Engine:
        async with self._lock:
            if self._engine is None:
                self._engine = await anyio.to_thread.run_sync(self._find_engine)
            return self._engine

    def _find_engine(self) -> Engine:
        tried = []
        for url, origin in candidate_hosts(self._host):
            try:
                client = _connect(url)
            except Exception as exc:  # every failure is reported below
                tried.append(f"{url} (from {origin}): {_short(exc)}")
                continue
            log.info("container.engine", url=url, origin=origin)
            return Engine(client, url)
        raise LaunchError(
            "no container engine is reachable; tried:\n  "
            + "\n  ".join(tried)
            + "\nStart Docker, or Podman's API service (`podman system service --time=0 "
            "unix:///run/podman/podman.sock`), or set `container: {host: ...}` in the config or DOCKER_HOST"
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # --- leftovers -----------------------------------------------------------------------

    async def remove_leftovers(self) -> list[str]:
        """Remove containers that a hangar on this host left behind when it died; their ids."""
        engine = await self.engine()
        found = await engine.run(engine.api.containers, all=True, filters={"label": f"{LABEL_MANAGED}=true"})
        removed = []
        for item in found:
            instance = (item.get("Labels") or {}).get(LABEL_INSTANCE, "")
            if instance == self.instance or _instance_alive(instance):
                continue
            with contextlib.suppress(Exception):
                await engine.run(engine.api.remove_container, item["Id"], force=True)
                removed.append(item["Id"])
                log.warning(
                    "container.leftover_removed",
                    container=item["Id"][:12],
                    provider=(item.get("Labels") or {}).get(LABEL_PROVIDER),
                    owner=instance,
                )
        return removed

    # --- images --------------------------------------------------------------------------

    async def ensure_image(self, provider_id: str, spec: ContainerProvider, base_dir: Path) -> None:
        """Make sure the image is there: present, else built (``build:``), else pulled once."""
        image = spec.image
        state = self._images.setdefault(image, _ImageState())
        if state.ready:
            return
        lock = self._image_locks.setdefault(image, anyio.Lock())
        async with lock:
            if state.ready:
                return
            engine = await self.engine()
            if await self._image_present(engine, image):
                state.ready = True
                return
            if spec.build is not None:
                await self._build(engine, provider_id, spec, base_dir)
            else:
                if state.failed is not None:
                    raise LaunchError(state.failed)
                await self._pull(engine, provider_id, image, state)
            state.ready = True

    async def _image_present(self, engine: Engine, image: str) -> bool:
        import docker.errors

        try:
            await engine.run(engine.api.inspect_image, image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return False
            raise LaunchError(f"cannot inspect image {image!r} on {engine.url}: {_short(exc)}") from None
        return True

    async def _build(self, engine: Engine, provider_id: str, spec: ContainerProvider, base_dir: Path) -> None:
        import docker.errors

        assert spec.build is not None
        context = (base_dir / Path(spec.build.context).expanduser()).resolve()  # noqa: ASYNC240
        dockerfile = context / spec.build.dockerfile
        if not dockerfile.is_file():
            raise LaunchError(
                f"provider {provider_id!r}: image {spec.image!r} is missing and its build file "
                f"{str(dockerfile)!r} does not exist (build.context {spec.build.context!r}, "
                f"build.dockerfile {spec.build.dockerfile!r})"
            )
        tag = spec.build.tag or spec.image
        log.info("container.build", provider=provider_id, tag=tag, context=str(context))
        t0 = time.monotonic()
        import requests

        try:
            # The engine call cannot be cancelled from here: its own read timeout is the bound.
            await engine.run(
                engine.client.images.build,
                path=str(context),
                dockerfile=spec.build.dockerfile,
                tag=tag,
                rm=True,
                forcerm=True,
                timeout=spec.build.timeout_s,
            )
        except requests.exceptions.Timeout:
            raise LaunchError(
                f"provider {provider_id!r}: building {tag!r} took longer than {spec.build.timeout_s:g}s "
                "(build.timeout_s)"
            ) from None
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise LaunchError(f"provider {provider_id!r}: building image {tag!r} failed: {_short(exc)}") from None
        log.info("container.built", provider=provider_id, tag=tag, seconds=round(time.monotonic() - t0, 2))
        if tag != spec.image and not await self._image_present(engine, spec.image):
            raise LaunchError(
                f"provider {provider_id!r}: the build made {tag!r}, but the provider runs image {spec.image!r}; "
                "make build.tag and image the same"
            )

    async def _pull(self, engine: Engine, provider_id: str, image: str, state: _ImageState) -> None:
        import docker.errors

        log.info("container.pull", provider=provider_id, image=image)
        try:
            problem = await engine.run(_pull, engine.api, image)
        except docker.errors.APIError as exc:
            problem = _short(exc)
        if problem is not None:
            state.failed = (
                f"provider {provider_id!r}: image {image!r} is not on {engine.url} and pulling it failed: "
                f"{problem}. Pull or load it yourself, or give the provider a `build:` section; "
                "hangar does not try the pull again until it restarts"
            )
            raise LaunchError(state.failed)

    # --- containers ----------------------------------------------------------------------

    def _volumes(self, provider_id: str, spec: ContainerProvider, base_dir: Path) -> list[str]:
        binds = []
        for item in spec.volumes:
            host, target, mode = parse_volume(item)
            if host.startswith(("/", "./", "../", "~")) or host in (".", ".."):
                path = (base_dir / Path(host).expanduser()).resolve()
                if not path.exists():
                    raise LaunchError(
                        f"provider {provider_id!r}: volume {item!r}: host path {str(path)!r} does not exist"
                        + (" (relative paths are resolved against the config file's folder)" if host[0] == "." else "")
                    )
                host = str(path)
            binds.append(f"{host}:{target}:{mode}")
        return binds

    async def launch(
        self,
        provider_id: str,
        spec: ContainerProvider,
        *,
        base_dir: Path,
        on_stderr: Callable[[str], None],
        secrets: Iterable[str] = (),
    ) -> ContainerChannel:
        binds = self._volumes(provider_id, spec, base_dir)
        engine = await self.engine()
        api = engine.api
        host_config = api.create_host_config(
            network_mode=spec.network,
            read_only=spec.read_only,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=spec.resources.memory,
            memswap_limit=spec.resources.memory,  # no swap beyond the memory limit
            nano_cpus=int(spec.resources.cpus * 1e9),
            pids_limit=spec.resources.pids,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={spec.tmpfs_size}"},
            binds=binds,
            init=False,
        )
        labels = {LABEL_MANAGED: "true", LABEL_PROVIDER: provider_id, LABEL_INSTANCE: self.instance}
        name = f"mcp-hangar-{provider_id}-{os.urandom(3).hex()}"
        container_id: str | None = None
        raw: socket.socket | None = None
        try:
            created = await engine.run(
                api.create_container,
                spec.image,
                command=spec.command,
                stdin_open=True,  # with StdinOnce: stdin closes when our attach ends
                tty=False,
                environment=dict(spec.env),
                labels=labels,
                user=spec.user,
                host_config=host_config,
                name=name,
            )
            container_id = created["Id"]
            raw = await engine.run(self._attach, api, container_id)
            await engine.run(api.start, container_id)
            info = await engine.run(api.inspect_container, container_id)
            reader, writer = await asyncio.open_connection(sock=raw, limit=MAX_MESSAGE_BYTES)
        except BaseException as exc:
            if raw is not None:
                raw.close()
            if container_id is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await engine.run(api.remove_container, container_id, force=True)
            if container_id is None and getattr(exc, "status_code", None) == 404:
                # The image went away since we checked (removed by hand?): check, build or pull again.
                self._images.pop(spec.image, None)
            if isinstance(exc, Exception) and not isinstance(exc, LaunchError):
                raise LaunchError(
                    f"provider {provider_id!r}: cannot start a container from image {spec.image!r} "
                    f"on {engine.url}: {_short(exc)}"
                ) from None
            raise
        log.info("container.started", provider=provider_id, container=container_id[:12], name=name)
        return ContainerChannel(
            engine,
            container_id,
            int(info.get("State", {}).get("Pid") or 0) or None,
            reader,
            writer,
            StderrRing(secrets=secrets),
            on_stderr,
        )

    @staticmethod
    def _attach(api: Any, container_id: str) -> socket.socket:
        stream = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock = getattr(stream, "_sock", stream)
        if isinstance(sock, ssl.SSLSocket):
            stream.close()
            raise LaunchError("attaching over a TLS engine address is not supported; use a unix socket")
        # Our own descriptor for the hijacked connection, independent of the HTTP objects around it.
        dup: socket.socket = sock.dup()
        with contextlib.suppress(Exception):
            stream.close()
        with contextlib.suppress(Exception):
            sock.close()
        dup.setblocking(False)
        return dup


class ContainerChannel:
    """The attached stream of one container: frames demultiplexed into stdout lines and stderr."""

    def __init__(
        self,
        engine: Engine,
        container_id: str,
        pid: int | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stderr: StderrRing,
        on_stderr: Callable[[str], None],
    ) -> None:
        self._engine = engine
        self.container_id = container_id
        self._pid = pid
        self._reader = reader
        self._writer = writer
        self._lines = CoalescingWriter(writer)
        self._stderr = stderr
        self._on_stderr = on_stderr
        self._raw = bytearray()  # received, not yet demultiplexed
        self._out = bytearray()
        self._scanned = 0  # how much of _out holds no newline
        self._err = bytearray()
        self._eof = False
        self._exit_code: int | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._pid

    async def send(self, data: bytes) -> None:
        if self._eof:
            raise ConnectionResetError("the container's stream is closed")
        await self._lines.send(data)

    async def receive(self) -> bytes | None:
        while True:
            cut = self._out.find(b"\n", self._scanned)
            if cut >= 0:
                line = bytes(self._out[: cut + 1])
                del self._out[: cut + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._out)
            if self._scanned > MAX_MESSAGE_BYTES:
                raise LaunchError(f"provider sent a message larger than {MAX_MESSAGE_BYTES} bytes")
            if not await self._read_frame():
                rest, self._out = bytes(self._out), bytearray()
                self._scanned = 0
                return rest or None

    async def _read_frame(self) -> bool:
        """Read what has arrived and demultiplex every whole frame in it; False at the end.

        The engine's framing: 1 byte stream (1 stdout, 2 stderr), 3 zero bytes, 4 bytes size
        (big-endian), then the payload. One read usually holds several frames under load.
        """
        if self._eof:
            return False
        try:
            data = await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self._eof = True
            self._flush_stderr(final=True)
            return False
        raw = self._raw
        raw += data
        start = 0
        while len(raw) - start >= FRAME_HEADER:
            end = start + FRAME_HEADER + int.from_bytes(raw[start + 4 : start + FRAME_HEADER], "big")
            if len(raw) < end:
                break
            payload = raw[start + FRAME_HEADER : end]
            if raw[start] == STDERR:
                self._err += payload
            else:
                self._out += payload
            start = end
        del raw[:start]
        if self._err:
            self._flush_stderr()
        return True

    def _flush_stderr(self, final: bool = False) -> None:
        while (cut := self._err.find(b"\n")) >= 0:
            self._on_stderr(self._stderr.add(bytes(self._err[: cut + 1])))
            del self._err[: cut + 1]
        if final and self._err:
            self._on_stderr(self._stderr.add(bytes(self._err)))
            self._err.clear()

    def exit_status(self) -> int | None:
        return self._exit_code

    def stderr_tail(self) -> str:
        return self._stderr.tail()

    async def wait_exited(self, timeout: float) -> int | None:
        if self._exit_code is None:
            with contextlib.suppress(Exception), anyio.fail_after(timeout + 1):
                result = await self._engine.run(self._engine.api.wait, self.container_id, timeout=timeout)
                self._exit_code = int(result.get("StatusCode"))
        return self._exit_code

    async def close(self) -> None:
        """Close stdin, give the server a moment to exit, stop, remove. Never raises."""
        if self._closed:
            return
        self._closed = True
        api = self._engine.api
        with contextlib.suppress(Exception):
            self._lines.flush()
            if self._writer.can_write_eof():
                self._writer.write_eof()
        try:
            if self._exit_code is None:
                await self.wait_exited(EXIT_AFTER_EOF_S)
            if self._exit_code is None:
                with contextlib.suppress(Exception):
                    await self._engine.run(api.stop, self.container_id, timeout=STOP_GRACE_S)
                await self.wait_exited(1.0)
        finally:
            with contextlib.suppress(Exception):
                self._writer.close()
            with contextlib.suppress(Exception):
                await self._engine.run(api.remove_container, self.container_id, force=True)


def _pull(api: Any, image: str) -> str | None:
    """Pull an image; the engine's error, if any. Engines report a failed pull inside the
    progress stream with a success status, so the stream must be read to the end."""
    for message in api.pull(image, stream=True, decode=True):
        if isinstance(message, dict) and message.get("error"):
            return str(message["error"])
    return None


def _short(exc: BaseException) -> str:
    """An engine error in one line, without the HTTP plumbing around it."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation if isinstance(explanation, str) else explanation.decode("utf-8", "replace"))
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
