"""Benchmark: a group of three members against one member, and how fast a group fails over.

    .venv/bin/python bench/groups.py

Throughput: 32 calls in flight of a 50 ms operation (server-everything's
trigger-long-running-operation), each member limited to 4 concurrent calls (`max_concurrency`),
so the members are the bottleneck. Failover: a member is killed, then a read-only call goes to the
group; the time from the kill to that call's successful answer (from another member).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdio import EVERYTHING, caller, through_hangar

SLOW = {"duration": 0.05, "steps": 1}


async def throughput(call: Any, total: int, in_flight: int = 32) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call("trigger-long-running-operation", SLOW)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
    return total / (time.perf_counter() - t0)


async def main() -> None:
    member = {"mode": "subprocess", "command": EVERYTHING, "max_concurrency": 4}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": {
                        "m1": member,
                        "m2": member,
                        "m3": member,
                        "trio": {"mode": "group", "strategy": "least_connections", "members": ["m1", "m2", "m3"]},
                    },
                    "event_store": {"enabled": False},
                }
            )
        )
        async with through_hangar(config) as client:
            one, group = caller(client, True, "m1"), caller(client, True, "trio")
            await client.call_tool("registry_warm", {})
            single = await throughput(one, 400)
            trio = await throughput(group, 1200)

            latencies = []
            for _ in range(5):
                await client.call_tool("registry_warm", {})
                listed = await client.call_tool("registry_list", {})
                rows = listed.structured_content["providers"]  # type: ignore[index]
                victim = next(r for r in rows if r["id"] == "m1")
                t0 = time.perf_counter()
                os.kill(victim["pid"], signal.SIGKILL)
                while True:
                    result = await client.call_tool(
                        "registry_invoke", {"provider": "trio", "tool": "echo", "arguments": {"message": "x"}}
                    )
                    if not result.is_error:
                        break
                latencies.append((time.perf_counter() - t0) * 1000)
                await anyio.sleep(0.5)
    print("| measure | result |")
    print("|---|---|")
    print(f"| 50 ms operation, 32 in flight, one member (max_concurrency 4) | {single:.0f} calls/s |")
    print(f"| the same through a group of three (least_connections) | {trio:.0f} calls/s ({trio / single:.2f}x) |")
    print(
        f"| failover: member killed to first successful read-only call (median of 5) | {statistics.median(latencies):.1f} ms |"
    )


if __name__ == "__main__":
    anyio.run(main)
