"""The reconciler's rules, with sources that hold their offer in memory: precedence between sources,
the config file's priority, additive vs authoritative, the per-source limit, a failing source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_hangar.config import DiscoveryConfig, SubprocessProvider
from mcp_hangar.discovery.reconcile import Discovery
from mcp_hangar.discovery.sources import Found, Scan

pytestmark = pytest.mark.anyio


class Offer:
    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind, self.name, self.ids, self.fail = kind, f"{kind}:test", ids, False

    async def scan(self) -> Scan:
        if self.fail:
            raise ConnectionError("engine gone")
        spec = SubprocessProvider(mode="subprocess", command=[self.kind])
        return Scan(providers={i: Found(spec, Path("/"), f"{self.kind} offer") for i in self.ids})

    async def follow(self, changed: Any) -> None:
        await anyio.sleep_forever()

    async def close(self) -> None:
        pass


class App:
    """What the app does with a result: remember it; the config file holds `static`."""

    def __init__(self) -> None:
        self.applied: dict[str, Found] = {}

    def __call__(self, found: dict[str, Found], trigger: str, secrets: frozenset[str]) -> Any:
        shadowed = [pid for pid in found if pid == "static"]
        before = set(self.applied)
        self.applied = {pid: f for pid, f in found.items() if pid not in shadowed}
        after = set(self.applied)
        return {"added": sorted(after - before), "removed": sorted(before - after), "changed": []}, shadowed


async def test_precedence_config_file_first_then_docker_folder_entrypoints() -> None:
    app = App()
    sources = [Offer("entrypoints", ["x", "y", "static"]), Offer("folder", ["x", "z"]), Offer("docker", ["x"])]
    discovery = Discovery(DiscoveryConfig(), sources, app)  # type: ignore[arg-type]
    outcome = await discovery.cycle("test")
    assert outcome["added"] == ["x", "y", "z"]
    assert app.applied["x"].origin == "docker offer" and app.applied["z"].origin == "folder offer"
    assert sorted(discovery.conflicts) == sorted(
        [
            "provider 'x' from folder offer is ignored: docker offer offers it too and takes precedence",
            "provider 'x' from entrypoints offer is ignored: docker offer offers it too and takes precedence",
            "provider 'static' from entrypoints offer is ignored: the config file defines it",
        ]
    )


@pytest.mark.parametrize(("mode", "left"), [("additive", {"a", "b"}), ("authoritative", {"a"})])
async def test_modes(mode: str, left: set[str]) -> None:
    app, source = App(), Offer("folder", ["a", "b"])
    discovery = Discovery(DiscoveryConfig(mode=mode), [source], app)  # type: ignore[arg-type]
    await discovery.cycle("first")
    source.ids = ["a"]
    await discovery.cycle("second")
    assert set(app.applied) == left


async def test_a_source_over_its_limit_and_a_failing_source() -> None:
    app, many = App(), Offer("folder", [f"p{i}" for i in range(5)])
    discovery = Discovery(DiscoveryConfig(max_providers_per_source=3, mode="authoritative"), [many], app)  # type: ignore[arg-type]
    await discovery.cycle("first")
    assert set(app.applied) == {"p0", "p1", "p2"}
    assert "offers more than 3 providers" in discovery.sources[0].problems[0]
    many.fail = True
    await discovery.cycle("engine down")  # what it had stays: an outage is not a removal
    assert set(app.applied) == {"p0", "p1", "p2"}
    assert discovery.sources[0].problems == ["folder:test: scan failed: engine gone"]
    assert discovery.sources[0].snapshot()["status"] == "problems"
