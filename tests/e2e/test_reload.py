"""Configuration reload (SIGHUP): providers and group members come and go without dropping calls."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import RawHangar, faulty_command, pid_alive, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def member(name: str) -> dict[str, Any]:
    return {"mode": "subprocess", "command": faulty_command(), "env": {"MEMBER": name}}


def config_with(path: Path, members: list[str], **more: Any) -> Path:
    providers: dict[str, Any] = {name: member(name) for name in members}
    providers["pool"] = {"mode": "group", "strategy": "round_robin", "members": members}
    providers.update(more)
    return write_config(path, providers)


def structured(result: dict[str, Any]) -> Any:
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])


async def listed(raw: RawHangar) -> dict[str, Any]:
    found: dict[str, Any] = structured(await raw.tool("registry_list"))
    return found


def events_in(db: Path) -> list[tuple[str, dict[str, Any]]]:
    """(type, data with the stream as provider_id) for every event, in order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT type, stream, data FROM events ORDER BY position")
        return [(kind, {**json.loads(data), "provider_id": stream}) for kind, stream, data in rows]


async def test_reload_adds_removes_and_rebalances_without_dropping_a_call(tmp_path: Path) -> None:
    path = config_with(tmp_path / "c.yaml", ["a", "b"])
    async with RawHangar.running(path) as raw:
        await raw.initialize()
        pids = {}
        for name in ("a", "b"):
            pids[name] = structured(await raw.tool("registry_invoke", provider=name, tool="pid"))

        outcome: dict[str, Any] = {}

        async def long_call_on_b() -> None:
            outcome["b"] = await raw.tool("registry_invoke", provider="b", tool="sleep", arguments={"seconds": 1.5})

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call_on_b)
            await anyio.sleep(0.3)
            # b leaves, c joins; the group is rebalanced over a and c
            config_with(path, ["a", "c"])
            raw.process.send_signal(signal.SIGHUP)
            with anyio.fail_after(10):
                while [m["id"] for m in (await listed(raw))["groups"][0]["members"]] != ["a", "c"]:
                    await anyio.sleep(0.05)
            providers = {p["id"]: p for p in (await listed(raw))["providers"]}
            assert set(providers) == {"a", "c"}  # b no longer takes calls...
            assert pid_alive(pids["b"])  # ...but still finishes the one it has
            refused = await raw.tool("registry_invoke", provider="b", tool="pid")
            assert refused["isError"] and "unknown provider 'b'" in refused["content"][0]["text"]
        assert not outcome["b"].get("isError"), outcome["b"]  # the call in flight was not dropped
        with anyio.fail_after(10):
            while pid_alive(pids["b"]):
                await anyio.sleep(0.05)  # drained, then stopped

        # round robin now alternates between a (the same process as before) and c
        seen = []
        for _ in range(4):
            result = await raw.tool("registry_invoke", provider="pool", tool="pid")
            seen.append(structured(result))
        assert pids["a"] in seen and len(set(seen)) == 2 and seen[0] != seen[1]

        # a broken file is refused as a whole: what runs stays as it was
        path.write_text(path.read_text().replace("round_robin", "round_and_round"))
        raw.process.send_signal(signal.SIGHUP)
        await anyio.sleep(1.0)
        assert [m["id"] for m in (await listed(raw))["groups"][0]["members"]] == ["a", "c"]
        still = await raw.tool("registry_invoke", provider="pool", tool="pid")
        assert not still.get("isError"), still

    events = events_in(tmp_path / "c-events.db")
    reloaded = [d for k, d in events if k == "config_reloaded"]
    assert reloaded[0]["provider_id"] == "hangar.config"
    assert reloaded[0]["added"] == ["c"] and reloaded[0]["removed"] == ["b"]
    assert reloaded[0]["changed"] == ["pool"] and reloaded[0]["not_applied"] == []
    rebalanced = [d for k, d in events if k == "group_rebalanced"]
    assert rebalanced[0]["provider_id"] == "pool"
    assert rebalanced[0]["added"] == ["c"] and rebalanced[0]["removed"] == ["b"]
    failed = [d for k, d in events if k == "config_reload_failed"]
    assert "c.yaml:18: provider 'pool': key 'strategy'" in failed[0]["error"]
    stopped = [d for k, d in events if k == "provider_stopped" and d["provider_id"] == "b"]
    assert stopped and "removed" in stopped[0]["reason"]


