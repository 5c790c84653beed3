"""The in-process cache: a lost notification is repaired by the reload on reconnect, a store
that cannot be reached leaves the last known values (never "everything on"), the
FeatureGate the platform calls, and the flags file imported at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from convergio import AsyncClient
from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.features import COST_SAFETY, GRAPHFLOW, HITL, RAG_IN_LOOP
from convergio_server.domain.flags.gate import CacheFeatureGate, groups_from_labels
from convergio_server.domain.flags.model import EvalContext, FlagSpec, Reason, Strategy
from convergio_server.domain.flags.service import FlagManager
from convergio_server.storage.flags import PgFlagStore, RedisChangeBus
from convergio_server.storage.postgres import create_pool
from convergio_server.storage.redis import Keys, create_redis

from tests.flags.support import new_tenant
from tests.support.server import RunningServer, running_server, server_settings


@dataclass
class Own:
    manager: FlagManager
    pool: asyncpg.Pool
    redis: aioredis.Redis
    dsn: str


@pytest.fixture
async def own(
    server: RunningServer, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Own]:
    """A FlagManager with its own connections (so the test can cut them), on the server's
    database and notification channel."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    redis = create_redis(redis_url)
    channel = Keys(redis_prefix).k("flags", "changes")
    manager = FlagManager(PgFlagStore(pool), RedisChangeBus(redis, channel), reload_seconds=3600)
    await manager.start()
    assert await manager.wait_connected(30)
    try:
        yield Own(manager, pool, redis, pg_dsn)
    finally:
        await manager.stop()
        if not pool.is_closing():
            await pool.close()
        await redis.aclose()


async def _tenant(make_key: Callable[..., Awaitable[str]]) -> str:
    tenant = new_tenant()
    await make_key("member", tenant=tenant)
    return tenant


ARRIVAL_TIMEOUT = 30.0


async def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_lost_notification_is_repaired_on_reconnect(
    server: RunningServer, own: Own, make_key: Callable[..., Awaitable[str]]
) -> None:
    tenant = await _tenant(make_key)
    await own.manager.ensure_tenant(tenant)
    assert own.manager.cache.compiled(tenant, RAG_IN_LOOP) is not None
    # A change committed without its notification (as if Redis lost it).
    silent = PgFlagStore(server.infra.pool)
    spec = FlagSpec(RAG_IN_LOOP, enabled=True, strategy=Strategy.PERCENTAGE, percentage=100.0)
    await silent.upsert(tenant, spec, 1, "ghost", "", "")
    await asyncio.sleep(0.2)
    compiled = own.manager.cache.compiled(tenant, RAG_IN_LOOP)
    assert compiled is not None and compiled.version == 1  # nobody told this process

    await own.redis.connection_pool.disconnect()  # the pub/sub connection drops
    assert await _eventually(
        lambda: getattr(own.manager.cache.compiled(tenant, RAG_IN_LOOP), "version", 0) == 2
    )
    assert own.manager.cache.evaluate(tenant, RAG_IN_LOOP, EvalContext("ann")).value


async def test_unreachable_store_keeps_last_known_values(
    own: Own, make_key: Callable[..., Awaitable[str]]
) -> None:
    tenant = await _tenant(make_key)
    await own.manager.ensure_tenant(tenant)
    gate = CacheFeatureGate(own.manager)
    ann = Principal(tenant, "ann", frozenset({Role.MEMBER}), "k")
    before = {
        k: gate.enabled(ann, k, groups=("enterprise",))
        for k in (RAG_IN_LOOP, GRAPHFLOW, HITL, COST_SAFETY)
    }
    assert before[GRAPHFLOW] and before[COST_SAFETY] and not before[HITL]

    await own.pool.close()  # PostgreSQL is gone for this process...
    await own.redis.connection_pool.disconnect()  # ...and its reload after reconnect fails
    assert await _eventually(lambda: own.manager.cache.stale)
    after = {k: gate.enabled(ann, k, groups=("enterprise",)) for k in before}
    assert after == before
    result = own.manager.cache.evaluate(tenant, COST_SAFETY, EvalContext("ann"))
    assert result.value and result.reason is Reason.STALE


