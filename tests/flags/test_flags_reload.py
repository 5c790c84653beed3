"""The periodic reload, the safety net for a lost notification: it picks up changes committed
without a notification, including one that commits after a later change, and tenants seeded
elsewhere; a store that has not changed is not read again (observed through the manager's
reload counters, with the real store)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.features import COST_SAFETY, HITL, RAG_IN_LOOP
from convergio_server.domain.flags.gate import CacheFeatureGate
from convergio_server.domain.flags.model import (
    ChangeKind,
    ErrorCode,
    EvalContext,
    FlagChange,
    FlagSpec,
    Reason,
    Strategy,
)
from convergio_server.domain.flags.service import FlagManager, SyncStats
from convergio_server.storage.flags import PgFlagStore, RedisChangeBus
from convergio_server.storage.postgres import create_pool
from convergio_server.storage.redis import Keys, create_redis

from tests.flags.support import new_tenant
from tests.support.server import RunningServer

ARRIVAL_TIMEOUT = 30.0
EVERYONE = FlagSpec(RAG_IN_LOOP, enabled=True, strategy=Strategy.PERCENTAGE, percentage=100.0)


@contextlib.asynccontextmanager
async def _manager(
    pg_dsn: str, redis_url: str, redis_prefix: str, reload_seconds: float = 3600.0
) -> AsyncIterator[FlagManager]:
    """A started FlagManager with connections of its own, on the server's database and
    notification channel (as another server process would be)."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    redis = create_redis(redis_url)
    channel = Keys(redis_prefix).k("flags", "changes")
    manager = FlagManager(
        PgFlagStore(pool), RedisChangeBus(redis, channel), reload_seconds=reload_seconds
    )
    try:
        await manager.start()
        assert await manager.wait_connected(30)
        yield manager
    finally:
        await manager.stop()
        await pool.close()
        await redis.aclose()


async def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _drain(queue: asyncio.Queue[FlagChange | None]) -> list[FlagChange]:
    changes: list[FlagChange] = []
    while not queue.empty():
        change = queue.get_nowait()
        assert change is not None
        changes.append(change)
    return changes


async def test_reload_reads_only_what_changed_and_nothing_when_nothing_did(
    server: RunningServer,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    make_key: Callable[..., Awaitable[str]],
) -> None:
    tenant = new_tenant()
    await make_key("member", tenant=tenant)
    async with _manager(pg_dsn, redis_url, redis_prefix) as manager:
        await manager.ensure_tenant(tenant)
        await manager.refresh()  # takes in what starting and seeding wrote
        quiet = dataclasses.replace(manager.stats)
        await manager.refresh()
        assert manager.stats == dataclasses.replace(
            quiet, unchanged_reloads=quiet.unchanged_reloads + 1
        )

        # Committed without notifications (as if Redis lost them).
        silent = PgFlagStore(server.infra.pool)
        with manager.cache.watch(tenant) as watcher:
            await silent.upsert(tenant, EVERYONE, 1, "ghost", "", "")
            await silent.delete(tenant, HITL, 0, "ghost", "", "")
            await asyncio.sleep(0.2)
            assert manager.cache.evaluate(tenant, HITL, EvalContext("ann")).error_code is None

            await manager.refresh()
            changes = _drain(watcher.queue)

        rag = manager.cache.evaluate(tenant, RAG_IN_LOOP, EvalContext("ann"))
        assert rag.value and rag.flag_version == 2 and rag.reason is Reason.SPLIT
        hitl = manager.cache.evaluate(tenant, HITL, EvalContext("ann"))
        assert hitl.error_code is ErrorCode.FLAG_NOT_FOUND
        assert sorted((c.flag.key, c.kind, c.flag.version) for c in changes) == [
            (HITL, ChangeKind.DELETED, 2),
            (RAG_IN_LOOP, ChangeKind.UPDATED, 2),
        ]
        # Only the two flags changed were read, not every flag of every tenant.
        assert manager.stats == dataclasses.replace(
            quiet,
            unchanged_reloads=quiet.unchanged_reloads + 1,
            incremental_reloads=quiet.incremental_reloads + 1,
            flags_read=quiet.flags_read + 2,
        )


