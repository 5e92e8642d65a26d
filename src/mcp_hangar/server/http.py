"""MCP over HTTP for many clients: streamable HTTP at /mcp, legacy SSE at /sse + /messages/,
health endpoints for orchestrators, and Prometheus metrics.

The MCP transports are the official SDK's; this module only assembles them in one Starlette app
served by uvicorn inside hangar's own task group (so shutdown stays structured: hangar, not
uvicorn, owns the signals).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_hangar.config import LOOPBACK
from mcp_hangar.observability import tracing
from mcp_hangar.observability.metrics import Metrics
from mcp_hangar.runtime.registry import Registry
from mcp_hangar.security.auth import Authenticator
from mcp_hangar.security.policy import Denied, Guard, Principal
from mcp_hangar.server import aggregate, tools
from mcp_hangar.server.fastpath import modern_version, shape_result
from mcp_hangar.store.writer import EventWriter

GUARDED_METHODS = ("tools/call", "prompts/get", "resources/read")  # decided before the SDK sees them
KNOWN_ROUTES = ("/mcp", "/sse", "/messages/", "/health/live", "/health/ready", "/health/startup", "/metrics")


@dataclass
class Readiness:
    """What /health/startup and /health/ready report. Cold providers never make hangar unready:
    they start on demand."""

    started: bool = False
    stopping: bool = False
    store_ok: Callable[[], bool] = lambda: True


def security_for(host: str) -> TransportSecuritySettings | None:
    """DNS-rebinding protection when bound to loopback, as the SDK does by default."""
    if host in LOOPBACK:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return None


def build_app(
    server: Server[Any],
    *,
    host: str,
    stateless: bool,
    metrics: Metrics,
    readiness: Readiness,
    guard: Guard,
    authenticator: Authenticator | None,
    registry: Registry | None = None,
    events: EventWriter | None = None,
) -> Starlette:
    security = security_for(host)
    sessions = StreamableHTTPSessionManager(app=server, stateless=stateless, security_settings=security)
    sse = SseServerTransport("/messages/", security_settings=security)

    async def sse_endpoint(request: Request) -> Response:
        async with sse.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def startup(request: Request) -> Response:
        return JSONResponse(
            {"status": "started" if readiness.started else "starting"}, 200 if readiness.started else 503
        )

    async def ready(request: Request) -> Response:
        checks = {
            "started": readiness.started,
            "accepting": not readiness.stopping,
            "event_store": readiness.store_ok(),
        }
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sessions.run():
            yield

    app = Starlette(
        routes=[
            Route("/mcp", endpoint=StreamableHTTPASGIApp(sessions)),
            Route("/sse", endpoint=sse_endpoint, methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/health/startup", startup),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    fast = None
    if registry is not None:
        fast = HttpFastPath(registry, events, guard, server.server_info_stamp, stateless)
    app.add_middleware(Gate, authenticator=authenticator, guard=guard, metrics=metrics, fast=fast, registry=registry)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


MCP_PATHS = ("/mcp", "/sse", "/messages/")
MAX_TRACKED_SESSIONS = 100_000
MAX_BODY_BYTES = 16 * 1024 * 1024


class Gate:
    """In front of the MCP routes: authenticate every request, then decide each ``tools/call`` in
    the body (role, provider allowlist, rate limits) before the SDK sees it, so a refusal is a
    real HTTP status (401, 403, 429 with Retry-After) and not a result buried in a stream."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator | None,
        guard: Guard,
        metrics: Metrics,
        fast: HttpFastPath | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.app = app
        self.auth = authenticator
        self.guard = guard
        self.metrics = metrics
        self.fast = fast
        self.registry = registry  # to see an aggregated tool name as the provider call it is

    def _owner(self, method: str, params: dict[str, Any]) -> str | None:
        if self.registry is None:
            return None
        if method == "prompts/get":
            found = aggregate.route(self.registry, str(params.get("name")))
        else:
            found = aggregate.resource_target(self.registry, str(params.get("uri")))
        return found[0] if found else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not any(path == p or path.startswith(p) for p in MCP_PATHS):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        principal: Principal | None = None
        if self.auth is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                principal = await self.auth.authenticate(headers, client)
            except Denied as exc:
                reason = {401: "invalid_credentials", 403: "no_role", 429: "locked_out"}.get(exc.status, "other")
                self.metrics.auth_failures.labels(reason).inc()
                await _refuse(send, exc)
                return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if scope["method"] == "POST":
            body = await _read_body(receive)
            if body is None:
                await _refuse(send, Denied(413, f"request body over {MAX_BODY_BYTES} bytes"))
                return
            messages, batch = _parse(body)
            for message in (m for m in messages if m.get("method") in GUARDED_METHODS):
                params = _mapping(message.get("params"))
                name, arguments = str(params.get("name")), _mapping(params.get("arguments"))
                if message["method"] != "tools/call":
                    # a provider's prompt or resource: the same rights as calling its tools
                    name, arguments = "registry_invoke", {"provider": self._owner(message["method"], params)}
                elif self.registry is not None:
                    name, arguments = tools.target(self.registry, name, arguments)
                provider = arguments.get("provider")
                try:
                    self.guard.check_call(principal, name, provider if isinstance(provider, str) else None, client)
                except Denied as exc:
                    if exc.status == 429:
                        self.metrics.rate_limited.labels("provider" if "provider" in str(exc) else "principal").inc()
                    await _refuse(send, exc, message.get("id"))
                    return
            state["decided"] = True
            receive = _replay(body, receive)
            if self.fast is not None and path == "/mcp":
                self.fast.cancel_requested(scope, messages)
                send = self.fast.watch_sessions(messages, send)
                if (
                    not batch
                    and len(messages) == 1
                    and await self.fast.serve(scope, messages[0], receive, send, principal)
                ):
                    return
        elif self.fast is not None and scope["method"] == "DELETE":
            self.fast.forget(scope)
        await self.app(scope, receive, send)


