from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_hangar.config import ConfigError, SubprocessProvider, interpolate, load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yaml", environ or {})
    return info.value.problems


def test_the_seed_format_parses_with_its_defaults() -> None:
    config = parse_config(
        """
providers:
  math:
    mode: subprocess
    command: [python, -m, my_math_server]
    idle_ttl_s: 300
  sqlite:
    mode: container
    image: ghcr.io/modelcontextprotocol/server-sqlite:latest
    volumes:
      - "/data/sqlite:/data:rw"
  legacy:
    mode: docker
    image: x/y
  far:
    mode: remote
    endpoint: https://mcp.example.com/mcp
    headers: {Authorization: "Bearer ${TOKEN}"}
  both:
    mode: group
    strategy: weighted_round_robin
    members: [math, {id: legacy, weight: 3}]
""",
        environ={"TOKEN": "s3cret"},
    )
    math = config.providers["math"]
    assert isinstance(math, SubprocessProvider)
    assert math.command == ["python", "-m", "my_math_server"]
    assert (math.idle_ttl_s, math.health_check_interval_s, math.max_consecutive_failures) == (300, 60, 3)
    sqlite = config.providers["sqlite"]
    assert sqlite.mode == "container" and sqlite.network == "none" and sqlite.read_only is True  # type: ignore[union-attr]
    assert config.providers["far"].headers == {"Authorization": "Bearer s3cret"}  # type: ignore[union-attr]
    assert [m.weight for m in config.providers["both"].members] == [1, 3]  # type: ignore[union-attr]


def test_a_command_string_is_split_like_a_shell() -> None:
    config = parse_config("providers:\n  a: {mode: subprocess, command: \"node 'my server.js' --x\"}\n", environ={})
    assert config.providers["a"].command == ["node", "my server.js", "--x"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "providers:\n  math:\n    mode: subprocess\n    command: [x]\n    comand: [y]\n",
            "config.yaml:5: provider 'math': key 'comand': unknown key",
        ),
        (
            "providers:\n  math:\n    mode: subprocess\n",
            "config.yaml:2: provider 'math': key 'command': required key is missing",
        ),
        (
            "providers:\n  math:\n    mode: fancy\n",
            "config.yaml:2: provider 'math': unknown mode 'fancy' (expected one of: subprocess, container, docker, "
            "remote, group)",
        ),
        (
            "providers:\n  math:\n    mode: subprocess\n    command: [x]\n    idle_ttl_s: soon\n",
            "config.yaml:5: provider 'math': key 'idle_ttl_s': Input should be a valid number",
        ),
        (
            "providers:\n  math:\n    mode: subprocess\n    command: [x]\n    max_consecutive_failures: 0\n",
            "config.yaml:5: provider 'math': key 'max_consecutive_failures': Input should be greater than or equal to 1",
        ),
        (
            "providers:\n  ok: {mode: subprocess, command: [x]}\n  'my math': {mode: subprocess, command: [x]}\n",
            "config.yaml:3: provider 'my math': bad provider id 'my math'",
        ),
        (
            "providers:\n  a__b: {mode: subprocess, command: [x]}\n",
            "config.yaml:2: provider 'a__b': bad provider id 'a__b'",
        ),
        (
            "providers:\n  g:\n    mode: group\n    members:\n      - ghost\n",
            "config.yaml:5: provider 'g': key 'members.0': member 'ghost' is not a provider defined in this file",
        ),
        ("provders: {}\n", "config.yaml:1: key 'provders': unknown key"),
        ("providers:\n  a: [\n", "config.yaml:3: invalid YAML"),
        ("- just\n- a list\n", "config.yaml:1: the configuration must be a mapping"),
    ],
)
def test_errors_name_file_line_provider_and_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_unset_variable_is_an_error_that_names_it() -> None:
    found = problems("providers:\n  a:\n    mode: subprocess\n    command: [x]\n    env:\n      TOKEN: ${API_TOKEN}\n")
    assert found == [
        "config.yaml:6: provider 'a': key 'env.TOKEN': environment variable API_TOKEN is not set (use ${VAR:-default})"
    ]


def test_interpolation() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("x${A}y", env) == "x1y"
    assert interpolate("${B:-fallback}", env) == "fallback"
    assert interpolate("${EMPTY:-fallback}", env) == "fallback"
    assert interpolate("${EMPTY}", env) == ""
    assert interpolate("$${A} costs $$5", env) == "${A} costs $5"
    with pytest.raises(KeyError):
        interpolate("${B}", env)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")


def test_check_command_reports_what_it_understood_and_fails_on_bad_files(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "mcp_hangar", "check"]
    wide = {**os.environ, "COLUMNS": "200"}
    good = subprocess.run(
        [*run, str(ROOT / "examples/config.yaml")], capture_output=True, text=True, check=False, env=wide
    )
    assert good.returncode == 0, good.stderr
    assert "configuration is valid" in good.stdout and "mcp-server-time" in good.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  math:\n    mode: subprocess\n    comand: [x]\n")
    out = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert f"{bad}:4: provider 'math': key 'comand': unknown key" in out.stderr

    missing = subprocess.run([*run, str(tmp_path / "none.yaml")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "configuration file not found" in missing.stderr


def test_inline_group_members_become_providers_and_errors_keep_their_lines() -> None:
    text = """providers:
  pool:
    mode: group
    members:
      - {mode: subprocess, command: [a], weight: 2}
      - id: named
        mode: subprocess
        command: [b]
      - ref
  ref: {mode: subprocess, command: [c]}
"""
    config = parse_config(text, "c.yaml", {})
    assert set(config.providers) == {"pool", "pool-1", "named", "ref"}
    assert [(m.id, m.weight) for m in config.providers["pool"].members] == [("pool-1", 2), ("named", 1), ("ref", 1)]  # type: ignore[union-attr]
    found = problems(text.replace("command: [b]", "comand: [b]"))
    assert "config.yaml:8: provider 'named': key 'comand': unknown key" in found
