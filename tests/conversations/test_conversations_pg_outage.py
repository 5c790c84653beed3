"""PostgreSQL going away mid-turn, for a few seconds: the turn waits for it and ends as it
would have, its answer and usage kept (on a PostgreSQL of the test's own, stopped here)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from convergio import AsyncClient
from convergio.conversation.v1 import events_pb2
from convergio_server.storage.embedded import EmbeddedPostgres

from tests.conversations.conftest import (
    kinds,
    member_key,
    new_conversation,
    switch_on,
    wait_streaming,
)
from tests.support.server import RunningServer, running_server, server_settings


@pytest.fixture
async def outage(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[RunningServer, EmbeddedPostgres]]:
    """A paced server on a PostgreSQL of its own, which the test stops and starts."""
    private = EmbeddedPostgres(tmp_path_factory.mktemp("outage-postgres"))
    await asyncio.to_thread(private.start)
    settings = server_settings(
        tmp_path_factory.mktemp("outage"), private.url, redis_url, f"{redis_prefix}:pgout",
        offline_tokens_per_second=30.0,
    )  # fmt: skip
    try:
        async with running_server(settings) as running:
            yield running, private
    finally:
        await asyncio.to_thread(private.stop)


async def test_a_postgres_outage_mid_turn_costs_the_turn_nothing(
    outage: tuple[RunningServer, EmbeddedPostgres],
) -> None:
    running, postgres = outage
    await switch_on(running, "true_streaming")  # its database has the flags of its own
    async with AsyncClient(running.target, api_key=await member_key(running)) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
        events = []
        async for event in client.conversations.send(
            conversation_id=cid, content="How do I plan a product launch?"
        ):
            events.append(event)
            if kinds(events).count("token_delta") == 3:
                # Down while the answer streams, and when it is to be written.
                await _embedded(postgres, "stop")
                restart = asyncio.ensure_future(_start_after(postgres, 3.0))
        await restart
        transcript = await client.conversations.list_messages(conversation_id=cid)
        turn = await client.conversations.get_turn(conversation_id=cid, turn_id=events[0].turn_id)
    assert "error" not in kinds(events)
    done = events[-1].turn_completed
    assert done.stop_reason == events_pb2.STOP_REASON_COMPLETED
    answer = next(e.message_completed for e in events if e.HasField("message_completed"))
    assert [m.content for m in transcript.messages][-1] == answer.content
    assert turn.turn.usage.completion_tokens == done.usage.completion_tokens > 0


async def _start_after(postgres: EmbeddedPostgres, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await _embedded(postgres, "start")


async def _embedded(postgres: EmbeddedPostgres, action: str) -> None:
    """Start or stop the server from a process of its own: starting `pg_ctl` as its user
    forks this one, and a fork of a process running gRPC can crash in the child."""
    script = (
        "import sys; from pathlib import Path; "
        "from convergio_server.storage.embedded import EmbeddedPostgres as P; "
        "p = P(Path(sys.argv[1])); p.start(); "
        f"{'p.stop()' if action == 'stop' else 'p._server = None'}"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(postgres.data_dir)
    )
    assert await process.wait() == 0
