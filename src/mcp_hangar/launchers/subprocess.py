"""Subprocess providers: a local program spoken to over its stdin and stdout."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from mcp_hangar.config import SubprocessProvider
from mcp_hangar.launchers.channel import CoalescingWriter, LaunchError, StderrRing

# Variables a typical MCP server needs to run at all. Everything else the provider gets must be
# named in its config ``env``: hangar's own environment (API keys, tokens) never leaks through.
SAFE_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
# One JSON-RPC message per line; tool results can be large, so the line limit is generous.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STOP_GRACE_S = 3.0


def provider_env(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {k: source[k] for k in SAFE_ENV_KEYS if k in source}
    # Programs installed beside hangar (its Python, console scripts in its venv) come first:
    # desktop clients start hangar with a bare PATH, and `python` should mean the one we run on.
    env["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), env.get("PATH", os.defpath)))
    env.update(extra)
    return env


def _die_with_parent() -> None:
    # Linux only: if hangar itself is killed with SIGKILL, the kernel sends the provider SIGTERM,
    # so not even a crash of ours leaves a provider running.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SubprocessChannel:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stderr: StderrRing,
        on_stderr: Callable[[str], None],
    ) -> None:
        self._process = process
        self._stderr = stderr
        self._on_stderr = on_stderr
        assert process.stdin and process.stdout and process.stderr
        self._stdin = process.stdin
        self._lines = CoalescingWriter(process.stdin)
        self._stdout = process.stdout
        self._stderr_task = asyncio.ensure_future(self._pump_stderr(process.stderr))
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def send(self, data: bytes) -> None:
        if self._process.returncode is not None:
            raise ConnectionResetError(f"the provider exited with code {self._process.returncode}")
        await self._lines.send(data)

    async def receive(self) -> bytes | None:
        try:
            line = await self._stdout.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial or None
        except asyncio.LimitOverrunError:
            raise LaunchError(f"provider sent a message larger than {MAX_MESSAGE_BYTES} bytes") from None
        except (ConnectionError, OSError):
            return None
        return line

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            async for raw in stream:
                self._on_stderr(self._stderr.add(raw))

    def exit_status(self) -> int | None:
        return self._process.returncode

    def stderr_tail(self) -> str:
        return self._stderr.tail()

    async def wait_exited(self, timeout: float) -> int | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), timeout)
            # let the last stderr lines (often the reason it died) reach the ring
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 0.5)
        return self._process.returncode

    async def close(self) -> None:
        """Close stdin, SIGTERM the process group, wait, SIGKILL, reap. Never raises."""
        if self._closed:
            return
        self._closed = True
        process = self._process
        with contextlib.suppress(Exception):
            self._lines.flush()
            self._stdin.close()
        try:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), 0.2)
                except TimeoutError:
                    _signal_group(process.pid, signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
                    except TimeoutError:
                        _signal_group(process.pid, signal.SIGKILL)
                        await process.wait()
            # The provider may have left children of its own in its group (npx, shells).
            _signal_group(process.pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)
            self._stderr_task.cancel()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def spawn(
    provider_id: str,
    spec: SubprocessProvider,
    *,
    base_dir: Path,
    on_stderr: Callable[[str], None],
    secrets: Iterable[str] = (),
) -> SubprocessChannel:
    command = list(spec.command)
    env = provider_env(spec.env)
    exe = shutil.which(command[0], path=env.get("PATH"))
    if exe is None:
        raise LaunchError(
            f"provider {provider_id!r}: command {command[0]!r} was not found "
            f"(searched PATH={env.get('PATH', '')!r}); install it or give its absolute path"
        )
    cwd = None
    if spec.cwd:
        cwd = (base_dir / Path(spec.cwd).expanduser()).resolve()  # noqa: ASYNC240 (no I/O wait)
        if not cwd.is_dir():
            raise LaunchError(f"provider {provider_id!r}: cwd {str(cwd)!r} is not a directory")
    try:
        process = await asyncio.create_subprocess_exec(
            exe,
            *command[1:],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            limit=MAX_MESSAGE_BYTES,
        )
    except OSError as exc:
        raise LaunchError(f"provider {provider_id!r}: cannot run {exe!r}: {exc.strerror or exc}") from None
    return SubprocessChannel(process, StderrRing(secrets=secrets), on_stderr)
