"""Benchmark: MCP over streamable HTTP, hangar beside two peers, in one run.

    .venv/bin/python bench/over_http.py [--calls 600]

Targets, each in front of (or being) @modelcontextprotocol/server-everything:
- server-everything's own `streamableHttp` mode;
- mcp-proxy (PyPI), bridging the stdio server to streamable HTTP; installed by this script into
  .cache/bench-venv, never a project dependency;
- mcp-hangar --http with the stdio server behind it, authentication off and on (an API key).

The load is N concurrent clients, each its own MCP session calling `echo` one call after another,
through a small raw streamable-HTTP client (one httpx2 connection per client), so the load
generator costs the same for every target. Prints p50/p99 latency and calls per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import yaml

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING_JS = ROOT / ".cache/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
BENCH_VENV = ROOT / ".cache/bench-venv"
ACCEPT = "application/json, text/event-stream"


class RawSession:
    """Just enough of the streamable HTTP client side: initialize, then tools/call."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.http = httpx2.AsyncClient(headers={"accept": ACCEPT, **headers}, timeout=30)
        self.ids = 0

    async def _post(self, message: dict[str, Any]) -> dict[str, Any] | None:
        response = await self.http.post(self.url, json=message)
        response.raise_for_status()
        if "id" not in message:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                data = json.loads(line[5:])
                if data.get("id") == message["id"]:
                    return data
        raise RuntimeError(f"no answer in {response.text[:200]!r}")

    async def open(self) -> None:
        self.ids += 1
        init = {
            "jsonrpc": "2.0",
            "id": self.ids,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        }
        response = await self.http.post(self.url, json=init)
        response.raise_for_status()
        if sid := response.headers.get("mcp-session-id"):
            self.http.headers["mcp-session-id"] = sid
        self.http.headers["mcp-protocol-version"] = "2025-11-25"
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, name: str, arguments: dict[str, Any]) -> None:
        self.ids += 1
        reply = await self._post(
            {"jsonrpc": "2.0", "id": self.ids, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        )
        if reply is None or "error" in reply or reply["result"].get("isError"):
            raise RuntimeError(f"call failed: {reply}")

    async def close(self) -> None:
        await self.http.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.aclose()
            return
        except OSError:
            await anyio.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port}")