class HttpFastPath:
    """Tool calls on an established streamable HTTP session, answered with one JSON response
    straight from the parsed request (the counterpart of the stdio fast path; see fastpath.py).

    Taken only when it is unambiguous: a single ``tools/call`` in the body, a client that accepts
    JSON, no progress requested, and a session we saw initialized (or stateless mode, or a complete
    2026-07-28 envelope). Everything else goes to the SDK's transport.
    """

    def __init__(
        self,
        registry: Registry,
        events: EventWriter | None,
        guard: Guard,
        server_info: dict[str, Any],
        stateless: bool,
    ) -> None:
        self.registry = registry
        self.events = events
        self.guard = guard
        self.server_info = server_info
        self.stateless = stateless
        # Sessions seen initialized, oldest first; bounded, since clients often never say goodbye
        # (the SDK expires idle ones on its side; a forgotten id just falls back to the SDK path).
        self.sessions: dict[str, None] = {}
        self._in_flight: dict[tuple[str | None, Any], anyio.CancelScope] = {}

    def cancel_requested(self, scope: Scope, messages: list[dict[str, Any]]) -> None:
        """A ``notifications/cancelled`` for a call this fast path serves cancels it (and so the
        provider's request); the SDK, which never saw the call, would ignore it."""
        session = _header(scope, b"mcp-session-id")
        for message in messages:
            if message.get("method") == "notifications/cancelled":
                scope_ = self._in_flight.get((session, _mapping(message.get("params")).get("requestId")))
                if scope_ is not None:
                    scope_.cancel()

    def watch_sessions(self, messages: list[dict[str, Any]], send: Send) -> Send:
        """Learn the session id the SDK hands out in answer to an initialize. A client that can
        answer providers' requests (sampling, elicitation, roots) stays on the SDK's path: a call
        answered as one plain JSON response could not carry those requests to it."""
        initialize = next((m for m in messages if m.get("method") == "initialize"), None)
        if initialize is None:
            return send
        capabilities = _mapping(_mapping(initialize.get("params")).get("capabilities"))
        if any(capabilities.get(name) is not None for name in ("sampling", "elicitation", "roots")):
            return send

        async def watching(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        self.sessions[value.decode("latin-1")] = None
                        if len(self.sessions) > MAX_TRACKED_SESSIONS:
                            del self.sessions[next(iter(self.sessions))]
            await send(message)

        return watching

    def forget(self, scope: Scope) -> None:
        session = _header(scope, b"mcp-session-id")
        if session is not None:
            self.sessions.pop(session, None)

    def _version(self, scope: Scope, params: dict[str, Any]) -> str | None:
        requested = _header(scope, b"mcp-protocol-version")
        if requested in MODERN_PROTOCOL_VERSIONS:
            return modern_version(params)
        if requested not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
        if self.stateless or _header(scope, b"mcp-session-id") in self.sessions:
            return requested
        return None

    async def serve(
        self, scope: Scope, message: dict[str, Any], receive: Receive, send: Send, principal: Principal | None
    ) -> bool:
        if "application/json" not in (_header(scope, b"accept") or ""):
            return False
        if message.get("method") != "tools/call" or "id" not in message:
            return False
        params = _mapping(message.get("params"))
        name, arguments = params.get("name"), params.get("arguments")
        meta = _mapping(params.get("_meta"))
        version = self._version(scope, params)
        if (
            version is None
            or not isinstance(name, str)
            or not isinstance(arguments, dict | None)
            or "progressToken" in meta
        ):
            return False
        context = tools.ToolContext(
            self.registry, self.events, version, principal=principal, validator=self.guard.validator
        )
        outcome: dict[str, Any] = {}
        key = (_header(scope, b"mcp-session-id"), message["id"])
        async with anyio.create_task_group() as tg:
            self._in_flight[key] = tg.cancel_scope

            async def hang_up_cancels() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()  # the client is gone: cancel the call upstream too

            tg.start_soon(hang_up_cancels)
            try:
                with tracing.server_span(self.registry.tracer, name, meta, version, message["id"]) as span:
                    result = await tools.call(context, name, arguments or {})
                    tracing.mark_result(span, result)
                outcome["result"] = shape_result(result, version, self.server_info)
            except Exception as exc:
                outcome["error"] = {"code": -32603, "message": f"mcp-hangar internal error in {name}: {exc}"}
            finally:
                self._in_flight.pop(key, None)
            tg.cancel_scope.cancel()
        if not outcome:
            return True  # hung up: nothing to answer
        payload = json.dumps({"jsonrpc": "2.0", "id": message["id"], **outcome}, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse(body: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The messages of a POST body, parsed once for every check here, and whether it was a batch;
    anything unparsable is left for the SDK to answer."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return [], False
    items = parsed if isinstance(parsed, list) else [parsed]
    return [m for m in items if isinstance(m, dict)], isinstance(parsed, list)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body we already read, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, denied: Denied, request_id: Any = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if denied.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="mcp-hangar"'))
    if denied.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(denied.retry_after))).encode()))
    code = {401: -32001, 403: -32003, 413: -32600, 429: -32029}.get(denied.status, -32000)
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": str(denied)}}).encode()
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts HTTP requests by route and status; unknown paths are one label, ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = next((r for r in KNOWN_ROUTES if path == r or (r.endswith("/") and path.startswith(r))), "other")
        status = {"code": 500}

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http_requests.labels(route, str(status["code"])).inc()


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        # hangar handles SIGTERM/SIGINT itself and then asks uvicorn to exit
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a taken port is a clear error (and port 0 works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it small responses wait on delayed ACKs (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve until cancelled; then stop accepting and let open requests finish (up to 10 s)."""
    server = _Uvicorn(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    )
    done = anyio.Event()

    async def run() -> None:
        try:
            with anyio.CancelScope(shield=True):  # uvicorn stops when told to, not mid-request
                await server.serve(sockets=[sock])
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await done.wait()
