"""What every launcher hands back: a channel that moves newline-delimited JSON-RPC messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Protocol

HIGH_WATER_BYTES = 1024 * 1024  # beyond this much unsent data, writers wait for the reader
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary text everywhere


class Channel(Protocol):
    """A live connection to one provider instance.

    ``receive`` returns one raw message (one line, without the newline) or ``None`` once the
    provider has gone away. ``close`` ends the provider for good and never raises.
    """

    @property
    def pid(self) -> int | None: ...

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes | None: ...

    async def close(self) -> None: ...

    def exit_status(self) -> int | None: ...

    async def wait_exited(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the provider to end; its exit status, if it did."""
        ...

    def stderr_tail(self) -> str: ...


class LaunchError(Exception):
    """The provider could not be brought to life; the message says why and what to do."""


class StderrRing:
    """The last lines a provider wrote to stderr, bounded in lines and in bytes per line."""

    def __init__(self, max_lines: int = 50, max_line_bytes: int = 2000, secrets: Iterable[str] = ()) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_line_bytes = max_line_bytes
        # The provider's own secrets (its configured env values), masked before a line is kept:
        # stderr tails reach logs, events and error messages.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def add(self, raw: bytes) -> str:
        line = raw[: self._max_line_bytes].decode("utf-8", "replace").rstrip("\r\n")
        for secret in self._secrets:
            line = line.replace(secret, "***")
        self._lines.append(line)
        return line

    def tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._lines)[-lines:])


class CoalescingWriter:
    """Writes lines to a stream, batching those queued in one event-loop iteration into one write.

    Under load many calls are issued at once; one write syscall for all of them (and one wakeup
    of the reader) instead of one each is a large part of what keeps the relay cheap.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []

    async def send(self, line: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("the stream is closed")
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(line)
        if self._writer.transport.get_write_buffer_size() > HIGH_WATER_BYTES:
            await self._writer.drain()

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        if not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(data)