async def test_answers_are_stale_while_the_store_cannot_be_reached(
    own: Own, make_key: Callable[..., Awaitable[str]]
) -> None:
    # Only PostgreSQL is gone (notifications still arrive): the periodic reload fails, and
    # answers say they come from the last known flags until a reload works again.
    tenant = await _tenant(make_key)
    await own.manager.ensure_tenant(tenant)
    await own.manager.refresh()
    assert not own.manager.cache.stale
    await own.pool.close()
    await own.manager.refresh()
    result = own.manager.cache.evaluate(tenant, COST_SAFETY, EvalContext("ann"))
    assert result.value and result.reason is Reason.STALE
    pool = await create_pool(own.dsn, min_size=1, max_size=2)
    own.manager.store = PgFlagStore(pool)  # PostgreSQL is back
    try:
        await own.manager.refresh()
        fresh = own.manager.cache.evaluate(tenant, COST_SAFETY, EvalContext("ann"))
        assert fresh.value and fresh.reason is not Reason.STALE
    finally:
        await pool.close()


async def test_gate_for_a_tenant_not_loaded_yet_uses_the_defaults(own: Own) -> None:
    gate = CacheFeatureGate(own.manager)
    stranger = Principal("flags-never-created", "bob", frozenset({Role.MEMBER}), "k")
    assert gate.enabled(stranger, COST_SAFETY)
    assert not gate.enabled(stranger, HITL)
    assert gate.enabled(stranger, GRAPHFLOW, groups=("enterprise",))
    assert not gate.enabled(stranger, GRAPHFLOW)
    assert not gate.enabled(stranger, "no_such_feature")


async def test_flags_file_is_imported_at_start(
    tmp_path: Path,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # At INFO, as a server logs by default (the import's log line once failed the start).
    caplog.set_level(logging.INFO, logger="convergio.flags")
    tenant = new_tenant()
    seed = tmp_path / "flags.json"
    seed.write_text(
        json.dumps(
            {
                "flags": {
                    "rag_in_loop": {"enabled": True, "strategy": "percentage", "percentage": 25.0},
                    "checkout": {
                        "enabled": True,
                        "strategy": "whitelist",
                        "whitelist_users": ["ann"],
                    },
                }
            }
        )
    )
    for _ in range(2):  # a second start imports the same file: nothing changes
        settings = server_settings(
            tmp_path / "data",
            pg_dsn,
            redis_url,
            redis_prefix,
            flags_file=seed,
            flags_file_tenant=tenant,
        )
        async with running_server(settings) as running:
            key = await running.server.keys.create(tenant, "reader", ["member"])
            async with AsyncClient(running.target, api_key=key[1]) as client:
                flags = {f.key: f for f in (await client.flags.list_flags()).flags}
    imported = [r for r in caplog.records if r.getMessage() == "flags file imported"]
    assert [r.__dict__["flags_created"] for r in imported] == [1, 0]  # checkout, once
    assert flags["rag_in_loop"].percentage == 25.0 and flags["rag_in_loop"].version == 2
    assert list(flags["checkout"].users) == ["ann"] and flags["checkout"].version == 1

    seed.write_text(json.dumps({"flags": {"rag_in_loop": {"strategy": "often"}}}))
    settings = server_settings(
        tmp_path / "data",
        pg_dsn,
        redis_url,
        redis_prefix,
        flags_file=seed,
        flags_file_tenant=tenant,
    )
    with pytest.raises(ValueError, match=r"flags\.rag_in_loop\.strategy"):
        async with running_server(settings):
            pass


def test_groups_from_labels() -> None:
    assert groups_from_labels({"groups": "enterprise, beta_testers,,"}) == (
        "beta_testers",
        "enterprise",
    )
    assert groups_from_labels({"team": "x"}) == ()
