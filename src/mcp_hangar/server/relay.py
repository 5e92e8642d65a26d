"""Requests a provider makes of its client mid-call (sampling, elicitation, roots), carried back to
the client whose call it is serving: the ``ClientLink`` each way of serving a call provides.

Over the SDK (stdio or HTTP) the request goes through the SDK's session, tied to the client's
request so that over streamable HTTP it travels on that request's stream. On the stdio fast path
hangar writes the request on the wire itself and takes the client's answer out of the incoming
messages. A call answered as one plain JSON response over HTTP has no way to carry a request to the
client, so it has no link, and the provider is told so.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, ValidationError

from mcp_hangar.domain.errors import RemoteError
from mcp_hangar.runtime.provider import CLIENT_METHODS

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_TYPES: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageResult),
    "elicitation/create": (types.ElicitRequest, types.ElicitResult),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult),
}


def _declared(capabilities: Any, method: str) -> bool:
    name = CLIENT_METHODS.get(method)
    if name is None or capabilities is None:
        return False
    value = capabilities.get(name) if isinstance(capabilities, dict) else getattr(capabilities, name, None)
    return value is not None


class SdkLink:
    """The client of a request the SDK serves."""

    def __init__(self, session: Any, request_id: Any) -> None:
        self._session = session
        self._request_id = request_id

    def supports(self, method: str) -> bool:
        return _declared(self._session.client_capabilities, method)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_type, result_type = _TYPES[method]
        try:
            request = request_type.model_validate({"method": method, "params": params})
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise RemoteError(INVALID_PARAMS, f"mcp-hangar cannot relay this {method}: {problem}") from None
        try:
            result = await self._session.send_request(
                request, result_type, metadata=ServerMessageMetadata(related_request_id=self._request_id)
            )
        except MCPError as exc:
            raise RemoteError(exc.error.code, exc.error.message, exc.error.data) from None
        except ValidationError as exc:
            raise RemoteError(
                INTERNAL_ERROR, f"the client's answer to {method} is not valid: {exc.errors()[0]['msg']}"
            ) from None
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped


class WireLink:
    """The stdio client, asked directly on the wire by the fast path (see ``WireRequests``)."""

    def __init__(self, wire: WireRequests, capabilities: dict[str, Any] | None) -> None:
        self._wire = wire
        self._capabilities = capabilities

    def supports(self, method: str) -> bool:
        return _declared(self._capabilities, method)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._wire.ask(method, params)


class WireRequests:
    """Requests hangar writes to a stdio client itself, and the answers it takes back."""

    def __init__(self, write: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._write = write
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = {}

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = f"mcp-hangar-{next(self._ids)}"  # strings the SDK's own integer ids never collide with
        done, answer = anyio.Event(), list[dict[str, Any]]()
        self._waiting[rid] = (done, answer)
        try:
            await self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            await done.wait()
        finally:
            self._waiting.pop(rid, None)
        reply = answer[0]
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            code = err.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR
            raise RemoteError(code, str(err.get("message", "")), err.get("data"))
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def take(self, message: dict[str, Any]) -> bool:
        """True if the message answers one of our requests (then it is ours, not the SDK's)."""
        waiting = self._waiting.get(message.get("id"))  # type: ignore[arg-type]
        if waiting is None:
            return False
        waiting[1].append(message)
        waiting[0].set()
        return True
