"""What aggregated listings show each role: the providers its allowlist names, nothing for viewers."""

from __future__ import annotations

from mcp_hangar.config import parse_config
from mcp_hangar.domain.roles import Role
from mcp_hangar.security.policy import Guard, Principal

CONFIG = """
auth: {enabled: true, providers: {user: [time]}}
providers:
  time: {mode: remote, endpoint: "http://127.0.0.1:1/mcp"}
  git: {mode: remote, endpoint: "http://127.0.0.1:2/mcp"}
"""


def test_usable_providers_follow_roles_and_allowlists() -> None:
    guard = Guard(parse_config(CONFIG), lambda event: None)
    assert guard.usable_providers(Principal("u", Role.USER, "key")) == {"time"}
    assert guard.usable_providers(Principal("o", Role.OPERATOR, "key")) is None  # no list: all
    assert guard.usable_providers(Principal("v", Role.VIEWER, "key")) == set()  # may not call tools
    assert guard.usable_providers(None) is None  # the local stdio client
