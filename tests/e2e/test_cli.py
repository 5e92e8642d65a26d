"""The command line beyond serving: `call` (one tool call, no server) and `status` (a running hangar)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import everything_command, time_command, write_config
from tests.e2e.test_auth import make_key
from tests.e2e.test_http import http_hangar

pytestmark = [pytest.mark.e2e]


def hangar_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_hangar", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_call_runs_one_tool_and_exits_with_its_outcome(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "time": {"mode": "subprocess", "command": time_command()},
            "everything": {"mode": "subprocess", "command": everything_command()},
        },
    )
    done = hangar_cli("call", "-c", str(config), "time", "get_current_time", "timezone=UTC")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["timezone"] == "UTC"

    done = hangar_cli("call", "-c", str(config), "everything", "get-sum", "a=2", "b=40", "--json")
    assert done.returncode == 0, done.stderr
    assert "42" in json.loads(done.stdout)["content"][0]["text"]  # numbers given as JSON stay numbers

    done = hangar_cli("call", "-c", str(config), "time", "get_current_time")
    assert done.returncode == 1
    assert "'timezone' is a required property" in done.stdout

    done = hangar_cli("call", "-c", str(config), "time", "get_current_time", "--args", "[1]")
    assert done.returncode == 2 and "--args must be a JSON object" in done.stderr
    done = hangar_cli("call", "-c", str(config), "nope", "x")
    assert done.returncode == 1 and "unknown provider 'nope'" in done.stdout

    # the call is in the event log like any other, and no provider is left running
    events = hangar_cli("events", "-c", str(config), "-t", "tool_completed", "--json")
    assert [json.loads(line)["data"]["tool"] for line in events.stdout.splitlines()] == [
        "get_current_time",
        "get-sum",
    ]


@pytest.mark.anyio
async def test_status_reads_a_running_hangar(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", {"time": {"mode": "subprocess", "command": time_command()}}, auth={"enabled": True}
    )
    key = make_key(config, "viewer")
    async with http_hangar(config) as (base, _):
        done = hangar_cli("status", "--url", f"{base}/mcp", "--api-key", key)
        assert done.returncode == 0, done.stderr
        assert "time" in done.stdout and "cold" in done.stdout
        refused = hangar_cli("status", "--url", f"{base}/mcp")
        assert refused.returncode == 2 and "cannot read the status" in refused.stderr
