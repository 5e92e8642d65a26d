"""Structured logs on stderr (stdout belongs to the MCP stdio transport)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Masker:
    """A log processor that replaces every known secret value in a line's strings with ***.

    The app owns it and adds to it (a config reload can bring new secrets); longest first, so a
    secret containing another is masked whole.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._ordered: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._ordered = sorted(set(self._ordered) | set(secrets), key=len, reverse=True)

    def _mask(self, value: str) -> str:
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, "***")
        return value

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self._mask(value)
            elif isinstance(value, list | tuple | dict):
                event[key] = self._mask(str(value))
        return event


def configure(level: str = "info", fmt: str = "text", masker: Masker | None = None) -> None:
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"], sort_keys=False)
    structlog.configure(
        processors=[
            masker or Masker(),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The SDK logs through the standard library; keep its noise at warning unless debugging.
    logging.basicConfig(stream=sys.stderr, level=LEVELS[level] if level == "debug" else logging.WARNING)
    # HTTP plumbing of the engine and remote clients: every request at debug would drown ours.
    for chatty in ("urllib3", "docker", "httpcore", "httpx"):
        logging.getLogger(chatty).setLevel(logging.INFO)
