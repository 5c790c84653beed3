"""Fixtures of the storage tests: a private embedded PostgreSQL and Redis (stopped and
restarted by the tests, so never the session's shared servers) and throwaway databases."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from convergio_server.storage.embedded import EmbeddedPostgres, EmbeddedRedis
from convergio_server.storage.postgres import ensure_database


@pytest.fixture(scope="session")
def private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage-embedded")


@pytest.fixture(scope="session")
async def private_postgres(private_data_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(private_data_dir)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
async def private_redis(private_data_dir: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(private_data_dir)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def new_database(pg_server_dsn: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory of empty databases on the test server (for tests that need a schema-free one);
    each is dropped when the test ends."""
    names: list[str] = []

    async def create() -> str:
        name = f"convergio_test_{secrets.token_hex(6)}"
        names.append(name)
        return await ensure_database(pg_server_dsn, name)

    yield create
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def stored_conversation(pool: asyncpg.Pool[Any], tenant: str) -> str:
    """A conversation of `tenant` (made too if need be) written straight to PostgreSQL:
    what tests of the storage under a conversation need."""
    conversation = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", tenant
    )
    await pool.execute(
        "INSERT INTO conversations (tenant_id, id, team, participants, "
        "max_turns_per_message, turn_timeout_seconds, created_by) "
        "VALUES ($1, $2, '{}', ARRAY['amy'], 6, 600, 'alice')",
        tenant,
        conversation,
    )
    return conversation
