"""deploy/kubernetes: no cluster runs here, so the manifests are checked against the Kubernetes API's
own models (kubernetes_asyncio: every field must be one the API knows, with the right type), and
the configuration inside them against hangar's own loader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_hangar.config import parse_config

MANIFESTS = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "hangar.yaml"


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def _lost(original: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of the manifest that did not survive a round trip through the API models: unknown ones."""
    if isinstance(original, dict):
        if not isinstance(kept, dict):
            return [path or "/"]
        return [p for k, v in original.items() for p in _lost(v, kept.get(k), f"{path}.{k}")] + [
            f"{path}.{k}" for k in original if k not in kept
        ]
    if isinstance(original, list):
        if not isinstance(kept, list) or len(kept) != len(original):
            return [path]
        return [p for i, (a, b) in enumerate(zip(original, kept, strict=True)) for p in _lost(a, b, f"{path}[{i}]")]
    return [] if original == kept or str(original) == str(kept) else [f"{path} ({original!r} became {kept!r})"]


@pytest.mark.anyio
@pytest.mark.parametrize("doc", docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
async def test_every_field_is_one_the_api_knows(doc: dict[str, Any]) -> None:
    from kubernetes_asyncio.client import ApiClient

    version = doc["apiVersion"].split("/")[-1].capitalize()
    async with ApiClient() as api:
        model = api._ApiClient__deserialize(doc, f"{version}{doc['kind']}")  # type: ignore[attr-defined]
        kept = api.sanitize_for_serialization(model)
    assert _lost(doc, kept) == []


def test_the_configuration_inside_loads_and_fits_the_deployment() -> None:
    by_kind = {d["kind"]: d for d in docs()}
    text = by_kind["ConfigMap"]["data"]["config.yaml"]
    config = parse_config(text, "ConfigMap mcp-hangar", environ={"POD_NAME": "mcp-hangar-0", "PGPASSWORD": "pw"})
    assert config.event_store.driver == "postgres" and config.server.stateless and config.auth.enabled
    assert config.replica_id == "mcp-hangar-0"  # each replica writes under its own name

    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= env  # every ${VAR} is given
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][:2] == ["--config", f"{mount}/config.yaml"] and "--http" in container["args"]
    assert container["ports"][0]["containerPort"] == config.server.port
    from mcp_hangar.server.http import KNOWN_ROUTES

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in KNOWN_ROUTES
    discovery = [s for s in config.discovery.sources if s.type == "kubernetes"]
    role = by_kind["Role"]
    assert [role["metadata"]["namespace"]] == discovery[0].namespaces  # type: ignore[union-attr]
    assert set(role["rules"][0]["verbs"]) == {"get", "list", "watch"}
