"""MCP Hangar: one MCP endpoint in front of many MCP providers."""

__version__ = "0.3.0.dev0"
