"""Tenants, principals, roles and API keys.

A key looks like `cvg_<key_id>_<secret>`. Only a SHA-256 of the secret is
stored; the secret is shown once, when the key is created. The secret has 256
bits of entropy, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from convergio_server.config import TENANT_ID
from convergio_server.domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

log = logging.getLogger("convergio.auth")

KEY_PREFIX = "cvg"
_KEY_RE = re.compile(r"^cvg_([a-z0-9]{16})_([A-Za-z0-9_-]{43})\Z")
MAX_KEY_NAME_CHARS = 100


class Role(enum.StrEnum):
    """What a principal may do. `admin` implies every other role."""

    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    MEMBER = "member"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, the principal's name and the roles of its key."""

    tenant_id: str
    name: str
    roles: frozenset[Role]
    key_id: str

    def has_any(self, allowed: frozenset[Role]) -> bool:
        return Role.ADMIN in self.roles or bool(self.roles & allowed)

    def require(self, allowed: frozenset[Role], action: str) -> None:
        if not self.has_any(allowed):
            needed = " or ".join(sorted(r.value for r in allowed | {Role.ADMIN}))
            raise PermissionDenied(
                f"{action} needs the role {needed}; this key has "
                f"{', '.join(sorted(r.value for r in self.roles)) or 'no roles'}"
            )


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    tenant_id: str
    name: str
    principal: str
    roles: tuple[Role, ...]
    create_time: datetime
    revoke_time: datetime | None
    last_used_time: datetime | None


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    tenant_id: str
    principal: str
    roles: tuple[Role, ...]
    secret_hash: bytes
    revoked: bool


class KeyStore(Protocol):
    """Where tenants and keys live (PostgreSQL in production)."""

    async def ensure_tenant(self, tenant_id: str, name: str) -> None: ...

    async def tenant_exists(self, tenant_id: str) -> bool: ...

    async def insert_key(
        self,
        key_id: str,
        tenant_id: str,
        name: str,
        principal: str,
        roles: Sequence[Role],
        secret_hash: bytes,
    ) -> ApiKey: ...

    async def find_key(self, key_id: str, secret_hash: bytes) -> StoredKey | None:
        """The key `key_id`; its last use is recorded only when `secret_hash` is its hash
        and it is not revoked (a failed check must not look like a use)."""
        ...

    async def list_keys(self, tenant_id: str | None) -> list[ApiKey]: ...

    async def revoke_key(self, key_id: str) -> ApiKey | None: ...

    async def live_keys(self, key_ids: Sequence[str]) -> set[str]:
        """Those of `key_ids` that exist and are not revoked (one query for all)."""
        ...

    async def insert_first_key(
        self,
        key_id: str,
        tenant_id: str,
        name: str,
        principal: str,
        roles: Sequence[Role],
        secret_hash: bytes,
    ) -> ApiKey | None:
        """Insert the key only if the tenant has no key yet (atomic across processes)."""
        ...


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_roles(values: Sequence[str]) -> tuple[Role, ...]:
    roles: list[Role] = []
    for value in values:
        try:
            roles.append(Role(value.strip().lower()))
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise InvalidArgument.for_field(
                "roles", f"unknown role {value!r}; use {valid}"
            ) from None
    if not roles:
        raise InvalidArgument.for_field("roles", "at least one role is required")
    return tuple(dict.fromkeys(roles))


