"""OpenTelemetry tracing: spans for the calls hangar serves and relays, exported over OTLP/HTTP.

Off unless ``tracing.enabled``. Names and attributes follow what the MCP SDK's own middleware
emits (``tools/call <tool>``, ``mcp.method.name``, ``gen_ai.tool.name``...), so a trace reads the
same whichever path served a call. The W3C trace context travels in ``params._meta``, the MCP
convention: a client's ``traceparent`` becomes the parent of hangar's server span, and hangar puts
its own client span's context into the request it relays, so a provider that traces (another
hangar, an SDK server) joins the same trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from mcp_hangar import __version__
from mcp_hangar.config import TracingConfig


class Tracing:
    """The tracer provider and its exporter; owned by the app, flushed when it stops."""

    def __init__(self, spec: TracingConfig, instance: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create(
            {"service.name": spec.service_name, "service.version": __version__, "service.instance.id": instance}
        )
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(spec.sample_ratio)))
        exporter = OTLPSpanExporter(endpoint=spec.endpoint, headers=dict(spec.headers) or None)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        # The SDK's own spans (its server middleware, its clients) use the global provider.
        trace.set_tracer_provider(self.provider)
        self.tracer: Tracer = self.provider.get_tracer("mcp-hangar", __version__)

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what is left


def _attributes(method: str, tool: str, request_id: Any = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"mcp.method.name": method, "gen_ai.operation.name": "execute_tool"}
    attributes["gen_ai.tool.name"] = tool
    if request_id is not None:
        attributes["jsonrpc.request.id"] = str(request_id)
    return attributes


def server_span(
    tracer: Tracer | None, tool: str, meta: Mapping[str, Any] | None, version: str, request_id: Any
) -> AbstractContextManager[trace.Span | None]:
    """The span of a ``tools/call`` hangar serves itself (its fast paths; the SDK's middleware
    makes the same span for requests the SDK serves). With tracing off, a context that does nothing."""
    if tracer is None:
        return nullcontext()
    return _server_span(tracer, tool, meta, version, request_id)


@contextmanager
def _server_span(
    tracer: Tracer, tool: str, meta: Mapping[str, Any] | None, version: str, request_id: Any
) -> Iterator[trace.Span]:
    parent = extract(dict(meta)) if meta and "traceparent" in meta else None
    attributes = {**_attributes("tools/call", tool, request_id), "mcp.protocol.version": version}
    with tracer.start_as_current_span(
        f"tools/call {tool}", kind=SpanKind.SERVER, context=parent, attributes=attributes
    ) as span:
        yield span


def client_span(tracer: Tracer | None, provider: str, tool: str) -> AbstractContextManager[dict[str, Any] | None]:
    """The span of a call hangar relays to a provider; gives the ``_meta`` to send with it (None,
    and nothing done, with tracing off)."""
    if tracer is None:
        return nullcontext()
    return _client_span(tracer, provider, tool)


@contextmanager
def _client_span(tracer: Tracer, provider: str, tool: str) -> Iterator[dict[str, Any]]:
    attributes = {**_attributes("tools/call", tool), "mcp_hangar.provider": provider}
    with tracer.start_as_current_span(f"tools/call {tool}", kind=SpanKind.CLIENT, attributes=attributes):
        carrier: dict[str, Any] = {}
        inject(carrier)
        yield carrier


def mark_result(span: trace.Span | None, result: Any) -> None:
    """A tool's error result is an error of the span too (the call itself succeeded)."""
    if span is None:
        return
    is_error = result.get("isError") if isinstance(result, dict) else getattr(result, "is_error", False)
    if is_error:
        span.set_attribute("error.type", "tool_error")
        span.set_status(StatusCode.ERROR)