@pytest.mark.parametrize("read_meanwhile", ["changes", "everything"])
async def test_a_change_committed_after_a_later_one_is_not_missed(
    server: RunningServer,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    make_key: Callable[..., Awaitable[str]],
    read_meanwhile: str,
) -> None:
    # Change seqs are taken when a write starts: a slow write holds a lower seq than a
    # change committed after it began, so "newer than the last seq read" alone misses it.
    tenant = new_tenant()
    await make_key("member", tenant=tenant)
    async with _manager(pg_dsn, redis_url, redis_prefix) as manager:
        await manager.ensure_tenant(tenant)
        await manager.refresh()
        slow = await asyncpg.connect(pg_dsn)
        try:
            transaction = slow.transaction()
            await transaction.start()
            # Turned off directly in PostgreSQL, as the store would, not committed yet.
            seq = await slow.fetchval(
                "INSERT INTO flag_history (tenant_id, key, version, kind, outcome, spec, "
                "expected_version, actor) SELECT tenant_id, key, version + 1, 'updated', "
                "'applied', jsonb_set(spec, '{enabled}', 'false'), version, 'slow' FROM flags "
                "WHERE tenant_id = $1 AND key = $2 RETURNING id",
                tenant,
                COST_SAFETY,
            )
            await slow.execute(
                "UPDATE flags SET spec = jsonb_set(spec, '{enabled}', 'false'), "
                "version = version + 1, update_time = now(), updated_by = 'slow', "
                "change_seq = $3 WHERE tenant_id = $1 AND key = $2",
                tenant,
                COST_SAFETY,
                seq,
            )
            await PgFlagStore(server.infra.pool).upsert(tenant, EVERYONE, 1, "quick", "", "")
            # (a full reload, as on a reconnect, must remember what it could not see too)
            await (manager.refresh() if read_meanwhile == "changes" else manager.reload())
            assert manager.cache.evaluate(tenant, RAG_IN_LOOP, EvalContext("ann")).value
            assert manager.cache.evaluate(tenant, COST_SAFETY, EvalContext("ann")).value
            await transaction.commit()
        finally:
            await slow.close()

        await manager.refresh()
        cost_safety = manager.cache.evaluate(tenant, COST_SAFETY, EvalContext("ann"))
        assert not cost_safety.value and cost_safety.reason is Reason.DISABLED
        assert cost_safety.flag_version == 2


async def test_the_periodic_reload_catches_up_by_itself(
    server: RunningServer,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    make_key: Callable[..., Awaitable[str]],
) -> None:
    tenant = new_tenant()
    await make_key("member", tenant=tenant)
    async with _manager(pg_dsn, redis_url, redis_prefix, reload_seconds=0.05) as manager:
        await manager.ensure_tenant(tenant)
        await PgFlagStore(server.infra.pool).upsert(tenant, EVERYONE, 1, "ghost", "", "")
        assert await _eventually(
            lambda: (
                manager.cache.evaluate(tenant, RAG_IN_LOOP, EvalContext("ann")).flag_version == 2
            )
        )
        # Nothing changes any more: reloads keep running and read no flag.
        settled: SyncStats = dataclasses.replace(manager.stats)
        assert await _eventually(
            lambda: manager.stats.unchanged_reloads >= settled.unchanged_reloads + 3
        )
        assert manager.stats.flags_read == settled.flags_read
        assert manager.stats.full_reloads == settled.full_reloads


async def test_a_tenant_seeded_elsewhere_is_known_after_the_reload(
    server: RunningServer, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    async with _manager(pg_dsn, redis_url, redis_prefix) as manager:
        # Another process gave the tenant its defaults, which it has none of (all changed
        # no flag: the history does not mention the tenant).
        tenant = new_tenant()
        async with server.infra.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $1)", tenant)
            await conn.execute("INSERT INTO flag_tenants (tenant_id) VALUES ($1)", tenant)
        assert not manager.cache.has_tenant(tenant)
        full_reloads = manager.stats.full_reloads

        await manager.refresh()
        assert manager.cache.has_tenant(tenant)
        # Its own (absent) flags answer, not the defaults of a tenant not loaded yet.
        ann = Principal(tenant, "ann", frozenset({Role.MEMBER}), "k")
        assert not CacheFeatureGate(manager).enabled(ann, COST_SAFETY)
        assert manager.stats.full_reloads == full_reloads
