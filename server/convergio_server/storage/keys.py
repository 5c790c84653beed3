"""PostgreSQL implementation of the domain's KeyStore."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from convergio_server.domain.auth import ApiKey, Role, StoredKey

_KEY_COLUMNS = "key_id, tenant_id, name, principal, roles, create_time, revoke_time, last_used_time"


def _to_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        principal=row["principal"],
        roles=tuple(Role(r) for r in row["roles"]),
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
        last_used_time=row["last_used_time"],
    )


class PgKeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure_tenant(self, tenant_id: str, name: str) -> None:
        await self._pool.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            tenant_id,
            name,
        )

    async def tenant_exists(self, tenant_id: str) -> bool:
        return bool(await self._pool.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id))

    async def insert_key(
        self,
        key_id: str,
        tenant_id: str,
        name: str,
        principal: str,
        roles: Sequence[Role],
        secret_hash: bytes,
    ) -> ApiKey:
        row = await self._pool.fetchrow(
            f"""INSERT INTO api_keys (key_id, tenant_id, name, principal, roles, secret_hash)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_KEY_COLUMNS}""",
            key_id,
            tenant_id,
            name,
            principal,
            [r.value for r in roles],
            secret_hash,
        )
        assert row is not None
        return _to_key(row)

    async def insert_first_key(
        self,
        key_id: str,
        tenant_id: str,
        name: str,
        principal: str,
        roles: Sequence[Role],
        secret_hash: bytes,
    ) -> ApiKey | None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialises concurrent first starts so only one bootstrap key is made.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('convergio:bootstrap:' || $1))", tenant_id
            )
            if await conn.fetchval(
                "SELECT 1 FROM api_keys WHERE tenant_id = $1 LIMIT 1", tenant_id
            ):
                return None
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys (key_id, tenant_id, name, principal, roles, secret_hash)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_KEY_COLUMNS}""",
                key_id,
                tenant_id,
                name,
                principal,
                [r.value for r in roles],
                secret_hash,
            )
            return None if row is None else _to_key(row)

    async def find_key(self, key_id: str, secret_hash: bytes) -> StoredKey | None:
        # One statement: the use is recorded in the same round trip as the look-up, and
        # only when the secret is right and the key live (the SELECT sees the row as it was
        # before the UPDATE, which is all it needs). Comparing hashes of 256-bit secrets in
        # SQL leaks nothing usable; the domain still decides with a constant-time compare.
        row = await self._pool.fetchrow(
            """WITH used AS (
                   UPDATE api_keys SET last_used_time = now()
                   WHERE key_id = $1 AND secret_hash = $2 AND revoke_time IS NULL
                   RETURNING key_id
               )
               SELECT key_id, tenant_id, principal, roles, secret_hash, revoke_time
               FROM api_keys WHERE key_id = $1""",
            key_id,
            secret_hash,
        )
        if row is None:
            return None
        return StoredKey(
            key_id=row["key_id"],
            tenant_id=row["tenant_id"],
            principal=row["principal"],
            roles=tuple(Role(r) for r in row["roles"]),
            secret_hash=bytes(row["secret_hash"]),
            revoked=row["revoke_time"] is not None,
        )

    async def list_keys(self, tenant_id: str | None) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"""SELECT {_KEY_COLUMNS} FROM api_keys
                WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, create_time""",
            tenant_id,
        )
        return [_to_key(r) for r in rows]

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow(
            f"""UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE key_id = $1
                RETURNING {_KEY_COLUMNS}""",
            key_id,
        )
        return None if row is None else _to_key(row)

    async def live_keys(self, key_ids: Sequence[str]) -> set[str]:
        rows = await self._pool.fetch(
            "SELECT key_id FROM api_keys WHERE key_id = ANY($1::text[]) AND revoke_time IS NULL",
            list(key_ids),
        )
        return {row["key_id"] for row in rows}
