"""Container providers on a real Podman engine: isolation, lifecycle, leftovers, clear errors.

The image is a root file system of empty mount points (tests/podman.py); each provider binds this
machine's Node.js or Python read-only, so real MCP servers run inside without any registry pull.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest

from tests.conftest import EVERYTHING_JS, FAULTY, RawHangar, everything_command, hangar, write_config
from tests.podman import IMAGE, RUNTIME_VOLUMES

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LABEL = "mcp.hangar.managed=true"


def everything_in_container(**extra: Any) -> dict[str, Any]:
    everything_command()  # fails clearly when it is not installed
    return {
        "mode": "container",
        "image": IMAGE,
        "command": ["/usr/bin/node", str(EVERYTHING_JS), "stdio"],
        "volumes": RUNTIME_VOLUMES,
        **extra,
    }


def faulty_in_container(**extra: Any) -> dict[str, Any]:
    return {
        "mode": "docker",  # the seed's alias
        "image": IMAGE,
        "command": [sys.executable, str(FAULTY)],
        "volumes": RUNTIME_VOLUMES,
        **extra,
    }


def ours(engine: docker.DockerClient, provider: str | None = None) -> list[dict[str, Any]]:
    labels = [LABEL] + ([f"mcp.hangar.provider={provider}"] if provider else [])
    found: list[dict[str, Any]] = engine.api.containers(all=True, filters={"label": labels})
    return found


@pytest.fixture
def engine(container_host: str) -> Any:
    client = docker.DockerClient(base_url=container_host)
    yield client
    client.close()


def text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_container_provider_runs_isolated_and_is_removed_on_stop(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"box": everything_in_container(resources={"memory": "256m", "cpus": 0.5, "pids": 128})},
        container={"host": container_host},
    )
    async with hangar(config) as client:
        result = await client.call_tool(
            "registry_invoke", {"provider": "box", "tool": "echo", "arguments": {"message": "boxed"}}
        )
        assert not result.is_error, text(result)
        assert text(result) == "Echo: boxed"
        big = "0123456789" * 30_000  # a message of many engine frames, both ways
        result = await client.call_tool(
            "registry_invoke", {"provider": "box", "tool": "echo", "arguments": {"message": big}}
        )
        assert text(result) == f"Echo: {big}"

        [found] = ours(engine, "box")
        info = engine.api.inspect_container(found["Id"])
        host = info["HostConfig"]
        assert info["Config"]["Labels"]["mcp.hangar.instance"].count(":") == 2
        assert host["ReadonlyRootfs"] is True
        assert host["NetworkMode"] == "none"
        assert host["Memory"] == 256 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 128
        assert "no-new-privileges" in host["SecurityOpt"]
        assert {c.upper().removeprefix("CAP_") for c in host["CapDrop"]} >= {"CHOWN", "NET_RAW", "SYS_CHROOT"}
        assert host["Tmpfs"]["/tmp"].startswith("rw")

        listed = json.loads(text(await client.call_tool("registry_list", {})))
        [row] = listed["providers"]
        assert row["container"] == found["Id"][:12] and row["pid"] == info["State"]["Pid"]

        stopped = await client.call_tool("registry_stop", {"provider": "box"})
        assert not stopped.is_error, text(stopped)
        assert ours(engine, "box") == []


async def test_inside_the_container_root_is_read_only_there_is_no_network_and_env_arrives(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    data, shared = tmp_path / "data", tmp_path / "shared"
    for folder in (data, shared):
        folder.mkdir()
        folder.chmod(0o777)  # writable for the container's user, were the mount not read-only
    config = write_config(
        tmp_path / "c.yaml",
        {
            "probe": faulty_in_container(
                env={"CANARY": "${PROBE_CANARY}"},
                volumes=[*RUNTIME_VOLUMES, "./data:/data:rw", f"{shared}:/ro-data"],
                user="65534:65534",
            )
        },
        container={"host": container_host},
    )
    canary = "canary-d41d8cd98f00b204"
    async with hangar(config, env={"PROBE_CANARY": canary}) as client:
        result = await client.call_tool(
            "registry_invoke",
            {
                "provider": "probe",
                "tool": "sandbox",
                "arguments": {"write_to": ["/", "/etc", "/tmp", "/data", "/ro-data"]},
            },
        )
        assert not result.is_error, text(result)
        seen = json.loads(text(result))
        assert seen["writes"] == {
            "/": "Read-only file system",
            "/etc": "Read-only file system",
            "/tmp": "ok",
            "/data": "ok",  # a volume marked :rw
            "/ro-data": "Read-only file system",  # volumes are read-only unless marked :rw
        }
        assert seen["interfaces"] == ["lo"]
        assert seen["uid"] == 65534
        assert seen["canary"] == canary
    assert (data / "hangar-probe").read_text() == "probe\n"
    # the secret was passed at create time, and is not in the event log or the config printout
    events = (tmp_path / "c-events.db").read_bytes()
    assert canary.encode() not in events


async def test_a_container_killed_mid_call_fails_the_call_fast_then_recovers(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    config = write_config(
        tmp_path / "c.yaml", {"box": faulty_in_container(call_timeout_s=30)}, container={"host": container_host}
    )
    async with hangar(config) as client:
        first = await client.call_tool("registry_invoke", {"provider": "box", "tool": "pid"})
        assert not first.is_error, text(first)
        [before] = ours(engine, "box")
        outcome: dict[str, Any] = {}

        async def slow_call() -> None:
            t0 = time.monotonic()
            outcome["result"] = await client.call_tool(
                "registry_invoke", {"provider": "box", "tool": "sleep", "arguments": {"seconds": 20}}
            )
            outcome["seconds"] = time.monotonic() - t0

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_call)
            await anyio.sleep(1.0)
            engine.api.kill(before["Id"], signal="SIGKILL")
        assert outcome["result"].is_error
        assert "exit" in text(outcome["result"]) and "137" in text(outcome["result"]), text(outcome["result"])
        assert outcome["seconds"] < 10  # not the call timeout (30 s) nor the sleep (20 s)

        again = await client.call_tool("registry_invoke", {"provider": "box", "tool": "pid"})
        assert not again.is_error, text(again)
        [after] = ours(engine, "box")
        assert after["Id"] != before["Id"]  # a new container; the killed one was removed
        assert engine.api.containers(all=True, filters={"id": before["Id"]}) == []


async def test_containers_left_by_a_killed_hangar_are_removed_by_the_next_one(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"box": everything_in_container()},
        container={"host": container_host},
        event_store={"enabled": False},
    )
    # A container of a hangar that is still alive (this test process) is not anyone's leftover.
    from mcp_hangar.launchers.container import this_instance

    alive = engine.api.create_container(
        IMAGE,
        command=["/usr/bin/sleep", "60"],
        labels={"mcp.hangar.managed": "true", "mcp.hangar.provider": "other", "mcp.hangar.instance": this_instance()},
        host_config=engine.api.create_host_config(binds=RUNTIME_VOLUMES, network_mode="none"),
    )
    try:
        async with RawHangar.running(config) as raw:
            await raw.initialize()
            answer = await raw.tool("registry_invoke", provider="box", tool="echo", arguments={"message": "x"})
            assert not answer.get("isError"), answer
            [left] = ours(engine, "box")
            raw.process.send_signal(signal.SIGKILL)
            await raw.process.wait()
        assert [c["Id"] for c in ours(engine, "box")] == [left["Id"]]  # hangar could not clean up

        async with RawHangar.running(config) as raw:
            await raw.initialize()
            with anyio.fail_after(20):
                while ours(engine, "box"):
                    await anyio.sleep(0.1)
            assert engine.api.containers(all=True, filters={"id": alive["Id"]}) != []

            # and a hangar stopped the usual way leaves nothing behind
            answer = await raw.tool("registry_invoke", provider="box", tool="echo", arguments={"message": "y"})
            assert not answer.get("isError"), answer
            assert len(ours(engine, "box")) == 1
            raw.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                await raw.process.wait()
        assert ours(engine, "box") == []
    finally:
        engine.api.remove_container(alive["Id"], force=True)


async def test_clear_errors_for_a_missing_volume_engine_and_image(tmp_path: Path, container_host: str) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "novolume": everything_in_container(volumes=[*RUNTIME_VOLUMES, "./missing:/data"]),
            "noimage": everything_in_container(image="localhost/hangar-no-such-image:1"),
        },
        container={"host": container_host},
    )
    async with hangar(config) as client:
        result = await client.call_tool("registry_invoke", {"provider": "novolume", "tool": "echo"})
        assert result.is_error
        assert f"host path '{tmp_path / 'missing'}' does not exist" in text(result), text(result)

        result = await client.call_tool("registry_invoke", {"provider": "noimage", "tool": "echo"})
        assert result.is_error
        assert "'localhost/hangar-no-such-image:1' is not on" in text(result), text(result)
        assert "pulling it failed" in text(result) and "build" in text(result)

    nowhere = write_config(
        tmp_path / "n.yaml",
        {"box": everything_in_container()},
        container={"host": f"unix://{tmp_path}/no-engine.sock"},
    )
    async with hangar(nowhere) as client:
        result = await client.call_tool("registry_invoke", {"provider": "box", "tool": "echo"})
        assert result.is_error
        assert "no container engine is reachable" in text(result)
        assert f"unix://{tmp_path}/no-engine.sock (from container.host in the config)" in text(result), text(result)


async def test_an_image_with_a_build_section_is_built_when_missing(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    tag = f"localhost/hangar-built-{os.getpid()}:{int(time.time())}"
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "Containerfile").write_text(f"FROM {IMAGE}\nLABEL org.example.built=yes\n")
    config = write_config(
        tmp_path / "c.yaml",
        {"built": everything_in_container(image=tag, build={"context": "img", "dockerfile": "Containerfile"})},
        container={"host": container_host},
    )
    try:
        async with hangar(config) as client:
            result = await client.call_tool(
                "registry_invoke", {"provider": "built", "tool": "echo", "arguments": {"message": "built"}}
            )
            assert not result.is_error, text(result)
            assert engine.images.get(tag).labels["org.example.built"] == "yes"
    finally:
        engine.images.remove(tag, force=True)


def test_volume_form_is_checked_when_the_config_is_loaded(tmp_path: Path) -> None:
    from mcp_hangar.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  box:\n    mode: container\n    image: x\n    volumes:\n      - /data\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "bad.yaml:6: provider 'box': key 'volumes.0': volume '/data': expected 'host:/container/path'" in str(
        err.value
    )


async def test_an_image_removed_while_hangar_runs_is_built_again(
    tmp_path: Path, container_host: str, engine: Any
) -> None:
    tag = f"localhost/hangar-rebuilt-{os.getpid()}:{int(time.time())}"
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "Dockerfile").write_text(f"FROM {IMAGE}\n")
    config = write_config(
        tmp_path / "c.yaml",
        {"built": everything_in_container(image=tag, build={"context": "img"})},
        container={"host": container_host},
    )
    try:
        async with hangar(config) as client:
            first = await client.call_tool(
                "registry_invoke", {"provider": "built", "tool": "echo", "arguments": {"message": "m"}}
            )
            assert not first.is_error, text(first)
            await client.call_tool("registry_stop", {"provider": "built"})
            engine.images.remove(tag, force=True)
            gone = await client.call_tool(
                "registry_invoke", {"provider": "built", "tool": "echo", "arguments": {"message": "m"}}
            )
            assert gone.is_error and tag in text(gone)  # reported, and forgotten
            with anyio.fail_after(30):
                while (
                    again := await client.call_tool(
                        "registry_invoke", {"provider": "built", "tool": "echo", "arguments": {"message": "m"}}
                    )
                ).is_error:
                    assert "next start allowed" in text(again) or tag in text(again), text(again)
                    await anyio.sleep(0.5)
            assert engine.images.get(tag)
    finally:
        with contextlib.suppress(Exception):
            engine.images.remove(tag, force=True)
