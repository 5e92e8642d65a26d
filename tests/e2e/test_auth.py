"""Authentication, authorization and rate limits over HTTP, end to end.

JWTs are signed by an RSA key made here and verified through a JWKS document served from a local
HTTP server; API keys are made with the real `mcp-hangar keys` command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import everything_command, time_command, write_config
from tests.e2e.test_http import http_hangar

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ISSUER = "https://issuer.test"
AUDIENCE = "mcp-hangar"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()


def token(
    key: rsa.RSAPrivateKey, *, roles: Any = "user", aud: str = AUDIENCE, exp_in: float = 300, **extra: Any
) -> str:
    claims = {"sub": "alice", "iss": ISSUER, "aud": aud, "exp": int(time.time() + exp_in), "roles": roles, **extra}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test-key"})


def make_key(config: Path, role: str, name: str | None = None) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_hangar",
            "keys",
            "create",
            "--name",
            name or role,
            "--role",
            role,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def call_body(tool: str, arguments: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


async def post(base: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx2.Response:
    async with httpx2.AsyncClient() as web:
        return await web.post(
            f"{base}/mcp",
            json=body,
            headers={"accept": "application/json, text/event-stream", **(headers or {})},
        )


async def invoke_as(base: str, credential: str, tool: str, arguments: dict[str, Any]) -> Any:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {credential}"}, timeout=30)
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        return await client.call_tool(tool, arguments)


@pytest.fixture
def config(tmp_path: Path, jwks_url: str) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {
            "everything": {"mode": "subprocess", "command": everything_command()},
            "time": {"mode": "subprocess", "command": time_command()},
        },
        auth={
            "enabled": True,
            "jwt": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE},
            "lockout": {"max_failures": 1000},
            "providers": {"user": ["everything"]},
        },
    )


ECHO = {"provider": "everything", "tool": "echo", "arguments": {"message": "hi"}}
MATRIX = {
    # tool: (arguments, roles allowed)
    "registry_list": ({}, {"viewer", "user", "operator", "admin"}),
    "registry_invoke": (ECHO, {"user", "operator", "admin"}),
    "registry_start": ({"provider": "everything"}, {"operator", "admin"}),
    "registry_audit": ({"limit": 1}, {"admin"}),
}


async def test_role_matrix_with_api_keys(config: Path) -> None:
    keys = {role: make_key(config, role) for role in ("viewer", "user", "operator", "admin")}
    async with http_hangar(config) as (base, _):
        for role, key in keys.items():
            for tool, (arguments, allowed) in MATRIX.items():
                if role in allowed:
                    result = await invoke_as(base, key, tool, arguments)
                    assert not result.is_error, (role, tool, result.content[0].text)
                else:
                    refused = await post(base, call_body(tool, arguments), {"x-api-key": key})
                    assert refused.status_code == 403, (role, tool, refused.text)
                    assert f"role '{role}' may not call {tool}" in refused.json()["error"]["message"]

        # per-role provider allowlist: a user may reach 'everything' but not 'time'
        refused = await post(
            base,
            call_body("registry_invoke", {"provider": "time", "tool": "get_current_time"}),
            {"x-api-key": keys["user"]},
        )
        assert refused.status_code == 403 and "may not use provider 'time'" in refused.text
        allowed = await invoke_as(
            base,
            keys["operator"],
            "registry_invoke",
            {"provider": "time", "tool": "get_current_time", "arguments": {"timezone": "UTC"}},
        )
        assert not allowed.is_error


async def test_bad_credentials_are_401(config: Path, signing_key: rsa.RSAPrivateKey) -> None:
    good = make_key(config, "user", "soon-revoked")
    async with http_hangar(config) as (base, _):
        body = call_body("registry_list", {})
        cases = {
            "no credentials": ({}, "missing credentials"),
            "bad key": ({"x-api-key": "mhk_00000000_notakey"}, "unknown API key"),
            "garbage bearer": ({"authorization": "Bearer nonsense"}, "the token is not valid"),
            "expired jwt": ({"authorization": f"Bearer {token(signing_key, exp_in=-3600)}"}, "the token has expired"),
            "wrong audience": (
                {"authorization": f"Bearer {token(signing_key, aud='someone-else')}"},
                "not for this audience",
            ),
            "wrong issuer": (
                {"authorization": f"Bearer {token(signing_key, iss='https://evil.test')}"},
                "another issuer",
            ),
            "foreign signature": (
                {"authorization": f"Bearer {token(rsa.generate_private_key(public_exponent=65537, key_size=2048))}"},
                "the token is not valid",
            ),
        }
        for case, (headers, message) in cases.items():
            response = await post(base, body, headers)
            assert response.status_code == 401, case
            assert response.headers["www-authenticate"].startswith("Bearer"), case
            assert message in response.json()["error"]["message"], (case, response.text)

        # a valid JWT works, and its role comes from the claim
        result = await invoke_as(
            base, token(signing_key, roles=["viewer", "operator"]), "registry_start", {"provider": "everything"}
        )
        assert not result.is_error
        no_role = await post(base, body, {"authorization": f"Bearer {token(signing_key, roles='intern')}"})
        assert no_role.status_code == 403 and "no known role" in no_role.text

        # revocation takes effect within the key refresh interval
        assert not (await invoke_as(base, good, "registry_list", {})).is_error
        key_id = good.split("_")[1]
        subprocess.run(
            [sys.executable, "-m", "mcp_hangar", "keys", "revoke", key_id, "--config", str(config)], check=True
        )
        deadline = time.monotonic() + 10
        while (response := await post(base, body, {"x-api-key": good})).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key was still accepted"
            await anyio.sleep(0.2)
        assert "has been revoked" in response.text

        # health and metrics stay open to the orchestrator
        async with httpx2.AsyncClient() as web:
            assert (await web.get(f"{base}/health/live")).status_code == 200
            metrics = (await web.get(f"{base}/metrics")).text
        assert 'mcp_hangar_auth_failures_total{reason="invalid_credentials"}' in metrics

    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_hangar",
            "events",
            "-c",
            str(config),
            "-t",
            "security_decision",
            "--json",
            "-n",
            "100",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    decisions = [json.loads(line)["data"]["decision"] for line in audit.stdout.splitlines()]
    assert decisions.count("auth_failed") >= len(cases) and "forbidden" in decisions
    changes = subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "events", "-c", str(config), "-t", "api_key_changed", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [json.loads(line)["data"]["change"] for line in changes.stdout.splitlines()] == ["created", "revoked"]


async def test_lockout_and_principal_rate_limit_are_429(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        auth={"enabled": True, "lockout": {"max_failures": 3, "window_s": 60, "lock_s": 120}},
        rate_limits={"per_principal": {"rate": 0.1, "burst": 1}},
    )
    key = make_key(config, "user")
    async with http_hangar(config) as (base, _):
        assert not (await invoke_as(base, key, "registry_invoke", ECHO)).is_error
        limited = await post(base, call_body("registry_invoke", ECHO), {"x-api-key": key})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit for 'key:user' exceeded" in limited.text

        for _ in range(3):
            assert (await post(base, call_body("registry_list", {}), {"x-api-key": "mhk_bad_bad"})).status_code == 401
        locked = await post(base, call_body("registry_list", {}), {"x-api-key": key})
        assert locked.status_code == 429  # even the right key, from a locked-out client
        assert "too many failed logins" in locked.text and int(locked.headers["retry-after"]) > 60


async def test_exposed_without_auth_needs_explicit_consent(tmp_path: Path) -> None:
    exposed = write_config(
        tmp_path / "c.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        server={"host": "0.0.0.0"},
    )
    async with http_hangar(exposed) as (base, _):
        local = base.replace("0.0.0.0", "127.0.0.1")
        assert (await post(local, call_body("registry_list", {}))).status_code == 401  # auth is on by default
    opened = write_config(
        tmp_path / "open.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        server={"host": "0.0.0.0"},
        auth={"enabled": False},
    )
    async with http_hangar(opened) as (base, _):
        local = base.replace("0.0.0.0", "127.0.0.1")
        http = httpx2.AsyncClient()
        async with http, Client(streamable_http_client(f"{local}/mcp", http_client=http)) as client:
            assert not (await client.call_tool("registry_list", {})).is_error


async def test_jwt_with_a_static_public_key_from_the_environment_and_keys_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("TEST_JWT_PUBLIC_KEY", pem.decode())
    path = write_config(
        tmp_path / "config.yaml",
        {"everything": {"mode": "subprocess", "command": everything_command()}},
        auth={"enabled": True, "jwt": {"public_key": "${TEST_JWT_PUBLIC_KEY}", "audience": AUDIENCE}},
    )

    def es256(**claims: Any) -> str:
        body = {"sub": "bob", "aud": AUDIENCE, "exp": int(time.time() + 300), "roles": "user", **claims}
        return jwt.encode(body, key, algorithm="ES256")

    kept = make_key(path, "viewer", "dashboard")
    gone = make_key(path, "admin", "old-admin")
    subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "keys", "revoke", gone.split("_")[1], "--config", str(path)], check=True
    )
    listed = subprocess.run(
        [sys.executable, "-m", "mcp_hangar", "keys", "list", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split("│")[2].strip(): line for line in listed.splitlines() if line.count("│") >= 6}
    assert set(rows) == {"dashboard", "old-admin"}
    assert kept.split("_")[1] in rows["dashboard"] and "viewer" in rows["dashboard"]
    assert rows["dashboard"].rstrip("│ ").endswith("-")  # not revoked
    assert not rows["old-admin"].rstrip("│ ").endswith("-")  # revoked, with its time
    assert kept not in listed and gone not in listed and kept.split("_", 2)[2] not in listed  # never the secret

    async with http_hangar(path) as (base, _):
        result = await invoke_as(base, es256(), "registry_invoke", ECHO)
        assert not result.is_error and result.content[0].text == "Echo: hi"  # type: ignore[union-attr]
        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode({"sub": "eve", "aud": AUDIENCE, "roles": "admin"}, other, algorithm="ES256")
        response = await post(base, call_body("registry_list", {}), {"authorization": f"Bearer {forged}"})
        assert response.status_code == 401 and "the token is not valid" in response.text
        response = await post(base, call_body("registry_list", {}), {"authorization": f"Bearer {gone}"})
        assert response.status_code == 401 and "revoked" in response.text
