"""Request ids are remembered for 24 hours: a repeat within them gets the first result, a
later one acts anew, and every process's cleanup deletes the expired records in batches,
through an index, going on by itself once PostgreSQL is back. Records are aged by moving
their creation time back in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest
from convergio import AsyncClient
from convergio.errors import Aborted
from convergio.workflow.v1 import workflow_pb2
from convergio_server.api.idempotency import ExpiredRequestIds, once
from convergio_server.domain import errors as de
from convergio_server.storage.idempotency import RETENTION, PgIdempotencyStore

from tests.flags.support import flag
from tests.platform.procs import free_port
from tests.platform.test_platform_request_ids import Counted
from tests.support.server import RunningServer

Response = workflow_pb2.StartExecutionResponse
MakeKey = Callable[..., Awaitable[str]]
METHOD = "test/Expiry"
YOUNG = RETENTION - timedelta(hours=1)
OLD = RETENTION + timedelta(hours=1)


@pytest.fixture
async def tenant(make_key: MakeKey) -> str:
    """A tenant of its own, so that its records are this test's alone."""
    tenant_id = f"rid-{secrets.token_hex(4)}"
    await make_key("member", tenant=tenant_id)
    return tenant_id


def _request(request_id: str = "", workflow: str = "w") -> workflow_pb2.StartExecutionRequest:
    return workflow_pb2.StartExecutionRequest(
        request_id=request_id or f"rid-{secrets.token_hex(6)}", workflow_id=workflow
    )


async def _once(
    store: PgIdempotencyStore,
    tenant: str,
    request: workflow_pb2.StartExecutionRequest,
    act: Counted,
) -> Response:
    return await once(store, tenant, METHOD, request, Response, act)


async def _age(pool: asyncpg.Pool, tenant: str, request_ids: list[str], age: timedelta) -> None:
    await pool.execute(
        """UPDATE idempotency_keys SET create_time = now() - $3::interval
           WHERE tenant_id = $1 AND request_id = ANY($2::text[])""",
        tenant,
        request_ids,
        age,
    )


async def _kept(pool: asyncpg.Pool, tenant: str) -> set[str]:
    rows = await pool.fetch("SELECT request_id FROM idempotency_keys WHERE tenant_id = $1", tenant)
    return {str(row["request_id"]) for row in rows}


def test_the_retention_is_what_the_api_promises() -> None:
    assert RETENTION.total_seconds() == 24 * 3600


async def test_a_repeat_within_the_retention_gets_the_first_result(
    server: RunningServer, tenant: str
) -> None:
    store = PgIdempotencyStore(server.infra.pool)
    answered, refused = _request(), _request()
    act = Counted()
    first = await _once(store, tenant, answered, act)
    conflict = de.Aborted("another change won", metadata={"current_version": "2"})
    refusing = Counted(conflict)
    with pytest.raises(de.Aborted):
        await _once(store, tenant, refused, refusing)
    await _age(server.infra.pool, tenant, [answered.request_id, refused.request_id], YOUNG)

    assert await _once(store, tenant, answered, act) == first
    with pytest.raises(de.Aborted) as again:
        await _once(store, tenant, refused, refusing)
    assert again.value == conflict
    # A different request under the same id is still refused.
    with pytest.raises(de.InvalidArgument):
        await _once(store, tenant, _request(answered.request_id, "other"), act)
    assert (act.calls, refusing.calls) == (1, 1)


async def test_an_expired_request_id_is_new_before_the_cleanup_deletes_it(
    server: RunningServer, tenant: str
) -> None:
    pool = server.infra.pool
    store = PgIdempotencyStore(pool)
    answered, refused, other = _request(), _request(), _request()
    act = Counted()
    assert (await _once(store, tenant, answered, act)).execution.execution_id == "run-1"
    refusing = Counted(de.NotFound("no such thing"))
    with pytest.raises(de.NotFound):
        await _once(store, tenant, refused, refusing)
    await _once(store, tenant, other, Counted())
    await _age(pool, tenant, [answered.request_id, refused.request_id, other.request_id], OLD)
    assert await _kept(pool, tenant) == {
        answered.request_id,
        refused.request_id,
        other.request_id,
    }
    assert await store.get(tenant, METHOD, answered.request_id) is None

    # Acts again, and what it answers now is the answer of the next 24 hours.
    renewed = await _once(store, tenant, answered, act)
    assert renewed.execution.execution_id == "run-2"
    assert await _once(store, tenant, answered, act) == renewed
    assert act.calls == 2
    # A recorded error is forgotten too.
    assert (await _once(store, tenant, refused, refusing)).execution.execution_id == "run-2"
    # So is the request it was recorded for: another request may use the id.
    changed = _request(other.request_id, "other")
    assert (await _once(store, tenant, changed, Counted())).execution.execution_id == "run-1"
    # Their records were renewed, not deleted by the cleanup.
    await ExpiredRequestIds(store).run()
    assert await _kept(pool, tenant) == {
        answered.request_id,
        refused.request_id,
        other.request_id,
    }


