"""Discovery end to end: a watched folder, installed packages' entry points, labelled containers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest
import yaml

from tests.conftest import EVERYTHING_JS, RawHangar, everything_command, faulty_command, pid_alive, write_config
from tests.e2e.test_reload import events_in
from tests.e2e.test_remote import free_port
from tests.podman import IMAGE, RUNTIME_VOLUMES

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def faulty(name: str) -> dict[str, Any]:
    return {"mode": "subprocess", "command": faulty_command(), "env": {"MEMBER": name}}


def put(path: Path, providers: dict[str, Any]) -> None:
    """Write a provider file the way editors do: a new file renamed over the old one."""
    staged = path.with_suffix(".tmp")
    staged.write_text(yaml.safe_dump({"providers": providers}))
    os.replace(staged, path)


def data(result: dict[str, Any]) -> Any:
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])


async def providers_of(raw: RawHangar) -> set[str]:
    listed = await raw.tool("registry_list")
    return {p["id"] for p in json.loads(listed["content"][0]["text"])["providers"]}


async def until(raw: RawHangar, want: set[str], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while await providers_of(raw) != want:
            await anyio.sleep(0.1)


async def test_a_watched_folder_adds_replaces_quarantines_and_removes_providers(tmp_path: Path) -> None:
    folder = tmp_path / "providers.d"
    folder.mkdir()
    put(folder / "a.yaml", {"found": faulty("v1"), "static": faulty("shadow")})
    config = write_config(
        tmp_path / "c.yaml",
        {"static": faulty("static")},
        discovery={"mode": "authoritative", "sources": [{"type": "folder", "path": "providers.d"}]},
    )
    async with RawHangar.running(config) as raw:
        await raw.initialize()
        assert await providers_of(raw) == {"static", "found"}  # found before hangar served
        first = data(await raw.tool("registry_invoke", provider="found", tool="pid"))
        sources = (await raw.tool("registry_sources"))["structuredContent"]
        assert sources["conflicts"] == [
            f"provider 'static' from {folder / 'a.yaml'} is ignored: the config file defines it"
        ]

        # a new file appears: no signal, no call needed
        put(folder / "b.yaml", {"more": faulty("more")})
        await until(raw, {"static", "found", "more"})

        # a broken edit is quarantined: the last good version keeps running, the problem is shown
        (folder / "a.yaml").write_text("providers:\n  found: {mode: subprocess, comand: [x]}\n")
        with anyio.fail_after(10):
            while not (state := (await raw.tool("registry_sources"))["structuredContent"])["sources"][0]["problems"]:
                await anyio.sleep(0.1)
        problems = state["sources"][0]["problems"]
        assert any("a.yaml:2: provider 'found': key 'comand': unknown key" in p for p in problems), problems
        assert any("last good version stays in use" in p for p in problems)
        assert data(await raw.tool("registry_invoke", provider="found", tool="pid")) == first

        # a real change replaces the provider (a new process); the old one is drained and stopped
        put(folder / "a.yaml", {"found": faulty("v2")})
        with anyio.fail_after(10):
            while pid_alive(first):
                await anyio.sleep(0.1)
        second = data(await raw.tool("registry_invoke", provider="found", tool="pid"))
        assert second != first

        # authoritative: a file removed takes its providers with it
        (folder / "b.yaml").unlink()
        await until(raw, {"static", "found"})
        gone = await raw.tool("registry_invoke", provider="more", tool="pid")
        assert gone["isError"] and "unknown provider 'more'" in gone["content"][0]["text"]

        outcome = (await raw.tool("registry_discover"))["structuredContent"]
        assert outcome["added"] == outcome["removed"] == outcome["changed"] == []

    applied = [d for kind, d in events_in(tmp_path / "c-events.db") if kind == "discovery_applied"]
    assert [d["added"] for d in applied][:2] == [["found"], ["more"]]
    assert any(d["changed"] == ["found"] for d in applied), applied
    assert any(d["removed"] == ["more"] for d in applied)


async def test_additive_mode_keeps_what_it_found(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    put(folder / "x.yaml", {"kept": faulty("kept")})
    config = write_config(tmp_path / "c.yaml", {}, discovery={"sources": [{"type": "folder", "path": "d"}]})
    async with RawHangar.running(config) as raw:
        await raw.initialize()
        assert await providers_of(raw) == {"kept"}
        (folder / "x.yaml").unlink()
        await raw.tool("registry_discover")
        assert await providers_of(raw) == {"kept"}
        assert not (await raw.tool("registry_invoke", provider="kept", tool="pid")).get("isError")


async def test_entry_points_of_installed_packages(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "hangar_plugin_demo-1.0.dist-info").mkdir(parents=True)
    (site / "hangar_plugin_demo-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hangar-plugin-demo\nVersion: 1.0\n"
    )
    (site / "hangar_plugin_demo-1.0.dist-info" / "entry_points.txt").write_text(
        "[mcp.providers]\n"
        "plugged = hangar_plugin_demo:PROVIDER\n"
        "several = hangar_plugin_demo:several\n"
        "broken = hangar_plugin_demo:missing\n"
        "ghosts = hangar_plugin_demo:GHOSTS\n"
    )
    (site / "hangar_plugin_demo.py").write_text(
        f"PROVIDER = {{'mode': 'subprocess', 'command': {faulty_command()!r}}}\n"
        f"def several():\n    return {{'plugged-b': {{'mode': 'subprocess', 'command': {faulty_command()!r}}}}}\n"
        "GHOSTS = {'mode': 'group', 'members': ['nobody-here']}\n"  # a group of providers that do not exist
    )
    config = write_config(tmp_path / "c.yaml", {}, discovery={"sources": [{"type": "entrypoints"}]})
    os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        async with RawHangar.running(config) as raw:
            await raw.initialize()
            assert await providers_of(raw) == {"plugged", "plugged-b"}
            assert not (await raw.tool("registry_invoke", provider="plugged", tool="pid")).get("isError")
            listed = json.loads((await raw.tool("registry_list"))["content"][0]["text"])
            assert listed["groups"] == []  # the memberless group is left out, and nothing else breaks
            sources = (await raw.tool("registry_sources"))["structuredContent"]
            [problem] = sources["sources"][0]["problems"]
            assert "broken = hangar_plugin_demo:missing (package hangar-plugin-demo): cannot load" in problem
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].removeprefix(f"{site}{os.pathsep}")


async def test_labelled_containers_serving_http_become_remote_providers(tmp_path: Path, container_host: str) -> None:
    everything_command()
    engine = docker.DockerClient(base_url=container_host)
    port = free_port()
    served = engine.api.create_container(
        IMAGE,
        command=["/usr/bin/node", str(EVERYTHING_JS), "streamableHttp"],
        environment={"PORT": str(port)},
        labels={"mcp.hangar.enable": "true", "mcp.hangar.id": "web-everything", "mcp.hangar.port": str(port)},
        host_config=engine.api.create_host_config(binds=RUNTIME_VOLUMES, network_mode="host", read_only=True),
    )
    unlabelled_port = engine.api.create_container(
        IMAGE,
        command=["/usr/bin/sleep", "60"],
        labels={"mcp.hangar.enable": "true", "mcp.hangar.id": "half"},
        host_config=engine.api.create_host_config(binds=RUNTIME_VOLUMES, network_mode="none"),
    )
    config = write_config(
        tmp_path / "c.yaml",
        {},
        container={"host": container_host},
        discovery={"mode": "authoritative", "interval_s": 3600, "sources": [{"type": "docker"}]},
    )
    try:
        for container in (served, unlabelled_port):
            engine.api.start(container["Id"])
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server-everything did not listen in its container"
                await anyio.sleep(0.1)
        async with RawHangar.running(config) as raw:
            await raw.initialize()
            assert await providers_of(raw) == {"web-everything"}
            echo = await raw.tool(
                "registry_invoke", provider="web-everything", tool="echo", arguments={"message": "hi"}
            )
            assert echo["content"][0]["text"] == "Echo: hi", echo
            sources = (await raw.tool("registry_sources"))["structuredContent"]
            assert any("needs a label mcp.hangar.port" in p for p in sources["sources"][0]["problems"])

            engine.api.remove_container(served["Id"], force=True)
            outcome = (await raw.tool("registry_discover"))["structuredContent"]
            assert outcome["removed"] == ["web-everything"]
            assert await providers_of(raw) == set()
    finally:
        for container in (served, unlabelled_port):
            with contextlib.suppress(docker.errors.NotFound):
                engine.api.remove_container(container["Id"], force=True)
        engine.close()


def test_discovery_config_errors_name_the_source(tmp_path: Path) -> None:
    from mcp_hangar.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("discovery:\n  sources:\n    - {type: folders, path: x}\n    - {type: folder}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"{path}:3: key 'discovery.sources.0': 'type' must be one of: folder, docker, entrypoints, kubernetes",
        f"{path}:4: key 'discovery.sources.1.path': required key is missing",
    ]


async def test_kubernetes_pods_become_providers_and_replicas_a_group(tmp_path: Path) -> None:
    from tests.e2e.test_remote import everything_http
    from tests.fake_kube import fake_cluster, pod

    port = free_port()
    notes = {"mcp.hangar.io/enabled": "true", "mcp.hangar.io/port": str(port), "mcp.hangar.io/id": "search"}
    with fake_cluster() as (cluster, url):
        cluster.put(pod("tools", "search-7d9f-abc12", notes))
        cluster.put(pod("tools", "search-7d9f-def34", notes))
        cluster.put(pod("tools", "starting-1", notes, ready=False))  # not ready: not yet
        cluster.put(pod("tools", "lonely", {"mcp.hangar.io/enabled": "true"}))  # no port: a problem
        solo = {k: v for k, v in notes.items() if k != "mcp.hangar.io/id"}
        cluster.put(pod("tools", "solo", solo))  # no id: a provider named after the pod
        cluster.put(pod("elsewhere", "other", {**notes, "mcp.hangar.io/id": "other"}))  # namespace not watched
        config = write_config(
            tmp_path / "c.yaml",
            {},
            discovery={
                "mode": "authoritative",
                "interval_s": 3600,  # every change below arrives through the watch
                "sources": [
                    {
                        "type": "kubernetes",
                        "namespaces": ["tools"],
                        "label_selector": "app=mcp",
                        "kubeconfig": str(cluster.kubeconfig(tmp_path / "kube.json", url)),
                    }
                ],
            },
        )
        async with everything_http(port), RawHangar.running(config) as raw:
            await raw.initialize()
            assert await providers_of(raw) == {"search-abc12", "search-def34", "solo"}
            listed = json.loads((await raw.tool("registry_list"))["content"][0]["text"])
            assert [m["id"] for m in listed["groups"][0]["members"]] == ["search-abc12", "search-def34"]
            echo = await raw.tool("registry_invoke", provider="search", tool="echo", arguments={"message": "k8s"})
            assert echo["content"][0]["text"] == "Echo: k8s", echo
            sources = (await raw.tool("registry_sources"))["structuredContent"]
            assert sources["sources"][0]["problems"] == ["pod tools/lonely: needs the annotation mcp.hangar.io/port"]

            cluster.delete("tools", "search-7d9f-def34")  # a rolling update: one pod goes...
            await until(raw, {"search-abc12", "solo"})
            cluster.put(pod("tools", "search-7d9f-ghi56", notes))  # ...another comes
            await until(raw, {"search-abc12", "search-ghi56", "solo"})
            listed = json.loads((await raw.tool("registry_list"))["content"][0]["text"])
            assert [m["id"] for m in listed["groups"][0]["members"]] == ["search-abc12", "search-ghi56"]
            echo = await raw.tool("registry_invoke", provider="search", tool="echo", arguments={"message": "again"})
            assert echo["content"][0]["text"] == "Echo: again", echo
            echo = await raw.tool("registry_invoke", provider="solo", tool="echo", arguments={"message": "solo"})
            assert echo["content"][0]["text"] == "Echo: solo", echo
        assert cluster.refused == 0  # every request carried the kubeconfig's token
        assert any("watch=" in r for r in cluster.requests) and all("/namespaces/tools/" in r for r in cluster.requests)


async def test_a_watched_folder_that_disappears_does_not_take_hangar_down(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "d"
    folder.mkdir()
    put(folder / "x.yaml", {"first": faulty("first")})
    config = write_config(
        tmp_path / "c.yaml", {}, discovery={"mode": "authoritative", "sources": [{"type": "folder", "path": "d"}]}
    )
    async with RawHangar.running(config) as raw:
        await raw.initialize()
        assert await providers_of(raw) == {"first"}
        shutil.rmtree(folder)
        await anyio.sleep(1.0)
        sources = (await raw.tool("registry_sources"))["structuredContent"]  # still serving
        await raw.tool("registry_discover")
        sources = (await raw.tool("registry_sources"))["structuredContent"]
        assert sources["sources"][0]["problems"] == [f"{folder}: the folder does not exist"]
        folder.mkdir()
        put(folder / "y.yaml", {"second": faulty("second")})
        await until(raw, {"second"}, timeout=20)  # the watcher comes back by itself
