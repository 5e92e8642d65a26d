"""Who may do what: roles, and which registry tools each role may call."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    USER = "user"
    OPERATOR = "operator"
    ADMIN = "admin"


_VIEW = frozenset({"registry_list", "registry_tools", "registry_health", "registry_status", "registry_sources"})
_INVOKE = frozenset({"registry_invoke", "registry_invoke_ex", "registry_invoke_stream"})
_OPERATE = frozenset({"registry_start", "registry_stop", "registry_warm", "registry_discover"})

# Each role includes the ones before it. Admin may do everything, including reading the audit log.
ALLOWED: dict[Role, frozenset[str]] = {
    Role.VIEWER: _VIEW,
    Role.USER: _VIEW | _INVOKE,
    Role.OPERATOR: _VIEW | _INVOKE | _OPERATE,
}


def may_call(role: Role, tool: str) -> bool:
    return role == Role.ADMIN or tool in ALLOWED[role]
