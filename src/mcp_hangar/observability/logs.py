"""Structured logs on stderr (stdout belongs to the MCP stdio transport)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


_masked: list[str] = []  # longest first, so a secret containing another is masked whole


def mask_also(secrets: Iterable[str]) -> None:
    """Add values to mask in every later log line (a config reload can bring new secrets)."""
    _masked[:] = sorted(set(_masked) | set(secrets), key=len, reverse=True)


def masking(secrets: Iterable[str]) -> structlog.typing.Processor:
    """A processor that replaces every known secret value in a log line's strings with ***."""
    mask_also(secrets)
    ordered = _masked

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            for secret in ordered:
                if secret in value:
                    value = value.replace(secret, "***")
        return value

    def processor(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = mask(value)
            elif isinstance(value, list | tuple | dict):
                event[key] = mask(str(value))
        return event

    return processor


def configure(level: str = "info", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"], sort_keys=False)
    structlog.configure(
        processors=[
            masking(secrets),
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
