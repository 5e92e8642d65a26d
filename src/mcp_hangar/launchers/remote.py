"""Remote providers: an MCP server elsewhere, spoken to over streamable HTTP.

The channel turns the HTTP exchange into the same stream of JSON-RPC lines a subprocess gives,
so one session implementation serves both: each message we send is one POST; the answer (a JSON
body, or an SSE stream of messages) is queued as incoming lines. A refusal over HTTP becomes a
JSON-RPC error for the request that caused it, with the status named (401 means our credentials
were refused, not that the provider is broken). A connection that cannot be made ends the
channel, which the runtime treats like a provider that died: calls in flight fail at once and the
next call reconnects, with backoff.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcp_hangar.config import RemoteProvider
from mcp_hangar.launchers.channel import LaunchError, StderrRing

ACCEPT = "application/json, text/event-stream"
QUEUE = 1024


class HttpChannel:
    def __init__(self, provider_id: str, spec: RemoteProvider) -> None:
        self._id = provider_id
        self._url = spec.endpoint
        self._http = httpx2.AsyncClient(
            headers={"accept": ACCEPT, **spec.headers},
            timeout=httpx2.Timeout(spec.call_timeout_s, connect=spec.startup_timeout_s),
        )
        self._incoming: MemoryObjectSendStream[bytes | None]
        self._lines: MemoryObjectReceiveStream[bytes | None]
        self._incoming, self._lines = anyio.create_memory_object_stream[bytes | None](QUEUE)
        self._log = StderrRing(secrets=spec.headers.values())  # what went wrong, for error messages
        self._closed = False
        self._session_id: str | None = None
        self._connect_timeout = spec.startup_timeout_s

    @property
    def pid(self) -> int | None:
        return None

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError(f"the connection to {self._url} is closed")
        message = json.loads(data)
        try:
            async with self._http.stream("POST", self._url, content=data, headers=self._headers()) as response:
                sid = response.headers.get("mcp-session-id")
                if sid and response.status_code < 400 and message.get("method") == "initialize":
                    self._session_id = sid  # the session is the one our initialize opened
                if "id" not in message or "method" not in message:
                    return  # a notification or our answer to the server: nothing comes back
                if response.status_code >= 400:
                    await response.aread()
                    await self._incoming.send(self._http_error(message["id"], response))
                    return
                await self._deliver(message, response)
        except httpx2.HTTPError as exc:
            self._log.add(f"cannot reach {self._url}: {exc}".encode())
            await self._end()
            raise ConnectionResetError(f"cannot reach {self._url}: {exc}") from None

    def _headers(self) -> dict[str, str]:
        return {
            "content-type": "application/json",
            **({"mcp-session-id": self._session_id} if self._session_id else {}),
        }

    async def _deliver(self, message: dict[str, Any], response: httpx2.Response) -> None:
        """Queue the answer; an SSE answer is queued message by message as it streams (progress)."""
        if response.headers.get("content-type", "").startswith("application/json"):
            payload = await response.aread()
            await self._incoming.send(payload)
            if message.get("method") == "initialize":
                self._remember_version(payload)
            return
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip():
                payload = line[5:].strip().encode()
                await self._incoming.send(payload)
                if message.get("method") == "initialize":
                    self._remember_version(payload)

    def _remember_version(self, payload: bytes) -> None:
        try:
            version = json.loads(payload)["result"]["protocolVersion"]
        except (ValueError, KeyError, TypeError):
            return
        self._http.headers["mcp-protocol-version"] = str(version)

    def _refusal(self, status: int, body: str) -> str:
        if status in (401, 403):
            return (
                f"remote provider {self._id!r} refused our credentials (HTTP {status}); "
                "check the provider's 'headers' (e.g. Authorization: Bearer ${TOKEN})"
            )
        return f"remote provider {self._id!r} answered HTTP {status}: {body}"

    def _http_error(self, request_id: Any, response: httpx2.Response) -> bytes:
        status = response.status_code
        text = self._refusal(status, response.text[:300])
        self._log.add(text.encode())
        error = {"code": -32000 - status, "message": text}
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()

    async def receive(self) -> bytes | None:
        try:
            return await self._lines.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None

    async def _end(self) -> None:
        if not self._closed:
            self._closed = True
            await self._incoming.send(None)

    def exit_status(self) -> int | None:
        return None

    def stderr_tail(self) -> str:
        return self._log.tail()

    async def wait_exited(self, timeout: float) -> int | None:
        return None

    async def close(self) -> None:
        if self._session_id is not None and not self._closed:
            with anyio.move_on_after(2), contextlib.suppress(httpx2.HTTPError):
                await self._http.delete(self._url, headers=self._headers())
        await self._end()
        await self._http.aclose()


class SseChannel(HttpChannel):
    """The legacy SSE transport: one GET stream carries every message from the server; the first
    event names the URL that our messages are POSTed to."""

    def __init__(self, provider_id: str, spec: RemoteProvider) -> None:
        super().__init__(provider_id, spec)
        self._post_url: str | None = None
        self._ready = anyio.Event()
        self._events: AsyncIterator[tuple[str, str]] | None = None

    async def receive(self) -> bytes | None:
        if self._closed:
            return None
        try:
            if self._events is None:
                self._events = self._listen()
            async for event, data in self._events:
                if event == "endpoint":
                    self._post_url = urljoin(self._url, data)
                    self._ready.set()
                elif data:
                    return data.encode()
        except httpx2.HTTPError as exc:
            self._log.add(f"cannot reach {self._url}: {exc}".encode())
        self._closed = True
        self._ready.set()  # a sender waiting for the endpoint learns now that none will come
        return None

    async def _listen(self) -> AsyncIterator[tuple[str, str]]:
        async with self._http.stream("GET", self._url, headers={"accept": "text/event-stream"}) as response:
            if response.status_code >= 400:
                self._log.add(self._refusal(response.status_code, (await response.aread()).decode()[:300]).encode())
                return
            event, data = "message", list[str]()
            async for line in response.aiter_lines():
                if not line:
                    yield event, "\n".join(data)
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError(f"the connection to {self._url} is closed")
        with anyio.fail_after(self._connect_timeout):
            await self._ready.wait()
        if self._post_url is None:
            why = self._log.tail(1) or "no reason given"
            raise ConnectionResetError(f"the event stream from {self._url} ended before naming an endpoint: {why}")
        message = json.loads(data)
        try:
            response = await self._http.post(self._post_url, content=data, headers={"content-type": "application/json"})
        except httpx2.HTTPError as exc:
            self._log.add(f"cannot reach {self._post_url}: {exc}".encode())
            raise ConnectionResetError(f"cannot reach {self._post_url}: {exc}") from None
        if response.status_code >= 400 and "id" in message and "method" in message:
            await self._incoming.send(self._http_error(message["id"], response))

    async def close(self) -> None:
        self._closed = True
        await self._http.aclose()


async def connect(provider_id: str, spec: RemoteProvider) -> HttpChannel:
    if not spec.endpoint.startswith(("http://", "https://")):
        raise LaunchError(f"provider {provider_id!r}: endpoint {spec.endpoint!r} is not an http(s) URL")
    if spec.transport == "sse":
        return SseChannel(provider_id, spec)
    return HttpChannel(provider_id, spec)
