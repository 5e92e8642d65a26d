"""The container launcher's own rules: where the engine is looked for, whose leftovers are whose,
and the engine's stream framing taken apart (fed through a real asyncio stream)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_hangar.config import parse_volume
from mcp_hangar.launchers.channel import StderrRing
from mcp_hangar.launchers.container import ContainerChannel, _instance_alive, candidate_hosts, this_instance


def test_engine_candidates_in_order() -> None:
    assert candidate_hosts("tcp://engine:2375", {"DOCKER_HOST": "unix:///x.sock"}) == [
        ("tcp://engine:2375", "container.host in the config")
    ]
    found = candidate_hosts(
        None, {"DOCKER_HOST": "unix:///d.sock", "CONTAINER_HOST": "unix:///c.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    )
    urls = [url for url, _ in found]
    assert urls[:2] == ["unix:///d.sock", "unix:///c.sock"]
    assert "unix:///var/run/docker.sock" in urls and "unix:///run/user/7/podman/podman.sock" in urls
    assert urls.index("unix:///var/run/docker.sock") < urls.index("unix:///run/podman/podman.sock")


def test_a_leftover_is_one_whose_hangar_is_gone_from_this_host() -> None:
    assert _instance_alive(this_instance())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    assert not _instance_alive(f"{socket.gethostname()}:{dead_pid}:1")
    # the same pid, started at another time, is another process: ours is gone
    assert not _instance_alive(f"{socket.gethostname()}:{os.getpid()}:0")
    # another machine's hangar is not ours to judge
    assert _instance_alive(f"elsewhere.example:{dead_pid}:1")


def test_volume_entries() -> None:
    assert parse_volume("./data:/data") == ("./data", "/data", "ro")
    assert parse_volume("/srv/x:/x:rw") == ("/srv/x", "/x", "rw")
    assert parse_volume("cache:/cache:ro") == ("cache", "/cache", "ro")


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


class _Writer:
    def is_closing(self) -> bool:
        return False


async def read_all(chunks: list[bytes]) -> tuple[list[bytes], list[str]]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    errors: list[str] = []
    channel = ContainerChannel(
        engine=None,  # type: ignore[arg-type]
        container_id="c" * 64,
        pid=None,
        reader=reader,
        writer=_Writer(),  # type: ignore[arg-type]
        stderr=StderrRing(secrets=["s3cr3t-value"]),
        on_stderr=errors.append,
    )
    lines = []
    while (line := await channel.receive()) is not None:
        lines.append(line)
    return lines, errors


messages = st.lists(st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=8)


@given(out=messages, cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_frames_split_anywhere_give_back_the_same_lines(out: list[bytes], cuts: list[int]) -> None:
    # each message spread over several frames, stderr frames in between, the bytes cut anywhere
    wire = b""
    for message in out:
        half = len(message) // 2
        wire += frame(1, message[:half]) + frame(2, b"log line\n") + frame(1, message[half:])
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(wire[at : at + cut])
        at += cut
    chunks.append(wire[at:])
    lines, errors = asyncio.run(read_all([c for c in chunks if c]))
    assert lines == out
    assert errors == ["log line"] * len(out)


def test_stderr_is_masked_and_a_last_unterminated_line_is_kept() -> None:
    wire = frame(2, b"token=s3cr3t-value\nlast words") + frame(1, b'{"jsonrpc":"2.0"}')
    lines, errors = asyncio.run(read_all([wire]))
    assert lines == [b'{"jsonrpc":"2.0"}']  # unterminated output is still delivered at the end
    assert errors == ["token=***", "last words"]


@pytest.mark.parametrize("size", [1, 70_000, 3_000_000])
def test_one_large_message_in_many_frames(size: int) -> None:
    message = b"x" * size + b"\n"
    wire = b"".join(frame(1, message[i : i + 32_768]) for i in range(0, len(message), 32_768))
    lines, _ = asyncio.run(read_all([wire[i : i + 100_000] for i in range(0, len(wire), 100_000)]))
    assert lines == [message]