@asynccontextmanager
async def process(cmd: list[str], port: int, env: dict[str, str] | None = None) -> AsyncIterator[None]:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_listening(port)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def load(
    url: str, headers: dict[str, str], call: Callable[[RawSession], Any], clients: int, total: int
) -> tuple[list[float], float]:
    sessions = [RawSession(url, headers) for _ in range(clients)]
    for s in sessions:
        await s.open()
    for s in sessions:
        for _ in range(5):
            await call(s)  # warm
    latencies: list[float] = []

    async def worker(s: RawSession, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            await call(s)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for s in sessions:
            tg.start_soon(worker, s, max(1, total // clients))
    elapsed = time.perf_counter() - t0
    for s in sessions:
        await s.close()
    return latencies, len(latencies) / elapsed


def ensure_mcp_proxy() -> Path:
    exe = BENCH_VENV / "bin" / "mcp-proxy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", "mcp-proxy"], check=True)
    return exe


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
%s
"""


async def wrk(
    url: str, headers: dict[str, str], body: dict[str, Any], connections: int, seconds: int
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) from wrk, a load generator in C, over one MCP session."""
    session = RawSession(url, headers)
    await session.open()
    all_headers = {**session.http.headers, "content-type": "application/json"}
    lines = "\n".join(
        f'wrk.headers["{k}"] = "{v}"' for k, v in all_headers.items() if k.lower() not in ("host", "content-length")
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (json.dumps(body), lines))
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    )
    await session.close()
    os.unlink(script.name)
    out = done.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(out.split("Requests/sec:")[1].split()[0])

    def latency(label: str) -> float:
        value = out.split(f" {label}%")[1].split()[0]
        return (
            float(value[:-2])
            if value.endswith("ms")
            else float(value[:-2]) / 1000
            if value.endswith("us")
            else float(value[:-1]) * 1000
        )

    return rate, latency("50"), latency("99")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(calls: int) -> None:
    echo = {"message": "hello"}

    def direct(s: RawSession) -> Any:
        return s.call("echo", echo)

    def via_hangar(s: RawSession) -> Any:
        return s.call("registry_invoke", {"provider": "everything", "tool": "echo", "arguments": echo})

    proxy = ensure_mcp_proxy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        providers = {"everything": {"mode": "subprocess", "command": ["node", str(EVERYTHING_JS), "stdio"]}}
        off = base / "off.yaml"
        off.write_text(yaml.safe_dump({"providers": providers, "event_store": {"path": str(base / "off.db")}}))
        on = base / "on.yaml"
        on.write_text(
            yaml.safe_dump(
                {"providers": providers, "event_store": {"path": str(base / "on.db")}, "auth": {"enabled": True}}
            )
        )
        key = subprocess.run(
            [
                sys.executable,
                "-m",
                "mcp_hangar",
                "keys",
                "create",
                "--name",
                "bench",
                "--role",
                "user",
                "--config",
                str(on),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

        targets = []
        p1, p2, p3, p4 = (free_port() for _ in range(4))
        targets.append(
            (
                "server-everything streamableHttp",
                ["node", str(EVERYTHING_JS), "streamableHttp"],
                p1,
                {"PORT": str(p1)},
                {},
                direct,
            )
        )
        targets.append(
            (
                "mcp-proxy (stdio server behind)",
                [str(proxy), "--port", str(p2), "--host", "127.0.0.1", "node", str(EVERYTHING_JS), "stdio"],
                p2,
                None,
                {},
                direct,
            )
        )
        hangar = [sys.executable, "-m", "mcp_hangar", "--http", "--log-level", "warning", "--port"]
        targets.append(("mcp-hangar, auth off", [*hangar, str(p3), "--config", str(off)], p3, None, {}, via_hangar))
        targets.append(
            (
                "mcp-hangar, auth on (API key)",
                [*hangar, str(p4), "--config", str(on)],
                p4,
                None,
                {"authorization": f"Bearer {key}"},
                via_hangar,
            )
        )

        wrk_rows = []
        for name, cmd, port, env, headers, call in targets:
            url = f"http://127.0.0.1:{port}/mcp"
            async with process(cmd, port, env):
                for clients in (1, 8, 32):
                    latencies, rate = await load(url, headers, call, clients, calls)
                    rows.append((name, clients, statistics.median(latencies), pct(latencies, 99), rate))
                    print(f"{name:34} {clients:3} clients  {rows[-1][2]:7.2f} ms  {rate:7.0f} calls/s", flush=True)
                if shutil.which("wrk"):
                    body = {
                        "jsonrpc": "2.0",
                        "id": 7,
                        "method": "tools/call",
                        "params": {"name": "echo", "arguments": echo},
                    }
                    if call is via_hangar:
                        arguments = {"provider": "everything", "tool": "echo", "arguments": echo}
                        body["params"] = {"name": "registry_invoke", "arguments": arguments}
                    rate, p50, p99 = await wrk(url, headers, body, 32, 5)
                    wrk_rows.append((name, p50, p99, rate))
                    print(f"{name:34} wrk, 32 connections  {p50:7.2f} ms  {rate:7.0f} calls/s", flush=True)

    print()
    print(f"streamable HTTP, echo, {calls} calls per row; CPython {sys.version.split()[0]}, {os.cpu_count()} cores")
    print()
    print("| target | clients | p50 | p99 | calls/s |")
    print("|---|---|---|---|---|")
    for name, clients, p50, p99, rate in rows:
        print(f"| {name} | {clients} | {p50:.2f} ms | {p99:.2f} ms | {rate:.0f} |")
    if wrk_rows:
        print()
        print("wrk (C load generator), 32 connections on one MCP session, 5 s:")
        print()
        print("| target | p50 | p99 | calls/s |")
        print("|---|---|---|---|")
        for name, p50, p99, rate in wrk_rows:
            print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {rate:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=600)
    args = parser.parse_args()
    anyio.run(main, args.calls)
