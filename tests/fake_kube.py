"""A stand-in for a Kubernetes API server (none can run here) that answers the real shapes of the
pod list and watch APIs, with bearer-token authentication, for the kubernetes discovery source.

    GET /api/v1/pods[?watch=true]                      every namespace
    GET /api/v1/namespaces/{ns}/pods[?watch=true]      one namespace
    labelSelector=k=v[,k=v]                            equality selectors

A watch first sends ADDED for every matching pod (as a real server does without a
resourceVersion), then each change as it happens, one JSON object per line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "fake-cluster-token"


def pod(
    namespace: str, name: str, annotations: dict[str, str], *, ready: bool = True, ip: str = "127.0.0.1"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations, "labels": {"app": "mcp"}},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class FakeCluster:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()
        self.requests: list[str] = []
        self.refused = 0
        self.closing = False

    def put(self, item: dict[str, Any]) -> None:
        key = (item["metadata"]["namespace"], item["metadata"]["name"])
        with self.changed:
            kind = "MODIFIED" if key in self.pods else "ADDED"
            self.pods[key] = item
            self.events.append((kind, item))
            self.changed.notify_all()

    def delete(self, namespace: str, name: str) -> None:
        with self.changed:
            item = self.pods.pop((namespace, name))
            self.events.append(("DELETED", item))
            self.changed.notify_all()

    def matching(self, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in selector.split(",")) if selector else {}
        return [
            p
            for (ns, _), p in sorted(self.pods.items())
            if (namespace is None or ns == namespace)
            and all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]

    def kubeconfig(self, path: Path, url: str) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": url}}],
                    "users": [{"name": "hangar", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "hangar"}}],
                    "current-context": "fake",
                }
            )
        )
        return path


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a watch's body ends when the connection does

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            cluster.requests.append(self.path)
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                cluster.refused += 1
                self._json(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401})
                return
            parts = url.path.strip("/").split("/")
            if parts == ["api", "v1", "pods"]:
                namespace = None
            elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                namespace = parts[3]
            else:
                self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
                return
            selector = query.get("labelSelector")
            if query.get("watch") in ("true", "True", "1"):
                self._watch(namespace, selector)
                return
            with cluster.changed:
                items = cluster.matching(namespace, selector)
            self._json(
                200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}
            )

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _watch(self, namespace: str | None, selector: str | None) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            with cluster.changed:
                seen = len(cluster.events)
                initial = cluster.matching(namespace, selector)
            try:
                for item in initial:
                    self._event("ADDED", item)
                while not cluster.closing:
                    with cluster.changed:
                        cluster.changed.wait_for(partial(_news, cluster, seen), timeout=1)
                        fresh, seen = cluster.events[seen:], len(cluster.events)
                    for kind, item in fresh:
                        if (namespace is None or item["metadata"]["namespace"] == namespace) and (
                            item in cluster.matching(item["metadata"]["namespace"], selector) or kind == "DELETED"
                        ):
                            self._event(kind, item)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _event(self, kind: str, item: dict[str, Any]) -> None:
            self.wfile.write(json.dumps({"type": kind, "object": item}).encode() + b"\n")
            self.wfile.flush()

    return Handler


def _news(cluster: FakeCluster, seen: int) -> bool:
    return len(cluster.events) > seen or cluster.closing


@contextmanager
def fake_cluster() -> Iterator[tuple[FakeCluster, str]]:
    cluster = FakeCluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        with cluster.changed:
            cluster.closing = True
            cluster.changed.notify_all()
        server.shutdown()
        server.server_close()
