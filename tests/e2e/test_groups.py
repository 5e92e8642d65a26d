"""Groups end to end: real server-everything members told apart by an environment variable."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import everything_command, faulty_command, hangar, write_config
from tests.e2e.test_registry import call, fail

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def member(name: str, **extra: Any) -> dict[str, Any]:
    return {"mode": "subprocess", "command": everything_command(), "env": {"MEMBER": name}, **extra}


async def who(client: Any, group: str) -> str:
    """Which member answered: server-everything's get-env shows its environment."""
    result = await client.call_tool("registry_invoke", {"provider": group, "tool": "get-env"})
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)["MEMBER"]


async def test_round_robin_alternates_and_a_dead_member_is_skipped(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "a": member("a"),
            "b": member("b"),
            "pool": {"mode": "group", "strategy": "round_robin", "members": ["a", "b"]},
        },
    )
    async with hangar(config) as client:
        assert [await who(client, "pool") for _ in range(4)] == ["a", "b", "a", "b"]
        listed = await call(client, "registry_list")
        assert listed["groups"][0]["state"] == "healthy" and listed["groups"][0]["strategy"] == "round_robin"
        tools = await call(client, "registry_tools", provider="pool")
        assert "echo" in {t["name"] for t in tools["tools"]} and tools["mismatched_members"] == []

        pid_a = next(r["pid"] for r in listed["providers"] if r["id"] == "a")
        os.kill(pid_a, signal.SIGKILL)
        await anyio.sleep(0.3)
        # read-only calls keep working: a's death sends them to b, a restarts on its next turn
        answers = [await who(client, "pool") for _ in range(6)]
        assert set(answers) <= {"a", "b"} and answers.count("b") >= 3


async def test_priority_fails_over_to_the_backup_and_back(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "primary": member("primary", circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 1}),
            "backup": member("backup"),
            "pair": {
                "mode": "group",
                "strategy": "priority",
                "members": [{"id": "primary", "priority": 1}, {"id": "backup", "priority": 2}],
            },
        },
    )
    async with hangar(config) as client:
        assert await who(client, "pair") == "primary"
        pid = next(r["pid"] for r in (await call(client, "registry_list"))["providers"] if r["id"] == "primary")
        os.kill(pid, signal.SIGSTOP)  # alive but silent: calls to it time out
        try:
            answered = await client.call_tool(
                "registry_invoke", {"provider": "pair", "tool": "get-env", "timeout": 0.5}
            )
            assert not answered.is_error
            assert json.loads(answered.content[0].text)["MEMBER"] == "backup"  # failed over, nothing failed
            assert await who(client, "pair") == "backup"  # the primary's circuit is open now
            audit = await call(client, "registry_audit", type="group_failover")
            assert audit["events"][0]["data"]["from_member"] == "primary"
        finally:
            os.kill(pid, signal.SIGCONT)
        await anyio.sleep(1.2)
        with anyio.fail_after(10):
            while await who(client, "pair") != "primary":  # a probe closes its circuit: it is back
                await anyio.sleep(0.2)


async def test_a_call_that_is_not_idempotent_is_not_repeated_elsewhere(tmp_path: Path) -> None:
    bumps = tmp_path / "bumps"
    faulty = {"mode": "subprocess", "command": faulty_command(), "env": {"BUMP_FILE": str(bumps)}}
    config = write_config(
        tmp_path / "c.yaml",
        {"x": faulty, "y": faulty, "both": {"mode": "group", "strategy": "round_robin", "members": ["x", "y"]}},
    )
    async with hangar(config) as client:
        text = await fail(client, "registry_invoke", provider="both", tool="crash")
        assert "not retried on another member" in text and "exited with code 3" in text
        ok = await client.call_tool("registry_invoke", {"provider": "both", "tool": "bump"})
        assert not ok.is_error and bumps.read_text() == "bump\n"  # exactly once


async def test_members_can_be_defined_inline(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "pair": {
                "mode": "group",
                "strategy": "priority",
                "members": [{**member("first"), "priority": 1}, {**member("second"), "priority": 2}],
            }
        },
    )
    async with hangar(config) as client:
        assert await who(client, "pair") == "first"
        listed = await call(client, "registry_list")
        assert {r["id"] for r in listed["providers"]} == {"pair-1", "pair-2"}


async def test_failback_waits_for_the_primary_to_stay_available(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "primary": member("primary", circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 0.5}),
            "backup": member("backup"),
            "pair": {
                "mode": "group",
                "strategy": "priority",
                "failback_delay_s": 2,
                "members": [{"id": "primary", "priority": 1}, {"id": "backup", "priority": 2}],
            },
        },
    )
    async with hangar(config) as client:
        assert await who(client, "pair") == "primary"
        pid = next(r["pid"] for r in (await call(client, "registry_list"))["providers"] if r["id"] == "primary")
        os.kill(pid, signal.SIGSTOP)
        try:
            answered = await client.call_tool(
                "registry_invoke", {"provider": "pair", "tool": "get-env", "timeout": 0.5}
            )
            assert json.loads(answered.content[0].text)["MEMBER"] == "backup"
        finally:
            os.kill(pid, signal.SIGCONT)
        await anyio.sleep(0.8)  # the breaker would let a probe through now, but the primary must settle first
        assert await who(client, "pair") == "backup"
        await anyio.sleep(2.2)
        assert await who(client, "pair") == "primary"
