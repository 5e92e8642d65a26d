"""A lean MCP client session over a launcher's channel: the hot path of every relayed call.

Why not the SDK's ``ClientSession``: it validates every message into models and back, which costs
more CPU per call than the provider itself (see DESIGN.md, "Where the time goes"). Here a message
is parsed once with ``json.loads`` and results are handed on as the provider wrote them. Many
requests share one session; JSON-RPC ids multiplex them and no lock is held across a call.

Both protocol eras are spoken: a ``server/discover`` probe selects the stateless 2026-07-28
protocol (every request then carries the ``_meta`` envelope); anything else falls back to the
classic ``initialize`` handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from mcp_hangar import __version__
from mcp_hangar.domain.errors import ConnectionLost, ProviderError, RemoteError
from mcp_hangar.launchers.channel import Channel

log = structlog.get_logger("mcp_hangar.session")

ProgressFn = Callable[[float, float | None, str | None], Coroutine[Any, Any, None]]
NotificationFn = Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]
RequestFn = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]  # raises RemoteError
# What hangar tells providers it can do as a client: it relays these to the caller's client.
CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": False}}

CLIENT_INFO = {"name": "mcp-hangar", "version": __version__}
CANCEL_NOTIFY_TIMEOUT_S = 1.0
EXIT_GRACE_S = 1.0
METHOD_NOT_FOUND = -32601


@dataclass(slots=True)
class Handshake:
    protocol_version: str
    server_info: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None

    @property
    def modern(self) -> bool:
        return self.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS


class RpcSession:
    def __init__(
        self,
        channel: Channel,
        provider_id: str,
        on_notification: NotificationFn | None = None,
        on_request: RequestFn | None = None,
    ) -> None:
        self._channel = channel
        self._provider_id = provider_id
        self._on_notification = on_notification
        self._on_request = on_request
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._progress: dict[Any, ProgressFn] = {}
        # Progress deliveries still running per request: its result waits for them, so a caller
        # sees every progress notification before the answer (a closing stream would drop them).
        self._relaying: dict[Any, int] = {}
        self._relayed = anyio.Event()
        self._envelope: dict[str, Any] | None = None  # the 2026-07-28 per-request _meta
        self._closed: ConnectionLost | None = None
        self._closing_reason: str | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.garbage_lines = 0
        self.last_garbage: str | None = None
        self.handshake: Handshake | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # --- reading --------------------------------------------------------------------------

    async def serve(self) -> None:
        """Read messages until the provider goes away, then fail whatever is still pending."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    while (line := await self._channel.receive()) is not None:
                        self._dispatch(line)
                except ProviderError as exc:
                    self._fail_all(ConnectionLost(f"provider {self._provider_id!r}: {exc}"))
                tg.cancel_scope.cancel()
        finally:
            # stdout closing usually means the process is exiting; its exit status and last
            # stderr lines make the error a caller sees actionable, so give them a moment.
            with anyio.CancelScope(shield=True):
                await self._channel.wait_exited(EXIT_GRACE_S)
            self._fail_all(self._lost())

    def closing_because(self, reason: str) -> None:
        """We are about to close the provider on purpose: say so to calls still in flight."""
        self._closing_reason = reason

    def _lost(self) -> ConnectionLost:
        if self._closing_reason is not None:
            return ConnectionLost(self._closing_reason)
        status = self._channel.exit_status()
        what = f"exited with code {status}" if status is not None else "closed its connection"
        parts = [f"provider {self._provider_id!r} {what}"]
        if self.last_garbage is not None:
            parts.append(f"it wrote non-JSON to stdout, e.g. {self.last_garbage!r}")
        tail = self._channel.stderr_tail()
        if tail:
            parts.append(f"last stderr lines:\n{tail}")
        return ConnectionLost("; ".join(parts))

    def _fail_all(self, error: ConnectionLost) -> None:
        if self._closed is None:
            self._closed = error
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._closed)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self._garbage(line)
            return
        if isinstance(message, list):
            for item in message:
                self._dispatch_one(item)
        else:
            self._dispatch_one(message)

    def _dispatch_one(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._garbage(repr(message).encode())
            return
        method = message.get("method")
        if method is None:
            fut = self._pending.get(message.get("id"))  # type: ignore[arg-type]  # any id; misses are fine
            if fut is None or fut.done():
                return  # a late answer to a request we gave up on
            if "error" in message:
                err = message["error"] if isinstance(message["error"], dict) else {}
                fut.set_exception(RemoteError(err.get("code", 0), str(err.get("message", "")), err.get("data")))
            else:
                result = message.get("result")
                fut.set_result(result if isinstance(result, dict) else {})
            return
        params = message.get("params") or {}
        if "id" in message:
            assert self._tg is not None
            self._tg.start_soon(self._answer, message["id"], method, params)
        elif method == "notifications/progress":
            token = params.get("progressToken")
            callback = self._progress.get(token)
            if callback is not None and self._tg is not None:
                self._relaying[token] = self._relaying.get(token, 0) + 1
                self._tg.start_soon(self._relay, token, callback, params)
        elif self._on_notification is not None and self._tg is not None:
            self._tg.start_soon(self._on_notification, method, params)

    async def _relay(self, token: Any, callback: ProgressFn, params: dict[str, Any]) -> None:
        try:
            await callback(params.get("progress", 0), params.get("total"), params.get("message"))
        finally:
            left = self._relaying[token] = self._relaying[token] - 1
            if left == 0:
                del self._relaying[token]
                self._relayed.set()
                self._relayed = anyio.Event()

    async def _progress_done(self, token: Any) -> None:
        while token in self._relaying:
            await self._relayed.wait()

    def _garbage(self, line: bytes) -> None:
        self.garbage_lines += 1
        self.last_garbage = line[:200].decode("utf-8", "replace").strip()
        if self.garbage_lines <= 5:
            log.warning("provider.stdout_garbage", provider=self._provider_id, line=self.last_garbage)

    async def _answer(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        """A request from the provider to us: ping is ours to answer; sampling, elicitation and
        roots go to the client whose call the provider is serving (``on_request``)."""
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if method == "ping":
            reply["result"] = {}
        elif self._on_request is None:
            reply["error"] = {"code": METHOD_NOT_FOUND, "message": f"mcp-hangar does not relay {method!r}"}
        else:
            try:
                reply["result"] = await self._on_request(method, params)
            except RemoteError as exc:
                reply["error"] = {"code": exc.code, "message": exc.remote_message}
                if exc.data is not None:
                    reply["error"]["data"] = exc.data
            except Exception as exc:  # whatever the client answered, the provider gets an answer
                log.warning("provider.request_relay_failed", provider=self._provider_id, method=method, error=str(exc))
                reply["error"] = {"code": -32603, "message": f"mcp-hangar could not relay {method}: {exc}"}
        with contextlib.suppress(OSError):
            await self._channel.send(json.dumps(reply).encode() + b"\n")

    # --- writing --------------------------------------------------------------------------

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._channel.send(json.dumps(message).encode() + b"\n")

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, on_progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its result.

        Cancelling the caller (a timeout, a client's cancellation) sends ``notifications/cancelled``
        so the provider can stop working on it.
        """
        if self._closed is not None:
            raise ConnectionLost(str(self._closed), sent=False)
        rid = next(self._ids)
        if self._envelope is not None or on_progress is not None:
            params = dict(params or {})
            meta = dict(params.get("_meta") or {})
            if self._envelope is not None:
                meta.update(self._envelope)
            if on_progress is not None:
                meta["progressToken"] = rid
                self._progress[rid] = on_progress
            params["_meta"] = meta
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                await self._channel.send(json.dumps(message).encode() + b"\n")
            except (OSError, RuntimeError) as exc:
                raise ConnectionLost(f"provider {self._provider_id!r}: cannot write: {exc}", sent=False) from None
            try:
                result = await fut
                if on_progress is not None:
                    await self._progress_done(rid)
                return result
            except BaseException:
                # Awaiting a future cancels it along with us, so "cancelled" means "never answered".
                if (fut.cancelled() or not fut.done()) and self._closed is None:
                    await self._send_cancel(rid)
                raise
        finally:
            self._pending.pop(rid, None)
            if on_progress is not None:
                self._progress.pop(rid, None)

    async def _send_cancel(self, rid: int) -> None:
        shielded = anyio.CancelScope(shield=True)
        with shielded, anyio.move_on_after(CANCEL_NOTIFY_TIMEOUT_S), contextlib.suppress(OSError):
            await self.notify("notifications/cancelled", {"requestId": rid, "reason": "cancelled by caller"})

    # --- protocol -------------------------------------------------------------------------

    async def open(self) -> Handshake:
        """Negotiate the protocol era, as the SDK's own ``auto`` mode does."""
        envelope = {
            PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
            CLIENT_INFO_META_KEY: CLIENT_INFO,
            CLIENT_CAPABILITIES_META_KEY: {},  # the stateless era asks for input differently: not relayed
        }
        try:
            found = await self.request("server/discover", {"_meta": envelope})
        except RemoteError:
            found = None
        if found is not None and LATEST_MODERN_VERSION in (found.get("supportedVersions") or ()):
            self._envelope = envelope
            meta = found.get("_meta") or {}
            self.handshake = Handshake(
                protocol_version=LATEST_MODERN_VERSION,
                server_info=meta.get("io.modelcontextprotocol/serverInfo") or {},
                capabilities=found.get("capabilities") or {},
                instructions=found.get("instructions"),
            )
            return self.handshake
        result = await self.request(
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": CLIENT_CAPABILITIES,
                "clientInfo": CLIENT_INFO,
            },
        )
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise ProviderError(
                f"provider {self._provider_id!r} answered initialize with protocol version {version!r}, "
                f"which mcp-hangar does not speak (supported: {', '.join(HANDSHAKE_PROTOCOL_VERSIONS)})"
            )
        await self.notify("notifications/initialized")
        self.handshake = Handshake(
            protocol_version=version,
            server_info=result.get("serverInfo") or {},
            capabilities=result.get("capabilities") or {},
            instructions=result.get("instructions"),
        )
        return self.handshake

    async def ping(self) -> None:
        """A liveness probe: ``ping`` in the classic era, ``server/discover`` in the modern one."""
        if self._envelope is not None:
            await self.request("server/discover")
        else:
            await self.request("ping")

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self.list_all("tools/list", "tools")

    async def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        """Every page of a ``*/list`` method's items (each a dict with a name or uri)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100):  # a provider that pages forever must not hang us
            result = await self.request(method, {"cursor": cursor} if cursor else None)
            items.extend(i for i in result.get(key) or () if isinstance(i, dict) and (i.get("name") or i.get("uri")))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items
