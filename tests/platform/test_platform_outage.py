"""PostgreSQL or Redis going away under a running server: the health service
says NOT_SERVING, calls fail with UNAVAILABLE instead of crashing, and both
recover on their own when the store returns. Uses the embedded stores so the
test can stop and start them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from convergio import AsyncClient, RetryPolicy, errors

from tests.support.server import RunningServer, running_server, server_settings

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture
async def embedded_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = server_settings(tmp_path / "data", None, None, "cvgoutage", auth_cache_seconds=0)
    async with running_server(settings) as running:
        yield running


async def _wait_for_health(client: AsyncClient, expected: str) -> None:
    async with asyncio.timeout(30):
        while await client.health() != expected:  # noqa: ASYNC110 - polling a remote state
            await asyncio.sleep(0.1)


async def test_postgres_outage_and_recovery(embedded_server: RunningServer) -> None:
    postgres = embedded_server.infra.embedded_postgres
    assert postgres is not None
    async with AsyncClient(
        embedded_server.target, api_key=embedded_server.admin_key, retry=NO_RETRY
    ) as client:
        await _wait_for_health(client, "SERVING")
        await asyncio.to_thread(postgres.stop)
        try:
            await _wait_for_health(client, "NOT_SERVING")
            assert await client.health("convergio.conversation.v1.ConversationService") == (
                "NOT_SERVING"
            )
            # Authentication needs PostgreSQL (no key cache here): a clear UNAVAILABLE.
            with pytest.raises(errors.Unavailable) as caught:
                await client.workflows.list_workflows()
            assert "PostgreSQL" in caught.value.message
        finally:
            await asyncio.to_thread(postgres.start)
        await _wait_for_health(client, "SERVING")
        # The pool replaced its broken connections: calls reach the servicer again.
        async with asyncio.timeout(30):
            while True:
                try:
                    await client.workflows.list_workflows()
                except errors.Unimplemented:
                    break
                except errors.Unavailable:
                    await asyncio.sleep(0.1)


async def test_redis_outage_and_recovery(embedded_server: RunningServer) -> None:
    redis_server = embedded_server.infra.embedded_redis
    assert redis_server is not None
    async with AsyncClient(
        embedded_server.target, api_key=embedded_server.admin_key, retry=NO_RETRY
    ) as client:
        await _wait_for_health(client, "SERVING")
        await asyncio.to_thread(redis_server.stop)
        try:
            await _wait_for_health(client, "NOT_SERVING")
        finally:
            await asyncio.to_thread(redis_server.start)
        await _wait_for_health(client, "SERVING")
        assert await embedded_server.infra.redis.ping()
