"""The limit of turns a process runs at once (CONVERGIO_MAX_RUNNING_TURNS): a new turn past
it is refused with UNAVAILABLE before anything of it is stored, the SDK retries it after
the delay the server gives, and the turns already running, their re-attaches and the
metrics go on as before."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from convergio import AsyncClient, RetryPolicy, errors
from convergio.conversation.v1 import events_pb2

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    member_key,
    new_conversation,
    wait_streaming,
)
from tests.support.server import RunningServer, running_server, scrape_metrics, server_settings

ONCE = RetryPolicy(max_attempts=1, resume_window_seconds=0)


@pytest.fixture
async def limited(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> AsyncIterator[RunningServer]:
    """A server that runs at most two turns at once, whose turns last a few seconds."""
    settings = server_settings(
        tmp_path,
        pg_dsn,
        redis_url,
        redis_prefix,
        max_running_turns=2,
        offline_tokens_per_second=25.0,
        metrics=True,
    )
    async with running_server(settings) as running:
        yield running


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in the metrics"
    return float(found.group(1))


async def test_a_turn_past_the_limit_is_refused_and_nothing_of_it_is_kept(
    limited: RunningServer,
) -> None:
    key = await member_key(limited)
    async with AsyncClient(limited.target, api_key=key, retry=ONCE) as client:
        await wait_streaming(client)
        ids = [await new_conversation(client) for _ in range(5)]
        # The metrics sum every runner of this process (other tests' servers too): compare.
        before = await asyncio.to_thread(scrape_metrics, limited.settings.metrics_listen)
        streams = [
            client.conversations.send(
                conversation_id=cid, content=FINANCE_QUESTION, request_id=f"r{i}"
            )
            for i, cid in enumerate(ids)
        ]
        # All at once: the limit holds for turns that are starting, not only running.
        firsts = await asyncio.gather(*(s.__anext__() for s in streams), return_exceptions=True)
        started = [i for i, first in enumerate(firsts) if not isinstance(first, BaseException)]
        refused = [first for first in firsts if isinstance(first, BaseException)]
        assert len(started) == 2
        assert len(refused) == 3
        for error in refused:
            assert isinstance(error, errors.Unavailable)
            assert error.reason == "SERVER_BUSY"
            assert error.retry_delay == 1.0
            assert "CONVERGIO_MAX_RUNNING_TURNS" in error.message
        metrics = await asyncio.to_thread(scrape_metrics, limited.settings.metrics_listen)
        for name, grown in (
            ("convergio_turns_running", 2),
            ("convergio_turns_refused_busy_total", 3),
        ):
            assert _metric(metrics, name) - _metric(before, name) == grown
        for i, cid in enumerate(ids):
            conversation = (
                await client.conversations.get_conversation(conversation_id=cid)
            ).conversation
            if i in started:
                assert conversation.active_turn_id
            else:  # no turn stored, nothing running or queued
                assert conversation.turn_count == 0
                assert not conversation.active_turn_id
                assert conversation.queued_turn_count == 0

        # A repeated request of a running turn re-attaches to it, even at the limit.
        again = await collect(
            client.conversations.send(
                conversation_id=ids[started[0]],
                content=FINANCE_QUESTION,
                request_id=f"r{started[0]}",
            )
        )
        assert again[0].turn_id == firsts[started[0]].turn_id  # type: ignore[union-attr]
        assert again[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        for i in started:
            rest = await collect(streams[i])
            assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED

        # Below the limit again: a refused conversation takes its turn as any other.
        refused_id = next(cid for i, cid in enumerate(ids) if i not in started)
        late = await collect(client.conversations.send(conversation_id=refused_id, content="Hello"))
        assert late[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_the_sdk_retries_a_refused_turn_until_the_server_has_room(
    limited: RunningServer,
) -> None:
    key = await member_key(limited)
    patient = RetryPolicy(max_attempts=60)
    async with AsyncClient(limited.target, api_key=key, retry=patient) as client:
        await wait_streaming(client)
        busy = [await new_conversation(client) for _ in range(2)]
        running = [client.conversations.send(conversation_id=cid, content="Hello") for cid in busy]
        for stream in running:
            await stream.__anext__()
        waiting = await new_conversation(client)
        # Refused while both run (1 s apart), then started once one of them ended.
        events = await collect(client.conversations.send(conversation_id=waiting, content="Hello"))
        assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        assert limited.server.context.components["conversations"].runner.refused_busy >= 1
        for stream in running:
            await collect(stream)
