"""What every launcher hands back: a channel that moves newline-delimited JSON-RPC messages."""

from __future__ import annotations

from collections import deque
from typing import Protocol


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

    def __init__(self, max_lines: int = 50, max_line_bytes: int = 2000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_line_bytes = max_line_bytes

    def add(self, raw: bytes) -> str:
        line = raw[: self._max_line_bytes].decode("utf-8", "replace").rstrip("\r\n")
        self._lines.append(line)
        return line

    def tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._lines)[-lines:])
