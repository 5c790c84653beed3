"""Session-wide fixtures: a fresh PostgreSQL database and a Redis key prefix per test run.

With `DATABASE_URL` / `REDIS_URL` set (CI), they point at those servers; without them, at an
embedded PostgreSQL / Redis started under the session's temporary directory, which is the same
path `convergio serve` takes on a fresh machine.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from convergio import AsyncClient
from convergio_server.storage.embedded import EmbeddedPostgres, EmbeddedRedis
from convergio_server.storage.postgres import ensure_database
from convergio_server.storage.redis import Keys, create_redis

from tests.support.server import RunningServer, running_server, server_settings


@pytest.fixture(scope="session")
def embedded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data directory of the session's embedded servers (used only without the URLs)."""
    return tmp_path_factory.mktemp("convergio-data")


@pytest.fixture(scope="session")
async def pg_server_dsn(embedded_data_dir: Path) -> AsyncIterator[str]:
    """DSN of a database on the test PostgreSQL server that may be used for administration
    (CREATE / DROP DATABASE). Tests should use `pg_dsn`."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(embedded_data_dir)
    await asyncio.to_thread(server.start)
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """DSN of a fresh, empty database `convergio_test_<hex>`, dropped at the end of the session."""
    name = f"convergio_test_{secrets.token_hex(6)}"
    dsn = await ensure_database(pg_server_dsn, name)
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            # FORCE: pools that tests forgot to close must not keep the database alive.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def redis_url(embedded_data_dir: Path) -> AsyncIterator[str]:
    """URL of the test Redis. Shared with other runs: use keys under `redis_prefix` only."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(embedded_data_dir)
    await asyncio.to_thread(server.start)
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix unique to this run (`cvgtest:<hex>`); its keys are deleted at the end."""
    prefix = f"cvgtest:{secrets.token_hex(6)}"
    yield prefix
    client = create_redis(redis_url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=Keys(prefix).pattern(), count=500):
            batch.append(key)
            if len(batch) >= 500:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def server(
    tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RunningServer]:
    """A real Convergio server in this process on an ephemeral port, on the session's database
    and Redis prefix. `server.admin_key` is the development tenant's bootstrap admin key."""
    settings = server_settings(
        tmp_path_factory.mktemp("server-data"), pg_dsn, redis_url, redis_prefix
    )
    async with running_server(settings) as running:
        yield running


@pytest.fixture(scope="session")
async def client(server: RunningServer) -> AsyncIterator[AsyncClient]:
    """An SDK client of `server` authenticated with the admin key."""
    async with AsyncClient(server.target, api_key=server.admin_key) as sdk_client:
        yield sdk_client


@pytest.fixture(scope="session")
async def make_key(server: RunningServer) -> Callable[..., Awaitable[str]]:
    """Create an API key: `await make_key("member")`, `await make_key("operator", tenant="t2")`."""

    async def create(*roles: str, tenant: str = "dev", name: str = "test key") -> str:
        _, token = await server.server.keys.create(tenant, name, list(roles) or ["member"])
        return token

    return create
