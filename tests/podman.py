"""A real Podman engine for the container tests and the benchmark, with nothing pulled from a registry.

``podman_service`` starts ``podman system service`` on a socket of its own (runc and explicit
ulimits: what works on this machine kind) and stops it again. The test image is a root file system
of empty mount points made with ``podman import``; a provider in it runs this machine's Node.js or
Python, bound read-only from the host (``RUNTIME_VOLUMES``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/hangar-test:latest"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def _runtime_paths() -> list[str]:
    """Host folders a provider in the test image needs: the system's programs and libraries, the
    Python install this venv is made from, the venv, and the project (tests, npm providers)."""
    paths = ["/usr", "/lib", "/bin"]
    if Path("/lib64").is_dir():
        paths.append("/lib64")
    paths += [str(Path(sys.base_prefix).resolve()), str(Path(sys.prefix)), str(ROOT)]
    return list(dict.fromkeys(paths))


RUNTIME_VOLUMES = [f"{p}:{p}:ro" for p in _runtime_paths()]


def _podman(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["podman", *args], env=env, input=stdin, capture_output=True, timeout=120, check=False)


def _rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    folders: dict[str, None] = {}
    for name in ("etc", "tmp", "proc", "dev", "sys", "run", "root", "home", *(p.lstrip("/") for p in _runtime_paths())):
        parts = Path(name).parts
        folders.update(("/".join(parts[:depth]), None) for depth in range(1, len(parts) + 1))
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()


@contextmanager
def podman_service(workdir: Path) -> Iterator[str]:
    """A Podman API service; yields its ``unix://`` address. The test image is made if missing."""
    podman = shutil.which("podman")
    if podman is None:
        raise RuntimeError("podman is not installed: run scripts/bootstrap.sh (as root, it installs podman and runc)")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    if _podman(env, "image", "exists", IMAGE).returncode != 0:
        made = _podman(env, "import", "-", IMAGE, stdin=_rootfs_tar())
        if made.returncode != 0:
            raise RuntimeError(f"podman import failed: {made.stderr.decode(errors='replace')}")
    sock = workdir / "podman.sock"
    log = (workdir / "service.log").open("wb")
    service = subprocess.Popen(
        [podman, "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start; see {workdir / 'service.log'}")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
