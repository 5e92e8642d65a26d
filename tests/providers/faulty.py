"""A real MCP server (the official SDK's MCPServer) that misbehaves on request, for fault tests.

    python faulty.py [--garbage] [--exit-at-start]

Tools: sleep (read-only), pid (read-only), crash (kills its own process), bump (not idempotent:
appends to $BUMP_FILE and returns how many lines it has), sandbox (what the process may do where it
runs: for the container tests).
"""

import asyncio
import os
import socket
import sys

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

if "--exit-at-start" in sys.argv:
    print("faulty: cannot open database /nonexistent/db.sqlite", file=sys.stderr, flush=True)
    sys.exit(7)
if "--garbage" in sys.argv:
    print("Hello! I am a server that logs to stdout.", flush=True)

server = MCPServer("faulty")
READ_ONLY = ToolAnnotations(read_only_hint=True)


@server.tool(annotations=READ_ONLY)
async def sleep(seconds: float) -> str:
    """Sleep, then say so. If cancelled and $MARKER_DIR is set, leave a file there saying so."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker := os.environ.get("MARKER_DIR"):
            with open(os.path.join(marker, f"cancelled-{seconds}"), "w") as f:
                f.write("cancelled\n")
        raise
    return f"slept {seconds}"


@server.tool(annotations=READ_ONLY)
def pid() -> int:
    """This process's id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Die at once, mid-call."""
    print("faulty: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False))
def bump() -> int:
    """Append a line to $BUMP_FILE; return the line count. Not idempotent."""
    path = os.environ["BUMP_FILE"]
    with open(path, "a") as f:
        f.write("bump\n")
    with open(path) as f:
        return len(f.readlines())


@server.tool(annotations=READ_ONLY)
def sandbox(write_to: list[str]) -> dict[str, object]:
    """Try to write a file into each folder; report that, the network interfaces, uid and $CANARY."""
    writes = {}
    for folder in write_to:
        try:
            with open(os.path.join(folder, "hangar-probe"), "w") as f:
                f.write("probe\n")
            writes[folder] = "ok"
        except OSError as exc:
            writes[folder] = exc.strerror or str(exc)
    return {
        "writes": writes,
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "uid": os.getuid(),
        "canary": os.environ.get("CANARY"),
    }


if __name__ == "__main__":
    server.run()
