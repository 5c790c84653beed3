"""The event log's two halves: once the live window in Redis is gone, a replay comes from
PostgreSQL (every event but token deltas) and new sequences continue where they stopped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from convergio import AsyncClient
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio_server.domain.events.log import Subscription
from convergio_server.domain.events.model import SpeakerSelected, encode
from convergio_server.storage.redis import Keys
from redis.exceptions import ResponseError

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    TENANT,
    collect,
    kinds,
    member_key,
    new_conversation,
)
from tests.support.server import RunningServer, running_server, server_settings


async def test_replay_after_the_live_window_expired(
    conv: AsyncClient, server: RunningServer
) -> None:
    cid = await new_conversation(conv)
    sent = await collect(conv.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    keys = Keys(server.settings.redis_prefix)
    # What the window's expiry does: the stream and the sequence counter are gone.
    await server.infra.redis.delete(
        keys.k("conv", TENANT, cid, "events"),
        keys.k("conv", TENANT, cid, "seq"),
        keys.k("conv", TENANT, cid, "turns"),
    )
    replay = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
        )
    ]
    durable = [e for e in sent if not e.HasField("token_delta")]
    assert [e.SerializeToString() for e in replay] == [e.SerializeToString() for e in durable]
    assert "message_completed" in kinds(replay) and kinds(replay)[-1] == "turn_completed"
    # The next turn's sequences continue after the last one PostgreSQL has.
    more = await collect(conv.conversations.send(conversation_id=cid, content="Hello again"))
    assert more[0].sequence == sent[-1].sequence + 1
    follow = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, after_sequence=sent[2].sequence, turn_id=more[0].turn_id
        )
    ]
    assert [e.sequence for e in follow] == [e.sequence for e in more]


async def test_a_batch_keeps_its_order_when_the_counter_must_be_reseeded(
    conv: AsyncClient, server: RunningServer
) -> None:
    cid = await new_conversation(conv)
    sent = await collect(conv.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    keys = Keys(server.settings.redis_prefix)
    await server.infra.redis.delete(keys.k("conv", TENANT, cid, "seq"))
    events = server.server.context.components["conversations"].events
    turn_id = sent[0].turn_id
    bodies = [
        SpeakerSelected(agent=f"agent{i}", round=i, policy="single", reason="") for i in range(1, 6)
    ]
    appended = await events.append_many(TENANT, cid, turn_id, [(b, None) for b in bodies])
    # Numbered after the last durable event, in the order given, with no gap.
    first = sent[-1].sequence + 1
    assert [e.sequence for e in appended] == list(range(first, first + 5))
    assert [e.body.agent for e in appended] == [b.agent for b in bodies]
    replay = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, after_sequence=sent[-1].sequence, mode=pb.STREAM_EVENTS_MODE_REPLAY
        )
    ]
    assert [(e.sequence, e.speaker_selected.agent) for e in replay] == [
        (e.sequence, e.body.agent) for e in appended
    ]


async def test_a_batch_is_appended_when_redis_lacks_the_script(
    conv: AsyncClient, server: RunningServer
) -> None:
    # What a Redis restart does to scripts; a wrong hash gets the same NOSCRIPT answer.
    cid = await new_conversation(conv)
    events = server.server.context.components["conversations"].events
    script = events.live._append
    real = script.sha
    script.sha = "0" * 40
    bodies = [
        SpeakerSelected(agent=f"agent{i}", round=i, policy="single", reason="") for i in range(1, 4)
    ]
    turn_id = "00000000-0000-4000-8000-000000000001"
    appended = await events.append_many(TENANT, cid, turn_id, [(b, None) for b in bodies])
    assert [e.sequence for e in appended] == [1, 2, 3]
    assert script.sha == real
    replay = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
        )
    ]
    assert [e.speaker_selected.agent for e in replay] == ["agent1", "agent2", "agent3"]


async def test_appends_of_many_conversations_share_a_call_and_fail_alone(
    conv: AsyncClient, server: RunningServer
) -> None:
    # Appends started together go to Redis as one batch; one that Redis refuses (here a
    # stream key that holds a string) fails alone, the others are numbered and logged.
    events = server.server.context.components["conversations"].events
    good = [await new_conversation(conv) for _ in range(3)]
    bad = await new_conversation(conv)
    await server.infra.redis.set(
        Keys(server.settings.redis_prefix).k("conv", TENANT, bad, "events"), "x"
    )
    turn_id = "00000000-0000-4000-8000-000000000001"

    async def append(cid: str) -> list[int]:
        bodies = [
            SpeakerSelected(agent=f"a{i}", round=i, policy="single", reason="") for i in (1, 2)
        ]
        return [
            e.sequence
            for e in await events.append_many(TENANT, cid, turn_id, [(b, None) for b in bodies])
        ]

    results = await asyncio.gather(*(append(cid) for cid in [*good, bad]), return_exceptions=True)
    assert results[:3] == [[1, 2]] * 3
    assert isinstance(results[3], ResponseError) and "WRONGTYPE" in str(results[3])
    for cid in good:
        replay = [
            r.event
            async for r in conv.conversations.stream_events(
                conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
            )
        ]
        assert [(e.sequence, e.speaker_selected.agent) for e in replay] == [(1, "a1"), (2, "a2")]


async def test_appends_made_at_once_are_numbered_in_the_order_they_were_made(
    conv: AsyncClient, server: RunningServer
) -> None:
    events = server.server.context.components["conversations"].events
    cid = await new_conversation(conv)
    turn_id = "00000000-0000-4000-8000-000000000001"

    async def append(i: int) -> int:
        body = SpeakerSelected(agent=f"a{i}", round=i, policy="single", reason="")
        (event,) = await events.append_many(TENANT, cid, turn_id, [(body, None)])
        return int(event.sequence)

    # Started one after the other in one go: Redis sees them in that order, whatever
    # batches they share.
    tasks = [asyncio.ensure_future(append(i)) for i in range(1, 41)]
    assert await asyncio.gather(*tasks) == list(range(1, 41))


async def test_an_idle_follower_gets_heartbeats(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    settings = server_settings(
        tmp_path, pg_dsn, redis_url, redis_prefix, stream_heartbeat_seconds=0.2
    )
    async with running_server(settings) as quick:
        async with AsyncClient(quick.target, api_key=await member_key(quick)) as client:
            cid = await new_conversation(client)
            follower = client.conversations.stream_events(conversation_id=cid)
            beats = 0
            async for response in follower:
                assert response.event.HasField("heartbeat")
                assert response.event.sequence == 0
                beats += 1
                if beats == 2:
                    break
            follower.cancel()


async def test_a_local_turn_ends_without_a_blocking_read_for_its_leaving_streams(
    conv: AsyncClient, server: RunningServer
) -> None:
    """The reader behind SendMessage streams does not start a blocking read of Redis (a
    connection of its own) when their turn ends here: they are about to close. 200 turns
    ending at once made that a burst of work that held up the tokens of the others. A reader
    that stays (StreamEvents) goes on to follow what other processes append."""
    cid = await new_conversation(conv)
    events = server.server.context.components["conversations"].events
    turn_id = "00000000-0000-4000-8000-000000000002"
    body = SpeakerSelected(agent="amy", round=1, policy="single", reason="")

    async def blocking_reads() -> int:
        stats = await server.infra.redis.info("commandstats")
        return int(stats.get("cmdstat_xread", {}).get("calls", 0))

    async def local_turn(reader: Subscription) -> None:
        await asyncio.sleep(0.05)  # the reader waits for the turn to start here
        with events.writing(TENANT, cid):
            await events.append(TENANT, cid, turn_id, body)
            batch = await asyncio.wait_for(reader.queue.get(), 5)
            assert [e.body for e in batch] == [body]
        await asyncio.sleep(0.1)  # the turn has ended; its stream has not closed yet

    sending = events.subscribe(TENANT, cid, local_turn=True)
    before = await blocking_reads()
    await local_turn(sending)
    sending.close()
    assert await blocking_reads() == before

    following = events.subscribe(TENANT, cid)
    sending = events.subscribe(TENANT, cid, local_turn=True)
    await local_turn(sending)
    sending.close()
    # Appended by another process (not published here): the follower still gets it.
    elsewhere = await events.live.append(
        TENANT, cid, turn_id, [encode(cid, turn_id, 0, datetime.now(UTC), body)], None
    )
    got: list[int] = []
    while elsewhere[0] not in got:
        got += [e.sequence for e in await asyncio.wait_for(following.queue.get(), 5)]
    assert got == [elsewhere[0] - 1, elsewhere[0]]  # the second local turn's, then this
    following.close()


async def test_a_reader_is_behind_while_events_wait_behind_the_one_it_writes(
    conv: AsyncClient, server: RunningServer
) -> None:
    cid = await new_conversation(conv)
    events = server.server.context.components["conversations"].events
    turn_id = "00000000-0000-4000-8000-000000000003"
    body = SpeakerSelected(agent="amy", round=1, policy="single", reason="")
    loop = asyncio.get_running_loop()
    reader = events.read(TENANT, cid, after=await events.last_sequence(TENANT, cid))
    with events.writing(TENANT, cid):
        first = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0.05)  # the reader waits for the live events
        await events.append(TENANT, cid, turn_id, body)
        await first  # taken: its client is writing it
        assert not events.readers_behind(TENANT, cid)
        await events.append(TENANT, cid, turn_id, body)  # waits behind the first
        assert events.readers_behind(TENANT, cid)
        waiter: asyncio.Future[None] = loop.create_future()
        events.when_caught_up(TENANT, cid, waiter)
        assert not waiter.done()
        await anext(reader)  # the first is written: the reader takes the second
        assert waiter.done() and not events.readers_behind(TENANT, cid)
        await events.append(TENANT, cid, turn_id, body)
        await events.append(TENANT, cid, turn_id, body)
        assert events.readers_behind(TENANT, cid)
        forgotten: asyncio.Future[None] = loop.create_future()
        events.when_caught_up(TENANT, cid, forgotten)()  # it stopped waiting
        waiter = loop.create_future()
        events.when_caught_up(TENANT, cid, waiter)
        await reader.aclose()  # a reader that leaves is not waited for
        assert waiter.done() and not events.readers_behind(TENANT, cid)
        assert not forgotten.done()
        done: asyncio.Future[None] = loop.create_future()
        events.when_caught_up(TENANT, cid, done)  # nobody is behind: at once
        assert done.done()


async def test_tokens_join_the_waiting_delta_while_a_reader_here_is_behind(
    paced_client: AsyncClient, paced: RunningServer
) -> None:
    # A reader in the turn's process that does not keep up (its client, or a busy event
    # loop, is slower than the tokens): rather than queueing one event per token for it,
    # the turn holds the text back for a moment, and every reader gets fewer, larger
    # deltas, with no text lost and no sequence skipped.
    cid = await new_conversation(paced_client, agent="amy")
    events = paced.server.context.components["conversations"].events
    slow = events.read(TENANT, cid, after=await events.last_sequence(TENANT, cid))
    seen: list[int] = []

    async def read_slowly() -> None:
        async for event in slow:
            seen.append(event.sequence)
            if len(seen) == 3:
                await asyncio.sleep(0.5)  # meanwhile about 30 tokens are generated
            if event.kind == "turn_completed":
                return

    slow_reader = asyncio.ensure_future(read_slowly())
    try:
        sent = await collect(
            paced_client.conversations.send(
                conversation_id=cid, content="How do I plan a product launch?"
            )
        )
        await asyncio.wait_for(slow_reader, 10)
    finally:
        slow_reader.cancel()
        await slow.aclose()
    completed = next(e.message_completed for e in sent if e.HasField("message_completed"))
    deltas = [e.token_delta.text for e in sent if e.HasField("token_delta")]
    assert "".join(deltas) == completed.content
    # At 60 tokens/s a token comes every 17 ms, a delta of its own when nobody is behind.
    assert max(len(text.split()) for text in deltas) >= 3
    assert seen == list(range(seen[0], seen[0] + len(seen)))
    assert seen[-1] == sent[-1].sequence


async def test_the_first_token_is_not_held_for_a_reader_behind(
    paced_client: AsyncClient, paced: RunningServer
) -> None:
    # A reader here that takes nothing is behind from the turn's first events on: the first
    # token still goes out alone, at once; the later ones wait for it and grow. (The answer
    # comes after a tool's result, so that its words are all spoken while the turn runs:
    # words said while it is still being admitted go out together.)
    cid = await new_conversation(paced_client, agent="amy")
    events = paced.server.context.components["conversations"].events
    stuck = events.subscribe(TENANT, cid)
    try:
        sent = await collect(
            paced_client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
        )
    finally:
        stuck.close()
    assert "tool_result" in kinds(sent)
    deltas = [e.token_delta.text for e in sent if e.HasField("token_delta")]
    assert len(deltas[0].split()) == 1
    assert max(len(text.split()) for text in deltas[1:]) >= 3


async def test_an_append_retried_after_its_answer_was_lost_appends_nothing_twice(
    conv: AsyncClient, server: RunningServer
) -> None:
    # Redis stalled past the client's timeout, then ran the append: the turn does not know,
    # and sends the same events again (with what it posted since). Its ordinals tell.
    cid = await new_conversation(conv)
    events = server.server.context.components["conversations"].events
    turn_id = "00000000-0000-4000-8000-000000000002"
    bodies = [
        SpeakerSelected(agent=f"agent{i}", round=i, policy="single", reason="") for i in range(1, 5)
    ]
    first = await events.append_many(
        TENANT, cid, turn_id, [(b, None) for b in bodies[:3]], range(1, 4)
    )
    assert [e.sequence for e in first] == [1, 2, 3]
    again = await events.append_many(
        TENANT, cid, turn_id, [(b, None) for b in bodies[1:]], range(2, 5)
    )
    # The two already there keep their numbers; only the new one is appended.
    assert [e.sequence for e in again] == [2, 3, 4]
    stream = Keys(server.settings.redis_prefix).k("conv", TENANT, cid, "events")
    assert await server.infra.redis.xlen(stream) == 4
    # One that left the live window meanwhile is not appended again either.
    await server.infra.redis.xtrim(stream, maxlen=0)
    gone = await events.append_many(TENANT, cid, turn_id, [(bodies[3], None)], [4])
    assert gone == [] and await server.infra.redis.xlen(stream) == 0
    # Appends without ordinals (other processes' events for the turn) are as before.
    other = await events.append(TENANT, cid, turn_id, bodies[0])
    assert other.sequence == 5


async def test_the_live_log_keeps_the_fields_of_the_latest_turns_only(
    conv: AsyncClient, server: RunningServer
) -> None:
    # A conversation in use for long: its hash of turns does not grow with every turn.
    cid = await new_conversation(conv)
    events = server.server.context.components["conversations"].events
    turns = [f"00000000-0000-4000-8000-{i:012d}" for i in range(200)]
    body = SpeakerSelected(agent="amy", round=1, policy="single", reason="")
    for turn_id in turns:
        await events.append_many(TENANT, cid, turn_id, [(body, None), (body, None)], [1, 2])
    key = Keys(server.settings.redis_prefix).k("conv", TENANT, cid, "turns")
    assert await server.infra.redis.hlen(key) <= 4 * 32 + 2
    latest = await events.live.turn_last_sequences(TENANT, cid, [turns[0], *turns[-32:]])
    assert latest == [None] + [2 * i for i in range(169, 201)]
    # The latest turns' appends are still idempotent: a retry appends nothing twice.
    again = await events.append_many(TENANT, cid, turns[-1], [(body, None)], [2])
    assert [e.sequence for e in again] == [400]
