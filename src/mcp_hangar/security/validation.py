"""Tool arguments checked against the provider's own input schema before they are sent.

A provider should not have to defend itself against malformed or oversized input, and a caller
deserves an error that names the field instead of whatever the provider makes of it.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

MAX_ARGUMENT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64


class InvalidArguments(ValueError):
    pass


class ArgumentValidator:
    """Compiled validators per (provider, tool, schema); a changed schema compiles anew."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[int, Any]] = {}

    def check(self, provider: str, tool: str, schema: dict[str, Any] | None, arguments: dict[str, Any]) -> None:
        _check_shape(provider, tool, arguments)
        if not schema:
            return
        validator = self._validator(provider, tool, schema)
        if validator is None:
            return
        error = next(iter(validator.iter_errors(arguments)), None)
        if error is None:
            return
        best = jsonschema.exceptions.best_match(validator.iter_errors(arguments)) or error
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
        field = f"argument '{where.lstrip('.')}'" if where else "arguments"
        raise InvalidArguments(f"provider {provider!r}, tool {tool!r}: {field} is invalid: {best.message}")

    def _validator(self, provider: str, tool: str, schema: dict[str, Any]) -> Any:
        key = (provider, tool)
        fingerprint = id(schema)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
            validator = cls(schema)
        except SchemaError:
            validator = None  # the provider's schema is broken: let the provider judge its own input
        self._cache[key] = (fingerprint, validator)
        return validator


def _check_shape(provider: str, tool: str, arguments: dict[str, Any]) -> None:
    """Size and nesting limits, checked before any schema work."""
    stack: list[tuple[Any, int]] = [(arguments, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidArguments(
                f"provider {provider!r}, tool {tool!r}: arguments nest deeper than {MAX_DEPTH} levels"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    if len(json.dumps(arguments, separators=(",", ":"))) > MAX_ARGUMENT_BYTES:
        raise InvalidArguments(f"provider {provider!r}, tool {tool!r}: arguments exceed {MAX_ARGUMENT_BYTES} bytes")
