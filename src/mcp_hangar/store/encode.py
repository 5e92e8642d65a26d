"""Turning domain events into stored records: what is kept, what is only hashed, what is masked.

Tool arguments and results are never stored as they are: by default only their size and SHA-256
(``audit: {arguments: hashed}``); ``redacted`` keeps arguments with the values of secret-looking
keys masked; ``full`` keeps them whole. Results are always size and hash. On top of that every
known secret value (each provider's configured ``env`` values, and hangar's own environment
variables whose names look secret) is masked wherever it appears, stderr tails included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from mcp_hangar.domain import events as ev
from mcp_hangar.launchers.channel import MIN_SECRET_LENGTH

SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|auth|credential|private[_-]?key|cookie|session|signature",
    re.IGNORECASE,
)
MASK = "***"
_SKIP = {"provider_id", "at", "correlation_id", "principal", "arguments", "result"}


def digest(value: Any) -> dict[str, Any]:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return {"size": len(text), "sha256": hashlib.sha256(text).hexdigest()}


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if SECRET_NAME.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def secrets_from(
    provider_envs: Iterable[Mapping[str, str]], environ: Mapping[str, str], from_environment: Iterable[str] = ()
) -> set[str]:
    """What to mask: values the configuration took from the environment (secrets live there, never
    in the file), values of secret-looking keys in providers' env, and hangar's own environment
    variables whose names look secret. A literal like ``MEMBER: primary`` in the file is not one."""
    found = set(from_environment)
    found |= {v for env in provider_envs for k, v in env.items() if SECRET_NAME.search(k)}
    found |= {v for k, v in environ.items() if SECRET_NAME.search(k)}
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


class Encoder:
    def __init__(self, audit_modes: Mapping[str, str], secrets: Iterable[str]) -> None:
        self._modes = dict(audit_modes)
        # Longest first, so a secret containing another is masked whole. Each is also matched in
        # its JSON-escaped spelling, since the check runs on the encoded text.
        ordered = sorted(set(secrets), key=len, reverse=True)
        self._needles = [n for s in ordered for n in dict.fromkeys((s, json.dumps(s)[1:-1]))]
        self._fields: dict[type[ev.DomainEvent], tuple[str, ...]] = {}

    def _payload_fields(self, kind: type[ev.DomainEvent]) -> tuple[str, ...]:
        fields = self._fields.get(kind)
        if fields is None:
            fields = self._fields[kind] = tuple(f.name for f in dataclasses.fields(kind) if f.name not in _SKIP)
        return fields

    def data(self, event: ev.DomainEvent) -> str:
        """The event's payload as JSON text, safe to store."""
        data: dict[str, Any] = {name: _plain(getattr(event, name)) for name in self._payload_fields(type(event))}
        if isinstance(event, ev.ToolInvoked):
            data["arguments"] = digest(event.arguments)
            mode = self._modes.get(event.provider_id, "hashed")
            if mode == "redacted":
                data["arguments"]["value"] = redact(event.arguments)
            elif mode == "full":
                data["arguments"]["value"] = event.arguments
        elif isinstance(event, ev.ToolCompleted):
            data["result"] = digest(event.result)
        text = json.dumps(data, default=str)
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return value
