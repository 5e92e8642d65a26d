"""Benchmark: the event store. Append rate per backend, and what recording costs a call.

    .venv/bin/python bench/store.py [--events 50000] [--pg postgresql://postgres@127.0.0.1:5432/test]

1. Sustained append rate: tool-call events pushed through the real writer (encode, hash, batch,
   commit) into SQLite and PostgreSQL, timed until the last one is stored.
2. The call path: server-everything's echo through hangar with the SQLite store on and with it
   off, two hangar processes measured in alternating rounds in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import yaml

from mcp_hangar.config import EventStoreConfig
from mcp_hangar.domain import events as ev
from mcp_hangar.store import make_store
from mcp_hangar.store.encode import Encoder
from mcp_hangar.store.writer import EventWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdio import EVERYTHING, caller, sequential, through_hangar, throughput


async def append_rate(settings: EventStoreConfig, base: Path, events: int) -> float:
    store = make_store(settings, base)
    await store.open()
    writer = EventWriter(store, Encoder({}, ["a-secret-value"]), "bench", max_backlog=10_000)
    task = asyncio.ensure_future(writer.run())
    result = {"content": [{"type": "text", "text": "Echo: hello"}]}
    t0 = time.perf_counter()
    for n in range(events):
        writer.emit(
            ev.ToolCompleted(
                provider_id=f"p{n % 8}", at=time.time(), tool="echo", duration_ms=0.5, is_error=False, result=result
            )
        )
        if writer.backlogged:
            await writer.room()
    await writer.flush()
    elapsed = time.perf_counter() - t0
    await writer.close()
    await task
    await store.close()
    return events / elapsed


async def main(events: int, pg: str, calls: int, rounds: int) -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sqlite_rate = await append_rate(EventStoreConfig(driver="sqlite", path=str(base / "rate.db")), base, events)
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(pg)
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            pg_rate = await append_rate(
                EventStoreConfig(driver="postgres", dsn=f"{pg}?search_path={schema}"), base, events
            )
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.close()
        rows += [
            ("append rate, SQLite (WAL, synchronous=NORMAL)", f"{sqlite_rate:,.0f} events/s"),
            ("append rate, PostgreSQL 127.0.0.1", f"{pg_rate:,.0f} events/s"),
        ]

        providers: dict[str, Any] = {"everything": {"mode": "subprocess", "command": EVERYTHING}}
        on = base / "on.yaml"
        on.write_text(yaml.safe_dump({"providers": providers, "event_store": {"path": str(base / "calls.db")}}))
        off = base / "off.yaml"
        off.write_text(yaml.safe_dump({"providers": providers, "event_store": {"enabled": False}}))
        seq_on: list[float] = []
        seq_off: list[float] = []
        tp_on: list[float] = []
        tp_off: list[float] = []
        async with through_hangar(on) as c_on, through_hangar(off) as c_off:
            call_on, call_off = caller(c_on, True), caller(c_off, True)
            await sequential(call_off, 20)
            await sequential(call_on, 20)
            # Sequential calls alternate one by one between the two, so both see the same noise.
            for n in range(calls):
                for call, out in (
                    ((call_off, seq_off), (call_on, seq_on)) if n % 2 else ((call_on, seq_on), (call_off, seq_off))
                ):
                    t0 = time.perf_counter()
                    await call("echo", {"message": "x"})
                    out.append((time.perf_counter() - t0) * 1000)
            for _ in range(rounds):
                tp_off.append(await throughput(call_off, 32, calls * 4))
                tp_on.append(await throughput(call_on, 32, calls * 4))
        p_on, p_off = statistics.median(seq_on), statistics.median(seq_off)
        t_on, t_off = statistics.median(tp_on), statistics.median(tp_off)
        rows += [
            ("warm echo p50, store off", f"{p_off:.3f} ms"),
            ("warm echo p50, SQLite store on", f"{p_on:.3f} ms ({(p_on / p_off - 1) * 100:+.1f}%)"),
            ("echo, 32 in flight, store off", f"{t_off:,.0f} calls/s"),
            ("echo, 32 in flight, SQLite store on", f"{t_on:,.0f} calls/s ({(t_on / t_off - 1) * 100:+.1f}%)"),
        ]
    lines = [
        f"{events:,} events per append run; {calls} sequential calls each, interleaved; {calls * 4} per throughput round, "
        f"{rounds} alternating rounds",
        "",
        "| measure | result |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.events, args.pg, args.calls, args.rounds)
