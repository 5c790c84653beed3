"""Request-id records in PostgreSQL: a mutation repeated with the same
`request_id` returns the first result instead of acting twice.

A record lasts `RETENTION` from its first call. Past that it is treated as absent at once,
whether or not the periodic cleanup (`delete_expired`) has deleted it yet, so that how long a
request id is remembered does not depend on when the cleanup last ran."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from convergio_server.domain.errors import Aborted

_WAIT_STEP = 0.05
# A record vanishes between claim and read only when its first call fails (or it expires) at
# that moment; one more attempt settles that, a few more cover bad luck.
_CLAIM_ATTEMPTS = 5
# What the API promises for a repeated request_id (common.proto: "remembered for at least 24
# hours"), counted from the first call's claim with PostgreSQL's clock.
RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Recorded:
    request_hash: bytes
    response: bytes | None  # None while the first call is still running, or if it failed
    error: dict[str, Any] | None = None  # the first call's definitive error, encoded

    @property
    def finished(self) -> bool:
        return self.response is not None or self.error is not None


class PgIdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, retention: timedelta = RETENTION) -> None:
        self._pool = pool
        self.retention = retention

    async def claim(
        self, tenant_id: str, method: str, request_id: str, request_hash: bytes
    ) -> Recorded | None:
        """Claim the request id; None if claimed now, else what the first call recorded."""
        for _ in range(_CLAIM_ATTEMPTS):
            # An expired record is taken over in the same statement as a new claim: the row
            # lock makes one of two calls racing for it the first call, the other its repeat.
            row = await self._pool.fetchrow(
                """INSERT INTO idempotency_keys AS k
                       (tenant_id, method, request_id, request_hash, status)
                   VALUES ($1, $2, $3, $4, 'pending')
                   ON CONFLICT (tenant_id, method, request_id) DO UPDATE
                   SET request_hash = EXCLUDED.request_hash, response = NULL, error = NULL,
                       status = 'pending', create_time = now()
                   WHERE k.create_time <= now() - $5::interval
                   RETURNING 1""",
                tenant_id,
                method,
                request_id,
                request_hash,
                self.retention,
            )
            if row is not None:
                return None
            recorded = await self.get(tenant_id, method, request_id)
            # Gone between the two statements (released by its failed first call, or expired
            # just now): claim again rather than act without a claim.
            if recorded is not None:
                return recorded
        raise Aborted("the record of this request_id kept changing while it was read; retry")

    async def get(self, tenant_id: str, method: str, request_id: str) -> Recorded | None:
        """What the first call recorded; None if there is no record or it has expired."""
        row = await self._pool.fetchrow(
            """SELECT request_hash, response, error, status FROM idempotency_keys
               WHERE tenant_id = $1 AND method = $2 AND request_id = $3
                 AND create_time > now() - $4::interval""",
            tenant_id,
            method,
            request_id,
            self.retention,
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

    async def delete_expired(self, limit: int) -> int:
        """Delete up to `limit` records past their retention, oldest first; how many went.

        One bounded statement holds its row locks briefly. Rows another process is deleting
        or taking over are skipped, not waited for."""
        # By ctid, which cannot change while the subquery holds the row lock: the rows are
        # then found by their address, not by a join the planner might make a table scan.
        status = await self._pool.execute(
            """DELETE FROM idempotency_keys
               WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM idempotency_keys
                   WHERE create_time <= now() - $1::interval
                   ORDER BY create_time
                   LIMIT $2
                   FOR UPDATE SKIP LOCKED))""",
            self.retention,
            limit,
        )
        return int(status.rsplit(" ", 1)[-1])
