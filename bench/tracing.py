"""Benchmark: what tracing costs a call. Echo through hangar over stdio with tracing off and on
(spans exported over OTLP/HTTP to a local receiver that accepts and drops them), the two hangars
called alternately in rounds so both see the same machine.

    .venv/bin/python bench/tracing.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import yaml

from stdio import EVERYTHING, caller, markdown_table, pct, sequential, through_hangar


class Sink(BaseHTTPRequestHandler):
    spans_bytes = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        Sink.spans_bytes += len(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


async def main(calls: int, rounds: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for name, tracing in (("off", {"enabled": False}), ("on", {"enabled": True, "endpoint": endpoint})):
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(
                yaml.safe_dump(
                    {
                        "providers": {"everything": {"mode": "subprocess", "command": EVERYTHING}},
                        "event_store": {"path": str(Path(tmp) / f"{name}.db")},
                        "tracing": tracing,
                    }
                )
            )
            configs[name] = path
        samples: dict[str, list[float]] = {"off": [], "on": []}
        async with through_hangar(configs["off"]) as off, through_hangar(configs["on"]) as on:
            for _ in range(rounds):
                samples["off"] += await sequential(caller(off, True), calls // rounds)
                samples["on"] += await sequential(caller(on, True), calls // rounds)
    server.shutdown()
    p50 = {k: statistics.median(v) for k, v in samples.items()}
    rows = [
        ("echo p50", f"{p50['off']:.3f} ms", f"{p50['on']:.3f} ms", f"{(p50['on'] / p50['off'] - 1) * 100:+.1f}%"),
        (
            "echo p99",
            f"{pct(samples['off'], 99):.3f} ms",
            f"{pct(samples['on'], 99):.3f} ms",
            f"{(pct(samples['on'], 99) / pct(samples['off'], 99) - 1) * 100:+.1f}%",
        ),
    ]
    print(
        markdown_table(
            f"server-everything echo through hangar over stdio, {calls} calls each in {rounds} alternating rounds; "
            f"OTLP export received: {Sink.spans_bytes:,} bytes; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} cores",
            ["measure", "tracing off", "tracing on", "difference"],
            rows,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.rounds)
