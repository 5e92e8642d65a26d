"""Benchmark: container and remote providers, each beside the same server reached directly, one run.

    .venv/bin/python bench/providers.py [--calls 400] [--starts 7] [--out FILE]

server-everything runs in three ways: as a subprocess, in a Podman container (the test image of
tests/podman.py, with the same isolation hangar applies) and as a streamable HTTP server on a
loopback port. "Direct" is the SDK client talking to it itself (over `podman run -i` for the
container); "through hangar" is the same client calling `registry_invoke` on a hangar over stdio.
Cold start: from nothing running to the first echo answered (hangar itself already running, so
what is measured is the provider's start). Warm: sequential echo calls, median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from over_http import free_port, process
from stdio import EVERYTHING, caller, markdown_table, sequential, through_hangar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.podman import IMAGE, RUNTIME_VOLUMES, podman_service

CONTAINER_EVERYTHING = ["/usr/bin/node", *EVERYTHING[1:]]


def podman_run(conf: Path) -> AbstractAsyncContextManager[Client]:
    """`podman run -i` with the isolation hangar applies by default, spoken to over its stdio."""
    args = ["run", "--rm", "-i", "--network", "none", "--read-only", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges", "--memory", "512m", "--pids-limit", "256"]
    args += ["--tmpfs", "/tmp:rw,size=64m"]
    for volume in RUNTIME_VOLUMES:
        args += ["-v", volume]
    return Client(
        StdioServerParameters(
            command="podman",
            args=[*args, IMAGE, *CONTAINER_EVERYTHING],
            env={**os.environ, "CONTAINERS_CONF": str(conf)},
        ),
        mode="legacy",
    )


async def direct_cold(open_client: Any, starts: int) -> list[float]:
    out = []
    for _ in range(starts):
        t0 = time.perf_counter()
        async with open_client() as client:
            await client.call_tool("echo", {"message": "x"})
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def hangar_cold(client: Client, provider: str, starts: int) -> list[float]:
    call = caller(client, True, provider)
    await call("echo", {"message": "first start: engine found, image checked"})
    out = []
    for _ in range(starts):
        stopped = await client.call_tool("registry_stop", {"provider": provider})
        assert not stopped.is_error, stopped
        t0 = time.perf_counter()
        await call("echo", {"message": "x"})
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(calls: int, starts: int, out: Path | None) -> None:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        with podman_service(work / "podman") as engine_url:
            conf = work / "podman" / "containers.conf"
            config = work / "config.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "container": {"host": engine_url},
                        "event_store": {"path": str(work / "events.db")},
                        "providers": {
                            "process": {"mode": "subprocess", "command": EVERYTHING},
                            "box": {
                                "mode": "container",
                                "image": IMAGE,
                                "command": CONTAINER_EVERYTHING,
                                "volumes": RUNTIME_VOLUMES,
                            },
                            "far": {"mode": "remote", "endpoint": f"http://127.0.0.1:{port}/mcp"},
                        },
                    }
                )
            )

            def direct_process() -> AbstractAsyncContextManager[Client]:
                return Client(StdioServerParameters(command=EVERYTHING[0], args=EVERYTHING[1:]), mode="legacy")

            def direct_remote() -> AbstractAsyncContextManager[Client]:
                return Client(f"http://127.0.0.1:{port}/mcp", mode="legacy")

            async with process([*EVERYTHING[:2], "streamableHttp"], port, {"PORT": str(port)}):
                results["process cold direct"] = await direct_cold(direct_process, starts)
                results["container cold direct"] = await direct_cold(lambda: podman_run(conf), starts)
                results["remote cold direct"] = await direct_cold(direct_remote, starts)
                async with through_hangar(config) as client:
                    for provider in ("process", "box", "far"):
                        results[f"{provider} cold hangar"] = await hangar_cold(client, provider, starts)
                    async with direct_process() as dp, podman_run(conf) as dc, direct_remote() as dr:
                        # alternating rounds, so that drift in the machine's load hits all alike
                        for key in ("process", "box", "far"):
                            results[f"{key} warm direct"] = []
                            results[f"{key} warm hangar"] = []
                        for _ in range(4):
                            for key, direct_client in (("process", dp), ("box", dc), ("far", dr)):
                                results[f"{key} warm direct"] += await sequential(
                                    caller(direct_client, False), calls // 4
                                )
                                results[f"{key} warm hangar"] += await sequential(caller(client, True, key), calls // 4)

    med = {k: statistics.median(v) for k, v in results.items()}
    names = {"process": "subprocess", "box": "container", "far": "remote (streamable HTTP)"}
    rows = []
    for key in ("process", "box", "far"):
        cold_key = {"box": "container", "far": "remote"}.get(key, "process")
        d_cold, h_cold = med[f"{cold_key} cold direct"], med[f"{key} cold hangar"]
        d_warm, h_warm = med[f"{key} warm direct"], med[f"{key} warm hangar"]
        rows.append(
            (
                f"{names[key]}: cold start to first echo (median of {starts})",
                f"{d_cold:.0f} ms",
                f"{h_cold:.0f} ms",
                f"{h_cold - d_cold:+.0f} ms",
            )
        )
        rows.append(
            (
                f"{names[key]}: warm echo p50",
                f"{d_warm:.2f} ms",
                f"{h_warm:.2f} ms",
                f"{h_warm / d_warm:.2f}x (+{h_warm - d_warm:.2f} ms)",
            )
        )
    table = markdown_table(
        f"server-everything as subprocess, Podman container ({IMAGE}, runc) and streamable HTTP server; "
        f"{calls} warm calls each in 4 alternating rounds; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores. Container direct = `podman run --rm -i` "
        "with the same isolation flags.",
        ["measure", "direct", "through hangar", "hangar vs direct"],
        rows,
    )
    print(table)
    if out is not None:
        out.write_text(table + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.starts, args.out)
