"""MCP over our own stdin/stdout, on non-blocking pipes.

The SDK's ``stdio_server`` reads stdin in a worker thread, one thread hop per message, and a
blocked read cannot be cancelled: a SIGTERM would wait for the client to send another line.
Here stdin and stdout are asyncio pipes, so shutdown is immediate and no thread is involved. The
messages are parsed and written exactly as the SDK's transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.stdio import stdio_server as sdk_stdio_server
from mcp.shared.message import SessionMessage

from mcp_hangar.launchers.channel import CoalescingWriter
from mcp_hangar.launchers.subprocess import MAX_MESSAGE_BYTES

BUFFERED_MESSAGES = 64

Take = Callable[[Any], bool]


@dataclass(eq=False)
class Wire:
    """One stdio connection: SDK-facing message streams plus a raw line writer.

    ``take``, when set, sees every parsed incoming message first; a message it takes never
    reaches the SDK (that is how the fast path serves tool calls).
    """

    incoming: MemoryObjectReceiveStream[SessionMessage | Exception]
    outgoing: MemoryObjectSendStream[SessionMessage]
    lines: CoalescingWriter | None
    take: Take | None = None

    async def send(self, line: bytes) -> None:
        assert self.lines is not None
        with contextlib.suppress(ConnectionError):
            await self.lines.send(line)


@asynccontextmanager
async def stdio_transport() -> AsyncIterator[Wire]:
    loop = asyncio.get_running_loop()
    # Private duplicates: the pipes get non-blocking mode, and fds 0/1 are pointed elsewhere so
    # nothing else in the process (or a library that prints) can corrupt the wire.
    in_fd, out_fd = os.dup(0), os.dup(1)
    reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES)
    try:
        in_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", buffering=0)
        )
        out_transport, out_protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
        )
    except (ValueError, OSError):
        # stdin or stdout is a regular file (not a pipe, socket or tty): the SDK's threaded
        # transport handles those, without the fast path.
        with contextlib.suppress(OSError):
            os.close(in_fd)
            os.close(out_fd)
        async with sdk_stdio_server() as (sdk_in, sdk_out):
            yield Wire(sdk_in, sdk_out, None)
        return
    writer = asyncio.StreamWriter(out_transport, out_protocol, None, loop)
    _divert_std_fds()

    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](BUFFERED_MESSAGES)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](BUFFERED_MESSAGES)
    wire = Wire(incoming, outgoing, CoalescingWriter(writer))

    async def read_stdin() -> None:
        async with incoming_send:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line = exc.partial
                    if not line:
                        return
                except asyncio.LimitOverrunError:
                    await incoming_send.send(ValueError(f"message over {MAX_MESSAGE_BYTES} bytes"))
                    return
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    if wire.take is not None and wire.take(raw):
                        continue
                    message = types.jsonrpc_message_adapter.validate_python(raw, by_name=False)
                except Exception as exc:
                    await incoming_send.send(exc)
                    continue
                await incoming_send.send(SessionMessage(message))

    async def write_stdout() -> None:
        async with outgoing_receive:
            async for session_message in outgoing_receive:
                data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await wire.send(data.encode() + b"\n")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdin)
            tg.start_soon(write_stdout)
            try:
                yield wire
            finally:
                tg.cancel_scope.cancel()
    finally:
        assert wire.lines is not None
        wire.lines.flush()
        in_transport.close()
        writer.close()


def _divert_std_fds() -> None:
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    with contextlib.suppress(OSError):
        os.dup2(2, 1)  # stray prints land in the log, not on the wire
    sys.stdout = sys.stderr