async def test_an_expired_claim_of_a_call_that_never_ended_is_free(
    server: RunningServer, tenant: str
) -> None:
    """A process that died during the first call leaves its claim pending, which repeats
    wait for (and are ABORTED) while it is remembered; once it has expired, a repeat acts."""
    store = PgIdempotencyStore(server.infra.pool)
    request = _request()
    assert await store.claim(tenant, METHOD, request.request_id, b"hash") is None
    pending = await store.get(tenant, METHOD, request.request_id)
    assert pending is not None and not pending.finished
    await _age(server.infra.pool, tenant, [request.request_id], OLD)
    act = Counted()
    first = await _once(store, tenant, request, act)
    assert first.execution.execution_id == "run-1"
    assert await _once(store, tenant, request, act) == first
    assert act.calls == 1


class Counting:
    """The store, with the number of rows each of its deletes took."""

    def __init__(self, store: PgIdempotencyStore) -> None:
        self.store = store
        self.deleted: list[int] = []

    async def delete_expired(self, limit: int) -> int:
        count = await self.store.delete_expired(limit)
        self.deleted.append(count)
        return count


async def test_the_cleanup_deletes_expired_records_in_batches_and_keeps_younger_ones(
    server: RunningServer, tenant: str
) -> None:
    pool = server.infra.pool
    store = PgIdempotencyStore(pool)
    requests = [_request() for _ in range(7)]
    for request in requests:
        await _once(store, tenant, request, Counted())
    expired = [r.request_id for r in requests[:5]]
    young = [r.request_id for r in requests[5:]]
    await _age(pool, tenant, expired, OLD)
    await _age(pool, tenant, young, YOUNG)

    counting = Counting(store)
    deleted = await ExpiredRequestIds(counting, batch=2).run()
    assert await _kept(pool, tenant) == set(young)
    # Never more than a batch per statement, and on until a batch is not full. (The server's
    # own cleanup may have deleted some of them first, hence no exact counts.)
    assert deleted == sum(counting.deleted)
    assert all(count == 2 for count in counting.deleted[:-1])
    assert counting.deleted[-1] < 2
    # The younger ones still answer with their first result.
    act = Counted()
    await _once(store, tenant, requests[5], act)
    assert act.calls == 0


async def test_the_cleanup_finds_expired_records_through_an_index(server: RunningServer) -> None:
    class Recording:
        def __init__(self) -> None:
            self.statements: list[tuple[str, tuple[Any, ...]]] = []

        async def execute(self, sql: str, *args: Any) -> str:
            self.statements.append((sql, args))
            return "DELETE 0"

    recording = Recording()
    await PgIdempotencyStore(cast(asyncpg.Pool, recording)).delete_expired(1000)
    ((sql, args),) = recording.statements
    async with server.infra.pool.acquire() as conn, conn.transaction():
        # A small test table is cheapest read whole; what matters is that an index fits.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = json.dumps(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    assert "idempotency_keys_create_time_idx" in plan


class Switchable:
    """A store that is unreachable until it is switched to the real one."""

    def __init__(self, down: PgIdempotencyStore) -> None:
        self.current = down
        self.calls = 0

    async def delete_expired(self, limit: int) -> int:
        self.calls += 1
        return await self.current.delete_expired(limit)


async def test_the_cleanup_goes_on_after_postgres_was_unreachable(
    server: RunningServer, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = server.infra.pool
    store = PgIdempotencyStore(pool)
    request = _request()
    await _once(store, tenant, request, Counted())
    await _age(pool, tenant, [request.request_id], OLD)
    nowhere = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", min_size=0
    )
    switchable = Switchable(PgIdempotencyStore(nowhere))
    cleanup = ExpiredRequestIds(switchable, interval_seconds=0.01)
    caplog.set_level(logging.INFO, logger="convergio_server.api.idempotency")
    await cleanup.start()
    try:
        async with asyncio.timeout(30):
            while cleanup.failures < 5:  # noqa: ASYNC110 - waiting for the loop's runs
                await asyncio.sleep(0.01)
        # Logged once, not once per run.
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.WARNING
        switchable.current = store
        async with asyncio.timeout(30):
            while cleanup.failures:  # noqa: ASYNC110 - waiting for the loop's runs
                await asyncio.sleep(0.01)
        assert request.request_id not in await _kept(pool, tenant)
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        await cleanup.stop()
        await nowhere.close()
    calls = switchable.calls
    await asyncio.sleep(0.05)
    assert switchable.calls == calls  # stopped


async def test_every_server_runs_the_cleanup(server: RunningServer) -> None:
    assert server.server.context.expired_request_ids.running


async def test_a_retried_api_call_gets_its_first_result_until_the_request_id_expires(
    server: RunningServer, make_key: MakeKey
) -> None:
    tenant = f"rid-{secrets.token_hex(4)}"
    key = await make_key("operator", tenant=tenant)
    pool = server.infra.pool
    async with AsyncClient(server.target, api_key=key) as client:
        wanted = flag("rid.expiry", "on")
        first = await client.flags.upsert_flag(
            flag=wanted, expected_version=0, request_id="rid-expiry"
        )
        assert first.created and first.flag.version == 1

        await _age(pool, tenant, ["rid-expiry"], YOUNG)
        again = await client.flags.upsert_flag(
            flag=wanted, expected_version=0, request_id="rid-expiry"
        )
        assert again == first

        # Expired: the same request is a new one, refused as the flag exists by now.
        await _age(pool, tenant, ["rid-expiry"], OLD)
        with pytest.raises(Aborted) as caught:
            await client.flags.upsert_flag(flag=wanted, expected_version=0, request_id="rid-expiry")
        assert caught.value.reason == "VERSION_CONFLICT"
        assert (await client.flags.get_flag(key="rid.expiry")).flag.version == 1
