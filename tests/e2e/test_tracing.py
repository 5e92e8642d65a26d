"""Tracing end to end: spans exported over OTLP/HTTP to a local receiver, one trace across two
hangars (the second is the first's remote provider) and the caller's own trace context."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import everything_command, write_config
from tests.e2e.test_http import http_hangar

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A minimal OTLP/HTTP traces endpoint: decodes each export into plain span dicts."""
    spans: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "status": span.status.code,
                                "attributes": {a.key: a.value.string_value for a in span.attributes},
                                "instance": resource.get("service.instance.id"),
                                "service": resource.get("service.name"),
                            }
                        )
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", spans
    finally:
        server.shutdown()
        server.server_close()


SERVER, CLIENT = 2, 3  # OTLP span kinds


async def test_one_trace_from_the_caller_through_two_hangars(tmp_path: Path) -> None:
    with otlp_receiver() as (endpoint, spans):
        tracing = {"enabled": True, "endpoint": endpoint}
        inner = write_config(
            tmp_path / "inner.yaml",
            {"everything": {"mode": "subprocess", "command": everything_command()}},
            tracing=tracing,
            replica_id="inner",
            aggregate={"enabled": True},  # the outer hangar calls everything__echo on it
        )
        async with http_hangar(inner) as (inner_base, inner_process):
            async with Client(f"{inner_base}/mcp", mode="legacy") as warm:  # its tools known, so listed
                await warm.call_tool("registry_start", {"provider": "everything"})
            outer = write_config(
                tmp_path / "outer.yaml",
                {"far": {"mode": "remote", "endpoint": f"{inner_base}/mcp"}},
                tracing=tracing,
                replica_id="outer",
            )
            async with http_hangar(outer) as (outer_base, outer_process):
                async with Client(f"{outer_base}/mcp", mode="legacy") as client:
                    meta = {"traceparent": f"00-{TRACE_ID}-{PARENT}-01"}
                    result = await client.call_tool(
                        "registry_invoke",
                        {"provider": "far", "tool": "everything__echo", "arguments": {"message": "traced"}},
                        meta=meta,  # type: ignore[arg-type]
                    )
                    assert result.content[0].text == "Echo: traced", result.content[0].text  # type: ignore[union-attr]
                    failed = await client.call_tool(
                        "registry_invoke",
                        {"provider": "far", "tool": "no-such-tool"},
                        meta=meta,  # type: ignore[arg-type]
                    )
                    assert failed.is_error
                outer_process.terminate()  # a graceful stop exports what is left
                await outer_process.wait()
            inner_process.terminate()
            await inner_process.wait()

    ours = [s for s in spans if s["trace_id"] == TRACE_ID]
    by_id = {s["span_id"]: s for s in ours}
    [outer_server] = [
        s
        for s in ours
        if s["instance"] == "outer"
        and s["kind"] == SERVER
        and s["name"] == "tools/call registry_invoke"
        and s["status"] == 0
    ]
    assert outer_server["parent"] == PARENT  # the caller's span is the parent
    assert outer_server["attributes"]["mcp.method.name"] == "tools/call"
    [relay] = [
        s for s in ours if s["instance"] == "outer" and s["kind"] == CLIENT and s["parent"] == outer_server["span_id"]
    ]
    assert relay["name"] == "tools/call everything__echo" and relay["attributes"]["mcp_hangar.provider"] == "far"
    # the inner hangar continued the same trace under the outer one's relay span
    inner_server = [
        s
        for s in ours
        if s["instance"] == "inner" and s["kind"] == SERVER and s["name"] == "tools/call everything__echo"
    ]
    assert [s["parent"] for s in inner_server][:1] == [relay["span_id"]]
    inner_relay = [
        s
        for s in ours
        if s["instance"] == "inner" and s["kind"] == CLIENT and s["parent"] == inner_server[0]["span_id"]
    ]
    assert inner_relay and inner_relay[0]["attributes"]["mcp_hangar.provider"] == "everything"
    assert inner_relay[0]["name"] == "tools/call echo"
    assert all(by_id.get(s["parent"]) or s["parent"] == PARENT for s in ours)  # one connected trace
    # a failed call is an error span
    assert any(s["instance"] == "outer" and s["kind"] == SERVER and s["status"] == 2 for s in ours)
