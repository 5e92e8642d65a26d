"""The text half of registry_status: a table a person can read at a glance."""

from __future__ import annotations

from typing import Any

_COLUMNS = (
    ("PROVIDER", "id"),
    ("MODE", "mode"),
    ("STATE", "state"),
    ("TOOLS", "tools"),
    ("IN FLIGHT", "in_flight"),
    ("CALLS", "invocations"),
    ("FAILED", "failures"),
    ("STARTS", "starts"),
    ("CRASHES", "crashes"),
)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No providers are configured."
    table = [[title for title, _ in _COLUMNS]]
    table += [[_cell(row.get(key)) for _, key in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    problems = [f"  {row['id']}: {row['last_error']}" for row in rows if row.get("last_error")]
    out = [f"MCP Hangar: {len(rows)} providers ({summary})", "", *lines]
    if problems:
        out += ["", "Last errors:", *problems]
    return "\n".join(out)
