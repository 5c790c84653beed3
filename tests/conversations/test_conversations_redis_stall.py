"""Redis in trouble: stalling mid-turn (a pause longer than the client's timeout, after which
it runs what it was sent), out of reach for reads, down while the server stops."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from convergio import AsyncClient, RetryPolicy, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.storage.embedded import EmbeddedRedis

from tests.conversations.conftest import kinds, member_key, new_conversation, wait_streaming
from tests.support.server import RunningServer, running_server, server_settings


@pytest.fixture
async def stalling(
    tmp_path_factory: pytest.TempPathFactory, pg_dsn: str
) -> AsyncIterator[tuple[RunningServer, int]]:
    """A paced server on a Redis of its own (and its pid, to pause it), whose client gives up
    on Redis after one second."""
    private = EmbeddedRedis(tmp_path_factory.mktemp("stall-redis"))
    await asyncio.to_thread(private.start)
    settings = server_settings(
        tmp_path_factory.mktemp("stall"), pg_dsn, private.url, "cvgtest-stall",
        offline_tokens_per_second=30.0, connect_timeout_seconds=1.0,
    )  # fmt: skip
    try:
        async with running_server(settings) as running:
            pid = int((await running.infra.redis.info("server"))["process_id"])
            yield running, pid
    finally:
        os.kill(pid, signal.SIGCONT)
        await asyncio.to_thread(private.stop)


@contextlib.asynccontextmanager
async def _client_and_conversation(
    running: RunningServer,
) -> AsyncIterator[tuple[AsyncClient, str]]:
    """A client that does not retry (what it meets, the test sees) and a new conversation."""
    once = RetryPolicy(max_attempts=1, resume_window_seconds=0)
    async with AsyncClient(running.target, api_key=await member_key(running), retry=once) as c:
        await wait_streaming(c)
        yield c, await new_conversation(c)


async def test_a_redis_stall_mid_turn_duplicates_no_event(
    stalling: tuple[RunningServer, int], streaming: None
) -> None:
    running, pid = stalling
    async with _client_and_conversation(running) as (client, cid):
        stream = client.conversations.send(
            conversation_id=cid, content="How do I plan a product launch?"
        )
        seen = []
        async for event in stream:
            seen.append(event)
            if kinds(seen).count("token_delta") == 3:
                break
        os.kill(pid, signal.SIGSTOP)  # appends time out meanwhile, and are run later
        await asyncio.sleep(3.0)
        os.kill(pid, signal.SIGCONT)
        await stream.aclose()
        turn_id = seen[0].turn_id
        async with asyncio.timeout(60):
            while True:
                got = await client.conversations.get_turn(conversation_id=cid, turn_id=turn_id)
                if got.turn.status == pb.TURN_STATUS_ENDED:
                    break
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # an append Redis would still run has run by now
        logged = [
            r.event
            async for r in client.conversations.stream_events(
                conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
            )
        ]
    names = kinds(logged)
    assert names.count("turn_completed") == 1 and names[-1] == "turn_completed"
    assert names.count("error") <= 1
    sequences = [e.sequence for e in logged]
    assert sequences == list(range(1, len(sequences) + 1))
    # Each piece of text once: what was streamed before the stall is not in the log twice.
    texts = [e.token_delta.text for e in logged if e.HasField("token_delta")]
    assert texts[:3] == [e.token_delta.text for e in seen if e.HasField("token_delta")]
    assert all(
        later.event_time != earlier.event_time
        for earlier, later in itertools.pairwise(logged)
        if earlier.HasField("token_delta") and later.HasField("token_delta")
    )


async def test_reads_go_on_and_refusals_say_when_to_retry_while_redis_is_down(
    stalling: tuple[RunningServer, int], streaming: None
) -> None:
    running, pid = stalling
    async with _client_and_conversation(running) as (client, cid):
        done = [e async for e in client.conversations.send(conversation_id=cid, content="Hi")]
        other = await new_conversation(client)
        streaming_turn = client.conversations.send(
            conversation_id=other, content="How do I plan a product launch?"
        )
        started = await streaming_turn.__anext__()
        os.kill(pid, signal.SIGSTOP)
        try:
            # A turn running in the process asked is stopped there, Redis or not (by the
            # cancel, or by its log failing first).
            cancelled = await client.conversations.cancel_turn(
                conversation_id=other, turn_id=started.turn_id
            )
            assert cancelled.turn.status == pb.TURN_STATUS_ENDED
            assert cancelled.turn.stop_reason in (
                events_pb2.STOP_REASON_CANCELLED,
                events_pb2.STOP_REASON_ERROR,
            )
            await streaming_turn.aclose()
            # What PostgreSQL holds is served without Redis (its latest sequence included).
            got = await client.conversations.get_conversation(conversation_id=cid)
            assert got.conversation.last_sequence == done[-1].sequence
            turns = await client.conversations.list_turns(conversation_id=cid)
            assert [t.turn_id for t in turns.turns] == [done[0].turn_id]
            # What needs Redis is refused as unavailable, with a delay to retry after.
            with pytest.raises(errors.Unavailable) as refused:
                async for _ in client.conversations.send(conversation_id=cid, content="Again"):
                    pass
            assert refused.value.retry_delay is not None and refused.value.retry_delay > 0
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("pace", "wait"), [(0.5, 0.0), (20.0, 1.0)], ids=["still-running", "ended-already"]
)
async def test_a_turn_stopped_while_redis_is_down_is_ended_once_it_is_back(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    streaming: None,
    pace: float,
    wait: float,
) -> None:
    # The server stops (SIGTERM) while Redis is down: a turn still running is not ended
    # there (its end cannot be logged) but by another process; one that ended already (its
    # guards or log failed first) gets its end logged by another process. Either way its
    # followers hear how it ended.
    redis = EmbeddedRedis(tmp_path_factory.mktemp("stop-redis"))
    await asyncio.to_thread(redis.start)
    try:

        def settings(name: str) -> Any:
            return server_settings(
                tmp_path_factory.mktemp(name), pg_dsn, redis.url, "cvgtest-stopdown",
                offline_tokens_per_second=pace, turn_lease_seconds=1.0,
                connect_timeout_seconds=1.0, turn_end_retry_seconds=2.0,
            )  # fmt: skip

        async with running_server(settings("first")) as first:
            key = await member_key(first)
            once = RetryPolicy(max_attempts=1, resume_window_seconds=0)
            async with AsyncClient(first.target, api_key=key, retry=once) as client:
                await wait_streaming(client)
                cid = await new_conversation(client)
                stream = client.conversations.send(conversation_id=cid, content="Hello there")
                started = await stream.__anext__()
                # Slow: before its next token, 2 s later; fast: it fails on its own first.
                await asyncio.to_thread(redis.stop)
                await asyncio.sleep(wait)
                await stream.aclose()
            # Leaving the block stops the server, with the turn still running.
        await asyncio.to_thread(redis.start)
        async with running_server(settings("second")) as second:
            async with AsyncClient(second.target, api_key=key) as client:
                async with asyncio.timeout(60):
                    ended = [
                        event
                        async for event in client.conversations.follow(cid, turn_id=started.turn_id)
                    ]
    finally:
        await asyncio.to_thread(redis.stop)
    assert kinds(ended)[-2:] == ["error", "turn_completed"]
    assert ended[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    assert ended[-2].error.retryable
