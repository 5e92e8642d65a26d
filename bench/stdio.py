"""Benchmark: server-everything called directly vs through mcp-hangar, both over stdio, one run.

    .venv/bin/python bench/stdio.py [--calls 500] [--out bench/RESULTS.md]

The same SDK client drives both sides, so its own cost is in both columns and the ratio is what
hangar adds. Prints a markdown table and, with --out, writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = [
    "node",
    str(ROOT / ".cache/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    "stdio",
]

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


def direct() -> AbstractAsyncContextManager[Client]:
    return Client(StdioServerParameters(command=EVERYTHING[0], args=EVERYTHING[1:]), mode="legacy")


def through_hangar(config: Path) -> AbstractAsyncContextManager[Client]:
    return Client(
        StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_hangar", "--config", str(config), "--log-level", "warning"]
        ),
        mode="legacy",
    )


def caller(client: Client, via_hangar: bool, provider: str = "everything") -> Call:
    async def call(tool: str, arguments: dict[str, Any]) -> Any:
        if via_hangar:
            result = await client.call_tool(
                "registry_invoke", {"provider": provider, "tool": tool, "arguments": arguments}
            )
        else:
            result = await client.call_tool(tool, arguments)
        if result.is_error:
            raise RuntimeError(result.content[0].text)
        return result

    return call


async def sequential(call: Call, n: int) -> list[float]:
    for _ in range(20):  # warm up
        await call("echo", {"message": "warm"})
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call("echo", {"message": f"m{i}"})
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(call: Call, in_flight: int, total: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call("echo", {"message": "x"})

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
    return total / (time.perf_counter() - t0)


async def sleeps(call: Call, count: int = 16, seconds: float = 0.2) -> float:
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(call, "trigger-long-running-operation", {"duration": seconds, "steps": 1})
    return time.perf_counter() - t0


def markdown_table(caption: str, header: list[str], rows: list[tuple[str, ...]]) -> str:
    """A caption line, then the rows as a markdown table: what every benchmark prints."""
    lines = [
        caption,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the part under ``heading`` (up to the next ``# `` heading) replaced by ``section``."""
    start = text.find(heading)
    if start < 0:
        return (text.rstrip() + "\n\n" if text.strip() else "") + section
    end = text.find("\n# ", start + len(heading))
    return text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(calls: int, rounds: int, out: Path | None) -> None:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": {
                        "everything": {"mode": "subprocess", "command": EVERYTHING},
                        "slow": {"mode": "subprocess", "command": EVERYTHING},
                    }
                }
            )
        )

        # --- cold start: the provider's own spawn-to-initialized vs hangar's first call ------
        direct_starts = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with direct() as client:
                direct_starts.append((time.perf_counter() - t0) * 1000)
                await client.call_tool("echo", {"message": "x"})
        hangar_init: list[float] = []
        cold_calls: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with through_hangar(config) as client:
                hangar_init.append((time.perf_counter() - t0) * 1000)
                t1 = time.perf_counter()
                await caller(client, True)("echo", {"message": "x"})
                cold_calls.append((time.perf_counter() - t1) * 1000)

        # --- warm calls: both clients open at once, measured in alternating rounds so that
        # drift in the machine's load hits both sides alike; the median round is reported ---
        d_seq: list[float] = []
        h_seq: list[float] = []
        d_tp8, h_tp8, d_tp32, h_tp32, d_sleep, h_sleep = [], [], [], [], [], []  # type: ignore[var-annotated]
        async with direct() as d_client, through_hangar(config) as client:
            d_call, call = caller(d_client, False), caller(client, True)
            for _ in range(rounds):
                d_seq += await sequential(d_call, calls // rounds)
                h_seq += await sequential(call, calls // rounds)
                d_tp8.append(await throughput(d_call, 8, calls * 4))
                h_tp8.append(await throughput(call, 8, calls * 4))
                d_tp32.append(await throughput(d_call, 32, calls * 4))
                h_tp32.append(await throughput(call, 32, calls * 4))
                d_sleep.append(await sleeps(d_call))
                h_sleep.append(await sleeps(call))
            d_tp8, h_tp8, d_tp32, h_tp32 = map(statistics.median, (d_tp8, h_tp8, d_tp32, h_tp32))
            d_sleep, h_sleep = statistics.median(d_sleep), statistics.median(h_sleep)

            # echo on one provider while another is busy with a slow call
            slow = caller(client, True, "slow")
            await slow("echo", {"message": "warm"})
            quiet = await sequential(call, 500)
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow, "trigger-long-running-operation", {"duration": 10, "steps": 10})
                await anyio.sleep(0.1)
                busy = await sequential(call, 500)
                tg.cancel_scope.cancel()

    def ms(v: float) -> str:
        return f"{v:.2f} ms"

    d50, h50 = statistics.median(d_seq), statistics.median(h_seq)
    rows += [
        ("echo, sequential p50", ms(d50), ms(h50), f"{h50 / d50:.2f}x"),
        ("echo, sequential p99", ms(pct(d_seq, 99)), ms(pct(h_seq, 99)), f"{pct(h_seq, 99) / pct(d_seq, 99):.2f}x"),
        ("echo, 8 in flight", f"{d_tp8:.0f}/s", f"{h_tp8:.0f}/s", f"{h_tp8 / d_tp8:.0%} of direct"),
        ("echo, 32 in flight", f"{d_tp32:.0f}/s", f"{h_tp32:.0f}/s", f"{h_tp32 / d_tp32:.0%} of direct"),
        (
            "16 concurrent 200 ms operations",
            f"{d_sleep:.3f} s",
            f"{h_sleep:.3f} s",
            f"+{(h_sleep - d_sleep) * 1000:.0f} ms",
        ),
        (
            "echo p50 / p99 while another provider is busy",
            f"quiet: {ms(statistics.median(quiet))} / {ms(pct(quiet, 99))}",
            f"busy: {ms(statistics.median(busy))} / {ms(pct(busy, 99))}",
            f"p99 {pct(busy, 99) / pct(quiet, 99):.2f}x",
        ),
        (
            "first call on a cold provider (median of 5)",
            f"spawn to initialized: {ms(statistics.median(direct_starts))}",
            ms(statistics.median(cold_calls)),
            f"+{statistics.median(cold_calls) - statistics.median(direct_starts):.0f} ms",
        ),
        ("hangar spawn to initialized (median of 5)", "", ms(statistics.median(hangar_init)), ""),
    ]
    table = markdown_table(
        f"server-everything over stdio; {calls} sequential calls, {calls * 4} calls per throughput round, "
        f"in {rounds} alternating rounds (throughput: median round); "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores",
        ["measure", "direct", "through hangar", "hangar vs direct"],
        rows,
    )
    print(table)
    if out is not None:
        section = (
            "# Benchmark: stdio\n\nCommand: `.venv/bin/python bench/stdio.py --out bench/RESULTS.md`\n\n" + table + "\n"
        )
        out.write_text(replace_section(out.read_text() if out.exists() else "", "# Benchmark: stdio", section))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.rounds, args.out)
