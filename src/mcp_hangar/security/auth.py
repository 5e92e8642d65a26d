"""Who is calling: API keys (made with `mcp-hangar keys create`) and JWT bearer tokens.

API keys look like ``mhk_<id>_<secret>``; the store keeps only the SHA-256 of the whole key. The
keys are cached and reloaded every ``KEY_REFRESH_S`` seconds, so a revocation takes effect within
that time on every replica. JWTs are verified with pyjwt against a static public key or a JWKS
URL (fetched asynchronously, cached, refetched when an unknown key id appears).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import jwt
import structlog

from mcp_hangar.config import AuthConfig, JwtConfig
from mcp_hangar.domain import events as ev
from mcp_hangar.domain.ratelimit import FailureWindow
from mcp_hangar.domain.roles import Role
from mcp_hangar.security.policy import Denied, Principal
from mcp_hangar.store.base import ApiKeyRecord, EventStore

log = structlog.get_logger("mcp_hangar.auth")

KEY_PREFIX = "mhk_"
KEY_REFRESH_S = 2.0
JWKS_REFETCH_S = 30.0
ROLE_ORDER = [Role.VIEWER, Role.USER, Role.OPERATOR, Role.ADMIN]


def new_key(name: str, role: Role) -> tuple[str, ApiKeyRecord]:
    """A fresh key: the secret to show once, and the record to store."""
    key_id = secrets.token_hex(4)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return token, ApiKeyRecord(key_id, name, role.value, _hash(token), time.time())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def credentials(headers: Mapping[str, str]) -> str | None:
    """The token from ``Authorization: Bearer ...`` or ``X-API-Key``."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return headers.get("x-api-key") or None


class JwtVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self._config = config
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = 0.0
        self._lock = anyio.Lock()

    async def verify(self, token: str) -> dict[str, Any]:
        c = self._config
        try:
            header = jwt.get_unverified_header(token)
            key = c.public_key if c.public_key is not None else await self._key(header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=c.algorithms,
                audience=c.audience,
                issuer=c.issuer,
                leeway=c.leeway_s,
                options={"require": ["exp"], "verify_aud": c.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Denied(401, "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Denied(401, "the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise Denied(401, "the token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise Denied(401, f"the token is not valid: {exc}") from None
        return claims

    async def _key(self, kid: str | None) -> Any:
        if kid not in self._keys:
            async with self._lock:
                if kid not in self._keys and time.monotonic() - self._fetched_at > JWKS_REFETCH_S:
                    await self._fetch()
        try:
            return self._keys[kid] if kid is not None else next(iter(self._keys.values()))
        except (KeyError, StopIteration):
            raise Denied(401, f"the token's key id {kid!r} is not in the JWKS") from None

    async def _fetch(self) -> None:
        url = self._config.jwks_url
        assert url is not None
        self._fetched_at = time.monotonic()
        try:
            async with httpx2.AsyncClient(timeout=10) as client:
                response = await client.get(url)
                response.raise_for_status()
                jwks = jwt.PyJWKSet.from_dict(response.json())
        except (httpx2.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("auth.jwks_unavailable", url=url, error=str(exc))
            return
        self._keys = {k.key_id: k.key for k in jwks.keys}


@dataclass
class Authenticator:
    config: AuthConfig
    store: EventStore | None
    emit: Callable[[ev.DomainEvent], None]
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    _lockouts: dict[str, FailureWindow] = field(default_factory=dict)
    _jwt: JwtVerifier | None = None

    def __post_init__(self) -> None:
        if self.config.jwt is not None:
            self._jwt = JwtVerifier(self.config.jwt)

    @property
    def has_keys(self) -> bool:
        return any(k.revoked_at is None for k in self._keys.values())

    async def refresh_keys(self) -> None:
        if self.store is not None and self.config.api_keys:
            self._keys = {k.id: k for k in await self.store.keys()}

    async def keep_keys_fresh(self) -> None:
        while True:
            await anyio.sleep(KEY_REFRESH_S)
            try:
                await self.refresh_keys()
            except Exception as exc:  # a store hiccup must not end the loop; the cached keys stay
                log.warning("auth.key_refresh_failed", error=str(exc))

    async def authenticate(self, headers: Mapping[str, str], client: str) -> Principal:
        """The caller's principal; raises Denied (401, or 429 while the client is locked out)."""
        lockout = self._lockouts.get(client)
        if lockout is not None and (wait := lockout.locked_for(self.clock())):
            self._record("locked_out", "too many failed logins", client)
            raise Denied(429, f"too many failed logins from {client}; retry in {wait:.0f}s", retry_after=wait)
        try:
            token = credentials(headers)
            if token is None:
                raise Denied(401, "missing credentials: send 'Authorization: Bearer <key or token>' or 'X-API-Key'")
            return await self._principal(token)
        except Denied as exc:
            if exc.status == 401:  # a valid token without a role is no failed login
                lock = self.config.lockout
                window = self._lockouts.setdefault(client, FailureWindow(lock.max_failures, lock.window_s, lock.lock_s))
                window.record_failure(self.clock())
            self._record("auth_failed" if exc.status == 401 else "forbidden", str(exc), client)
            raise

    async def _principal(self, token: str) -> Principal:
        if token.startswith(KEY_PREFIX):
            if not self.config.api_keys:
                raise Denied(401, "API keys are not accepted here")
            key_id = token[len(KEY_PREFIX) :].split("_", 1)[0]
            record = self._keys.get(key_id)
            if record is None or not hmac.compare_digest(record.hash, _hash(token)):
                raise Denied(401, "unknown API key")
            if record.revoked_at is not None:
                raise Denied(401, f"API key {record.id!r} ({record.name}) has been revoked")
            return Principal(f"key:{record.name}", Role(record.role), "api_key")
        if self._jwt is None:
            raise Denied(401, "unknown API key (and JWT bearer tokens are not configured)")
        claims = await self._jwt.verify(token)
        return Principal(f"jwt:{claims.get('sub', '?')}", self._role(claims), "jwt")

    def _role(self, claims: dict[str, Any]) -> Role:
        assert self.config.jwt is not None
        claim = claims.get(self.config.jwt.roles_claim)
        values = claim if isinstance(claim, list) else [claim]
        known = [r for r in ROLE_ORDER if r.value in values]
        if known:
            return known[-1]
        if self.config.jwt.default_role is not None:
            return Role(self.config.jwt.default_role)
        raise Denied(403, f"the token carries no known role in claim {self.config.jwt.roles_claim!r}")

    def _record(self, decision: str, reason: str, client: str) -> None:
        self.emit(
            ev.SecurityDecision(
                provider_id=ev.SECURITY_STREAM, at=time.time(), decision=decision, reason=reason, client=client
            )
        )
