"""The ledger is written in batches and nothing is lost at graceful shutdown; budget guards
fail closed (UNAVAILABLE) when Redis is unreachable and recover when it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from autogen_core.models import UserMessage
from convergio import AsyncClient, errors
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ledger import LedgerEntry, LedgerWriter
from convergio_server.domain.costs.prices import ModelPrice
from convergio_server.domain.errors import Unavailable
from convergio_server.domain.guards import CallInfo
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.storage.costs import PgCostStore
from convergio_server.storage.embedded import EmbeddedRedis

from tests.costs.costs_support import new_scope
from tests.support.server import RunningServer, running_server, server_settings


def entry(tenant: str, i: int) -> LedgerEntry:
    return LedgerEntry(
        entry_id=str(uuid.uuid4()), tenant_id=tenant, time=datetime.now(UTC), principal="alice",
        conversation_id="c", turn_id=f"t{i}", execution_id="", step_id="", agent="amy",
        provider="openai", model="gpt-4o-mini", call_kind="AGENT_REPLY", prompt_tokens=100,
        completion_tokens=50, cached_tokens=0, cost_usd=Decimal("0.000045"), price_source="TABLE",
        price=ModelPrice(Decimal("0.15"), Decimal("0.60"), Decimal("0.075")), latency_ms=12,
        outcome="OK",
    )  # fmt: skip


async def rows(server: RunningServer, tenant: str) -> int:
    count = await server.infra.pool.fetchval(
        "SELECT count(*) FROM cost_ledger WHERE tenant_id = $1", tenant
    )
    return int(count)


async def test_entries_wait_for_a_batch_and_close_writes_them_all(
    server: RunningServer, tenant: str
) -> None:
    writer = LedgerWriter(PgCostStore(server.infra.pool), flush_interval=3600, batch_size=1000)
    for i in range(250):
        writer.add(entry(tenant, i))
    await asyncio.sleep(0.2)
    assert await rows(server, tenant) == 0  # off the streaming path: nothing written yet
    assert writer.pending == 250
    await writer.close()
    assert await rows(server, tenant) == 250 and writer.pending == 0


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    server: RunningServer, tenant: str
) -> None:
    writer = LedgerWriter(PgCostStore(server.infra.pool), flush_interval=3600, batch_size=100)
    try:
        for i in range(100):
            writer.add(entry(tenant, i))
        for _ in range(200):
            if await rows(server, tenant) == 100:
                break
            await asyncio.sleep(0.02)
        assert await rows(server, tenant) == 100
    finally:
        await writer.close()


async def test_graceful_shutdown_loses_no_ledger_entry(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    server: RunningServer,
    tenant: str,
) -> None:
    settings = server_settings(
        tmp_path_factory.mktemp("ledger-shutdown"), pg_dsn, redis_url, redis_prefix,
        ledger_flush_interval_seconds=3600,
    )  # fmt: skip
    async with running_server(settings) as other:
        guards = other.server.context.components["guards"]
        assert isinstance(guards, CostGuards)
        for _ in range(30):
            client = guards.wrap_model_client(
                OfflineChatCompletionClient(),
                CallInfo(new_scope(tenant), "amy", "openai", "gpt-4o-mini", "agent_reply"),
            )
            await client.create([UserMessage(content="Forecast Q4 cash flow.", source="alice")])
        assert guards.ledger.pending == 30 and await rows(server, tenant) == 0
    assert await rows(server, tenant) == 30


@pytest.fixture
async def redis_outage_server(
    tmp_path_factory: pytest.TempPathFactory, pg_dsn: str
) -> AsyncIterator[tuple[RunningServer, EmbeddedRedis]]:
    """A server on a Redis of its own, which the test stops and starts."""
    redis_dir = tmp_path_factory.mktemp("cost-outage-redis")
    private = EmbeddedRedis(redis_dir)
    await asyncio.to_thread(private.start)
    settings = server_settings(
        tmp_path_factory.mktemp("cost-outage"), pg_dsn, private.url, "cvgtest-outage"
    )
    try:
        async with running_server(settings) as running:
            yield running, private
    finally:
        await asyncio.to_thread(private.stop)


async def test_redis_unreachable_fails_closed_with_a_clear_reason(
    redis_outage_server: tuple[RunningServer, EmbeddedRedis], tenant: str
) -> None:
    running, private = redis_outage_server
    guards = running.server.context.components["guards"]
    assert isinstance(guards, CostGuards)
    await guards.admit_turn(new_scope(tenant, "olga"), "before the outage")
    await asyncio.to_thread(private.stop)
    try:
        with pytest.raises(Unavailable) as refused:
            await guards.admit_turn(new_scope(tenant, "olga"), "during the outage")
        assert refused.value.metadata["dependency"] == "redis"
        assert "budgets" in refused.value.message and "Redis" in refused.value.message
        model = guards.wrap_model_client(
            OfflineChatCompletionClient(),
            CallInfo(new_scope(tenant, "olga"), "amy", "openai", "gpt-4o-mini", "agent_reply"),
        )
        with pytest.raises(Unavailable):  # no model call without a reservation
            await model.create([UserMessage(content="Anything", source="olga")])
        with pytest.raises(Unavailable):
            await guards.conversation_created(new_scope(tenant, "olga").principal)
        async with AsyncClient(running.target, api_key=running.admin_key) as admin:
            with pytest.raises(errors.Unavailable):
                await admin.costs.get_rate_limit_status()
    finally:
        await asyncio.to_thread(private.start)
    for _ in range(100):  # the client reconnects by itself
        try:
            await guards.admit_turn(new_scope(tenant, "olga-after"), "after the outage")
            break
        except Unavailable:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the guards did not recover after Redis came back")


async def test_a_row_postgres_refuses_does_not_hold_back_the_others(
    server: RunningServer, tenant: str
) -> None:
    writer = LedgerWriter(PgCostStore(server.infra.pool), flush_interval=3600, batch_size=1000)
    writer.add(entry(tenant, 1))
    writer.add(entry(f"no-such-tenant-{uuid.uuid4().hex[:6]}", 2))  # violates the tenant key
    writer.add(entry(tenant, 3))
    await writer.flush()
    assert await rows(server, tenant) == 2 and writer.pending == 0
    await writer.close()
