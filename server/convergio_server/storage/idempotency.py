"""Request-id records in PostgreSQL: a mutation repeated with the same
`request_id` returns the first result instead of acting twice."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

_WAIT_STEP = 0.05


@dataclass(frozen=True)
class Recorded:
    request_hash: bytes
    response: bytes | None  # None while the first call is still running, or if it failed
    error: dict[str, Any] | None = None  # the first call's definitive error, encoded

    @property
    def finished(self) -> bool:
        return self.response is not None or self.error is not None


class PgIdempotencyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, tenant_id: str, method: str, request_id: str, request_hash: bytes
    ) -> Recorded | None:
        """Claim the request id; None if claimed now, else what the first call recorded."""
        row = await self._pool.fetchrow(
            """INSERT INTO idempotency_keys (tenant_id, method, request_id, request_hash, status)
               VALUES ($1, $2, $3, $4, 'pending')
               ON CONFLICT (tenant_id, method, request_id) DO NOTHING
               RETURNING 1""",
            tenant_id,
            method,
            request_id,
            request_hash,
        )
        if row is not None:
            return None
        return await self.get(tenant_id, method, request_id)

    async def get(self, tenant_id: str, method: str, request_id: str) -> Recorded | None:
        row = await self._pool.fetchrow(
            """SELECT request_hash, response, error, status FROM idempotency_keys
               WHERE tenant_id = $1 AND method = $2 AND request_id = $3""",
            tenant_id,
            method,
            request_id,
        )
        if row is None:
            return None
        response = bytes(row["response"]) if row["status"] == "done" else None
        error = json.loads(row["error"]) if row["status"] == "failed" else None
        return Recorded(bytes(row["request_hash"]), response, error)

    async def wait(
        self, tenant_id: str, method: str, request_id: str, limit_seconds: float
    ) -> Recorded | None:
        """Poll until the first call finishes or `limit_seconds` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_seconds
        while True:
            recorded = await self.get(tenant_id, method, request_id)
            if recorded is None or recorded.finished or loop.time() >= deadline:
                return recorded
            await asyncio.sleep(_WAIT_STEP)

    async def complete(self, tenant_id: str, method: str, request_id: str, response: bytes) -> None:
        await self._pool.execute(
            """UPDATE idempotency_keys SET response = $4, status = 'done'
               WHERE tenant_id = $1 AND method = $2 AND request_id = $3""",
            tenant_id,
            method,
            request_id,
            response,
        )

    async def fail(
        self, tenant_id: str, method: str, request_id: str, error: dict[str, Any]
    ) -> None:
        """The first call ended with a definitive error: repeats get the same error."""
        await self._pool.execute(
            """UPDATE idempotency_keys SET error = $4::jsonb, status = 'failed'
               WHERE tenant_id = $1 AND method = $2 AND request_id = $3""",
            tenant_id,
            method,
            request_id,
            json.dumps(error),
        )

    async def release(self, tenant_id: str, method: str, request_id: str) -> None:
        """The first call failed: forget the claim so a retry can act."""
        await self._pool.execute(
            """DELETE FROM idempotency_keys
               WHERE tenant_id = $1 AND method = $2 AND request_id = $3 AND status = 'pending'""",
            tenant_id,
            method,
            request_id,
        )