def validate_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID.match(tenant_id):
        raise InvalidArgument.for_field(
            "tenant", "use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return tenant_id


def validate_key_name(field: str, value: str) -> str:
    """A key's name or principal, without surrounding spaces: they are shown in tables and
    logs, so they must be short and hold no control characters."""
    value = value.strip()
    if not value:
        raise InvalidArgument.for_field(field, "a key needs a name that says who uses it")
    if len(value) > MAX_KEY_NAME_CHARS or not value.isprintable():
        raise InvalidArgument.for_field(
            field, f"use 1-{MAX_KEY_NAME_CHARS} printable characters (no control characters)"
        )
    return value


class RevocationWatch:
    """Tells the open streams of a key that it has been revoked.

    A revocation made in this process is seen at once. One made by another process (the
    CLI, another server) is seen by the next check: every `check_seconds`, while streams
    are open, ONE query asks which of their keys are still live, whatever the number of
    streams. A key that disappeared (its tenant was deleted) counts as revoked. When
    PostgreSQL cannot be reached, streams stay open and the next check tries again."""

    def __init__(self, store: KeyStore, check_seconds: float) -> None:
        self._store = store
        self._check_seconds = check_seconds
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_revoked: Callable[[str], None] | None = None

    @contextlib.contextmanager
    def watch(self, key_id: str, on_revoked: Callable[[], None]) -> Iterator[None]:
        """Call `on_revoked` (once, from another task) if `key_id` is revoked while
        the block runs."""
        self._watchers.setdefault(key_id, set()).add(on_revoked)
        if self._task is None or self._task.done():
            # A context of its own: not the first stream's (its request id in every log line).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        try:
            yield
        finally:
            callbacks = self._watchers.get(key_id)
            if callbacks is not None:
                callbacks.discard(on_revoked)
                if not callbacks:
                    del self._watchers[key_id]

    def revoked(self, key_id: str) -> None:
        callbacks = self._watchers.pop(key_id, None)
        if self.on_revoked is not None:
            self.on_revoked(key_id)
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("ending a stream of a revoked key failed")

    async def check(self) -> None:
        """Ask once which watched keys are still live; end the streams of the others."""
        watched = list(self._watchers)
        if not watched:
            return
        live = await self._store.live_keys(watched)
        for key_id in watched:
            if key_id not in live:
                self.revoked(key_id)

    async def _run(self) -> None:
        # Ends by itself when no stream is left; the next stream starts it again.
        while self._watchers:
            await asyncio.sleep(self._check_seconds)
            try:
                await self.check()
            except Exception as exc:
                log.warning("cannot check the keys of open streams: %s", exc)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class KeyManager:
    """Creates, verifies and revokes API keys; verified keys are cached briefly, and the
    keys of open streams are checked every `check_seconds` (see RevocationWatch)."""

    def __init__(
        self, store: KeyStore, cache_seconds: float = 5.0, check_seconds: float = 5.0
    ) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, str, Principal]] = {}
        self.revocations = RevocationWatch(store, check_seconds)
        # A revocation seen by a stream check is also one that new calls must not miss.
        self.revocations.on_revoked = self._forget

    async def create(
        self, tenant_id: str, name: str, roles: Sequence[str], principal: str | None = None
    ) -> tuple[ApiKey, str]:
        """Returns the stored key and the full token, which is never shown again."""
        validate_tenant_id(tenant_id)
        parsed = parse_roles(roles)
        name = validate_key_name("name", name)
        principal = validate_key_name("principal", principal) if principal else name
        await self._store.ensure_tenant(tenant_id, tenant_id)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        stored = await self._store.insert_key(
            key_id, tenant_id, name, principal, parsed, hash_secret(secret)
        )
        return stored, f"{KEY_PREFIX}_{key_id}_{secret}"

    async def authenticate(self, token: str) -> Principal:
        match = _KEY_RE.match(token)
        if match is None:
            raise Unauthenticated(
                "malformed API key: send `authorization: Bearer cvg_<id>_<secret>`"
            )
        key_id, secret = match.groups()
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now and hmac.compare_digest(cached[1], token):
            return cached[2]
        secret_hash = hash_secret(secret)
        stored = await self._store.find_key(key_id, secret_hash)
        if stored is None or not hmac.compare_digest(stored.secret_hash, secret_hash):
            raise Unauthenticated("unknown API key")
        if stored.revoked:
            raise Unauthenticated("this API key has been revoked")
        principal = Principal(stored.tenant_id, stored.principal, frozenset(stored.roles), key_id)
        if self._cache_seconds > 0:
            self._cache[key_id] = (now + self._cache_seconds, token, principal)
        return principal

    async def list(self, tenant_id: str | None = None) -> list[ApiKey]:
        if tenant_id is not None:
            validate_tenant_id(tenant_id)
        return await self._store.list_keys(tenant_id)

    async def revoke(self, key_id: str) -> ApiKey:
        revoked = await self._store.revoke_key(key_id)
        if revoked is None:
            raise NotFound(f"no API key with id {key_id!r}")
        self.revocations.revoked(key_id)
        return revoked

    def _forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def close(self) -> None:
        await self.revocations.close()

    async def bootstrap(self, tenant_id: str) -> str | None:
        """Create the development tenant's first admin key if it has none; return its token."""
        validate_tenant_id(tenant_id)
        await self._store.ensure_tenant(tenant_id, tenant_id)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        created = await self._store.insert_first_key(
            key_id, tenant_id, "bootstrap admin", "admin", (Role.ADMIN,), hash_secret(secret)
        )
        return None if created is None else f"{KEY_PREFIX}_{key_id}_{secret}"