async def test_a_changed_provider_is_replaced_and_an_unchanged_one_keeps_running(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", {"same": member("same"), "moved": member("v1")})
    async with RawHangar.running(path) as raw:
        await raw.initialize()
        same = structured(await raw.tool("registry_invoke", provider="same", tool="pid"))
        old = structured(await raw.tool("registry_invoke", provider="moved", tool="pid"))
        write_config(path, {"same": member("same"), "moved": member("v2")})
        raw.process.send_signal(signal.SIGHUP)
        with anyio.fail_after(10):
            while pid_alive(old):
                await anyio.sleep(0.05)
        new = structured(await raw.tool("registry_invoke", provider="moved", tool="pid"))
        assert new != old
        assert structured(await raw.tool("registry_invoke", provider="same", tool="pid")) == same


async def test_over_http_a_reload_updates_metrics_and_a_draining_call_is_still_counted(tmp_path: Path) -> None:
    import httpx2
    from mcp import Client

    from tests.e2e.test_http import http_hangar

    path = write_config(tmp_path / "c.yaml", {"old": member("old"), "pool": {"mode": "group", "members": ["old"]}})
    async with http_hangar(path) as (base, process), Client(f"{base}/mcp", mode="legacy") as client:
        warm = await client.call_tool("registry_invoke", {"provider": "old", "tool": "pid"})
        assert not warm.is_error
        outcome: dict[str, Any] = {}

        async def long_call() -> None:
            outcome["old"] = await client.call_tool(
                "registry_invoke", {"provider": "old", "tool": "sleep", "arguments": {"seconds": 1.0}}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            await anyio.sleep(0.3)
            write_config(path, {"new": member("new"), "pool": {"mode": "group", "members": ["new"]}})
            process.send_signal(signal.SIGHUP)
            async with httpx2.AsyncClient() as http:
                with anyio.fail_after(10):
                    while 'provider="new"' not in (metrics := (await http.get(f"{base}/metrics")).text):
                        await anyio.sleep(0.05)
        assert not outcome["old"].is_error, outcome["old"]
        assert 'mcp_hangar_config_reloads_total{outcome="applied"} 1.0' in metrics
        assert 'mcp_hangar_group_rebalances_total{group="pool"} 1.0' in metrics
        assert 'mcp_hangar_provider_state{provider="old"' not in metrics
        async with httpx2.AsyncClient() as http:
            metrics = (await http.get(f"{base}/metrics")).text
        assert 'mcp_hangar_tool_calls_total{outcome="ok",provider="old",tool="sleep"} 1.0' in metrics, [
            line for line in metrics.splitlines() if "tool_calls_total" in line
        ]
        fresh = await client.call_tool("registry_invoke", {"provider": "new", "tool": "pid"})
        assert not fresh.is_error


async def test_with_watch_a_changed_file_is_reloaded_without_a_signal(tmp_path: Path) -> None:
    import os

    path = write_config(tmp_path / "c.yaml", {"a": member("a")})
    async with RawHangar.running(path, "--watch") as raw:
        await raw.initialize()
        await anyio.sleep(0.5)  # the watcher is set up
        # as editors and Kubernetes do: a new file renamed over the old one
        staged = write_config(tmp_path / "staged.yaml", {"a": member("a"), "b": member("b")})
        staged.write_text(staged.read_text().replace("staged-events.db", "c-events.db"))
        os.replace(staged, path)
        with anyio.fail_after(10):
            while {p["id"] for p in (await listed(raw))["providers"]} != {"a", "b"}:
                await anyio.sleep(0.1)
        ok = await raw.tool("registry_invoke", provider="b", tool="pid")
        assert not ok.get("isError"), ok
        path.touch()  # the same content: nothing to do
        await anyio.sleep(1.0)
    reloads = [d for k, d in events_in(tmp_path / "c-events.db") if k == "config_reloaded"]
    assert len(reloads) == 1 and reloads[0]["added"] == ["b"]
