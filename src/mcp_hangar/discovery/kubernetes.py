"""Kubernetes discovery: running, ready pods annotated for hangar become remote providers.

Annotations (on the pod, usually set in a Deployment's pod template):

    mcp.hangar.io/enabled: "true"
    mcp.hangar.io/port: "8080"          # required
    mcp.hangar.io/path: /mcp            # default /mcp
    mcp.hangar.io/id: search            # optional, see below
    mcp.hangar.io/transport: sse        # default streamable_http

A pod without an id is a provider named after the pod. Pods with an id (the replicas of one
Deployment) make a group of that id, one member per pod (``<id>-<pod name suffix>``), balanced
round robin, however many pods there are: a rolling update adds and drains members like a config
reload, and callers keep using the one id. The pod list is read with the real list API and followed with its watch API,
so a pod that starts or goes away takes effect at once; the periodic rescan catches anything a
dropped watch missed. Credentials: a kubeconfig file if given, else the pod's service account
(in-cluster), else ``~/.kube/config``. The client is ``kubernetes_asyncio`` (extra ``kubernetes``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import structlog

from mcp_hangar.config import KubernetesSource
from mcp_hangar.discovery.sources import Changed, Found, Scan, validated

log = structlog.get_logger("mcp_hangar.discovery")

PREFIX = "mcp.hangar.io/"
WATCH_RETRY_S = 2.0


class KubernetesPods:
    kind = "kubernetes"

    def __init__(self, spec: KubernetesSource, base_dir: Path) -> None:
        self._spec = spec
        self._base_dir = base_dir
        self._kubeconfig = str((base_dir / spec.kubeconfig).expanduser()) if spec.kubeconfig else None
        self._api: Any = None
        self.name = f"kubernetes:{','.join(spec.namespaces) or 'all namespaces'}"

    async def _core(self) -> Any:
        if self._api is None:
            try:
                from kubernetes_asyncio import client, config
            except ImportError:
                raise RuntimeError(
                    "the kubernetes source needs kubernetes_asyncio: pip install 'mcp-hangar[kubernetes]'"
                ) from None
            settings = client.Configuration()
            if self._kubeconfig is not None:
                await config.load_kube_config(config_file=self._kubeconfig, client_configuration=settings)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=settings)  # type: ignore[no-untyped-call]
            else:
                await config.load_kube_config(client_configuration=settings)
            self._api = client.CoreV1Api(client.ApiClient(settings))
        return self._api

    async def _list(self, api: Any) -> list[Any]:
        selector = {"label_selector": self._spec.label_selector} if self._spec.label_selector else {}
        if not self._spec.namespaces:
            return list((await api.list_pod_for_all_namespaces(**selector)).items)
        pods: list[Any] = []
        for namespace in self._spec.namespaces:
            pods += (await api.list_namespaced_pod(namespace, **selector)).items
        return pods

    async def scan(self) -> Scan:
        scan = Scan()
        by_id: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for pod in await self._list(await self._core()):
            notes = pod.metadata.annotations or {}
            if notes.get(PREFIX + "enabled") != "true" or not _serving(pod):
                continue
            where = f"pod {pod.metadata.namespace}/{pod.metadata.name}"
            port = notes.get(PREFIX + "port")
            if port is None:
                scan.problems.append(f"{where}: needs the annotation {PREFIX}port")
                continue
            definition: dict[str, Any] = {
                "mode": "remote",
                "endpoint": f"http://{_host(pod.status.pod_ip)}:{port}{notes.get(PREFIX + 'path', '/mcp')}",
            }
            if PREFIX + "transport" in notes:
                definition["transport"] = notes[PREFIX + "transport"]
            if PREFIX + "id" in notes:
                by_id.setdefault(notes[PREFIX + "id"], []).append((where, definition))
            else:
                self._add(scan, pod.metadata.name, where, definition)
        for pid, pods in sorted(by_id.items()):
            # One id is one service: pods of another namespace using it are not mixed in.
            home = sorted(pods)[0][0].split()[1].split("/")[0]
            for where, _ in sorted(pods):
                if where.split()[1].split("/")[0] != home:
                    scan.problems.append(f"{where}: id {pid!r} is used in namespace {home!r} already; ignored")
            members = []
            for where, definition in sorted(p for p in pods if p[0].split()[1].split("/")[0] == home):
                member = f"{pid}-{where.rsplit('-', 1)[-1]}"[:64]
                if self._add(scan, member, where, definition):
                    members.append(member)
            if members:
                group = {"mode": "group", "strategy": "round_robin", "members": members}
                self._add(scan, pid, f"{len(members)} pods with id {pid!r}", group)
        return scan

    def _add(self, scan: Scan, pid: str, where: str, definition: dict[str, Any]) -> bool:
        spec = validated(definition, where, pid)
        if isinstance(spec, str):
            scan.problems.append(spec)
            return False
        if pid in scan.providers:
            scan.problems.append(f"{where}: provider id {pid!r} is taken by {scan.providers[pid].origin}")
            return False
        scan.providers[pid] = Found(spec, self._base_dir, where)
        return True

    async def close(self) -> None:
        if self._api is not None:
            await self._api.api_client.close()
            self._api = None

    async def follow(self, changed: Changed) -> None:
        """Every pod event from the watch API triggers a rescan; a watch the server ends (they
        time out) or that fails is opened again."""
        while True:
            try:
                api = await self._core()
                async with anyio.create_task_group() as tg:
                    if self._spec.namespaces:
                        for namespace in self._spec.namespaces:
                            tg.start_soon(self._watch, changed, api.list_namespaced_pod, namespace)
                    else:
                        tg.start_soon(self._watch, changed, api.list_pod_for_all_namespaces)
            except Exception as exc:
                log.info("discovery.kubernetes_watch_ended", source=self.name, reason=str(exc)[:200])
            await anyio.sleep(WATCH_RETRY_S)

    async def _watch(self, changed: Changed, func: Any, *args: Any) -> None:
        from kubernetes_asyncio import watch

        selector = {"label_selector": self._spec.label_selector} if self._spec.label_selector else {}
        async with watch.Watch() as w:
            async for _ in w.stream(func, *args, **selector):
                await changed()


def _serving(pod: Any) -> bool:
    status = pod.status
    if status is None or status.phase != "Running" or not status.pod_ip:
        return False
    ready = [c for c in status.conditions or () if c.type == "Ready"]
    return bool(ready) and ready[0].status == "True"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
