"""When repeating a call is safe."""

from __future__ import annotations

from typing import Any


def retry_safe(tool: dict[str, Any] | None) -> bool:
    """A tool annotated read-only or idempotent may run twice without harm; anything else may not."""
    annotations = (tool or {}).get("annotations") or {}
    return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))
