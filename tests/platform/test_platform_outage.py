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
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.flag.v1 import flag_pb2

from tests.conversations.conftest import wait_flag
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


async def test_a_turn_caught_by_a_redis_restart_still_ends_its_stream(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Embedded Redis (so the test can restart it, losing everything it held, as a Redis
    # without persistence does) and a paced model, so the turn is mid-way when it happens.
    settings = server_settings(
        tmp_path / "data", pg_dsn, None, "cvgturnoutage", offline_tokens_per_second=20.0
    )
    async with running_server(settings) as running:
        redis_server = running.infra.embedded_redis
        assert redis_server is not None
        async with AsyncClient(running.target, api_key=running.admin_key) as client:
            # Token deltas on, so that the turn has events to log while Redis is gone.
            version = (await client.flags.get_flag(key="true_streaming")).flag.version
            await client.flags.upsert_flag(
                flag=flag_pb2.Flag(
                    key="true_streaming", enabled=True, strategy=flag_pb2.FLAG_STRATEGY_ON
                ),
                expected_version=version,
            )
            await wait_flag(client, "true_streaming")
            created = await client.conversations.create_conversation(
                team=pb.Team(single_agent="amy")
            )
            cid = created.conversation.conversation_id
            stream = client.conversations.send(conversation_id=cid, content="Explain the plan")
            seen = []
            async for event in stream:
                seen.append(event)
                if event.HasField("token_delta"):
                    break
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(redis_server.start)
            # The stream ends with the turn's terminal event once Redis is back: the client
            # is not left waiting for an end that was never logged.
            async with asyncio.timeout(60):
                rest = [event async for event in stream]
            assert rest[-1].HasField("turn_completed")
            assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
            # Numbered after everything the client saw, though Redis forgot the counter.
            sequences = [e.sequence for e in seen + rest]
            assert sequences == sorted(set(sequences))
            # The conversation goes on.
            await _wait_for_health(client, "SERVING")
            after = [e async for e in client.conversations.send(conversation_id=cid, content="Hi")]
            assert after[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
