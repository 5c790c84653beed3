"""Cancel, busy conversations (reject or queue), and broken connections: re-attach with no
gap and no duplicate, or cancel on disconnect. Runs on the paced server so that turns last
long enough to act on them mid-way."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from convergio import AsyncClient, Client, RetryPolicy, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.flag.v1 import flag_pb2

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    kinds,
    member_key,
    new_conversation,
    wait_streaming,
)
from tests.conversations.proxy import Proxy
from tests.support.server import RunningServer

LONG = "Explain the strategy for next year in detail"


def assert_whole_turn(seen: list[events_pb2.ConversationEvent]) -> None:
    """One turn's events, each once and none missing, to its completion; its streamed text
    is its message."""
    sequences = [e.sequence for e in seen]
    assert sequences == list(range(sequences[0], sequences[0] + len(seen)))
    assert kinds(seen)[-1] == "turn_completed"
    assert seen[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    completed = next(e.message_completed for e in seen if e.HasField("message_completed"))
    text = "".join(e.token_delta.text for e in seen if e.HasField("token_delta"))
    assert text == completed.content


async def first_delta(stream: object) -> list[events_pb2.ConversationEvent]:
    """Read events until the first token delta."""
    seen: list[events_pb2.ConversationEvent] = []
    async for event in stream:  # type: ignore[attr-defined]
        seen.append(event)
        if event.HasField("token_delta"):
            return seen
    raise AssertionError(f"the turn ended before any token: {kinds(seen)}")


@contextlib.asynccontextmanager
async def without_streaming(server: RunningServer) -> AsyncIterator[AsyncClient]:
    """A client of a tenant of its own with `true_streaming` off: answers come in one
    piece."""
    tenant = f"no-streaming-{uuid.uuid4().hex[:8]}"
    _, token = await server.server.keys.create(tenant, "no streaming", ["admin"])
    async with AsyncClient(server.target, api_key=token) as client:
        try:
            version = (await client.flags.get_flag(key="true_streaming")).flag.version
        except errors.NotFound:
            version = 0
        await client.flags.upsert_flag(
            flag=flag_pb2.Flag(
                key="true_streaming", enabled=True, strategy=flag_pb2.FLAG_STRATEGY_OFF
            ),
            expected_version=version,
        )
        for _ in range(200):  # until this server's flag cache has the change
            if not (await client.flags.evaluate_flag(key="true_streaming")).evaluation.value:
                break
            await asyncio.sleep(0.05)
        yield client


async def test_a_cancelled_turn_without_token_streaming_keeps_its_usage(
    paced: RunningServer,
) -> None:
    # A cancel mid-answer must still count the prompt and what was generated.
    async with without_streaming(paced) as client:
        cid = await new_conversation(client)
        stream = client.conversations.send(conversation_id=cid, content=LONG)
        started = await stream.__anext__()
        await asyncio.sleep(0.5)  # at 60 tokens/s, about 30 tokens of the answer exist
        await client.conversations.cancel_turn(conversation_id=cid, turn_id=started.turn_id)
        rest = [event async for event in stream]
    assert "token_delta" not in kinds(rest)
    usage = rest[-1].turn_completed.usage
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.model_calls == 1


async def test_a_team_speaker_is_announced_when_chosen_without_token_streaming(
    paced: RunningServer,
) -> None:
    # Without streamed tokens the speaker's first words come with its whole message: the
    # selection must not wait for them (a client shows who is answering meanwhile).
    async with without_streaming(paced) as client:
        cid = await new_conversation(client, team=pb.Team(preset="core"))
        stream = client.conversations.send(conversation_id=cid, content=LONG, max_turns=3)
        seen = []
        async for event in stream:
            seen.append(event)
            if event.HasField("speaker_selected"):
                break
        await client.conversations.cancel_turn(conversation_id=cid, turn_id=seen[0].turn_id)
        rest = [event async for event in stream]
    assert kinds(seen) == ["turn_started", "speaker_selected"]
    assert "message_completed" not in kinds(rest)
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED


async def test_the_turn_after_a_cancelled_team_turn_is_answered(
    paced_client: AsyncClient,
) -> None:
    # The cancelled turn's finished replies are replayed to the team before the next
    # message; they used to count as that message's replies and end its turn at once.
    cid = await new_conversation(paced_client, team=pb.Team(preset="core"))
    stream = paced_client.conversations.send(
        conversation_id=cid,
        content="Give a full review of our pricing, security and execution",
        max_turns=20,
    )
    async for event in stream:
        if event.HasField("message_completed"):
            await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=event.turn_id)
            break
    await collect(stream)
    events = await collect(
        paced_client.conversations.send(
            conversation_id=cid, content="Short check on costs", max_turns=3
        )
    )
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert kinds(events).count("message_completed") >= 1
    assert events[-1].turn_completed.usage.model_calls >= 1


async def test_cancel_stops_the_turn_and_keeps_the_usage(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    stream = paced_client.conversations.send(conversation_id=cid, content=LONG)
    seen = await first_delta(stream)
    turn_id = seen[0].turn_id
    cancelled = await paced_client.conversations.cancel_turn(
        conversation_id=cid, turn_id=turn_id, reason="changed my mind"
    )
    assert cancelled.turn.status == pb.TURN_STATUS_ENDED
    assert cancelled.turn.stop_reason == events_pb2.STOP_REASON_CANCELLED
    assert cancelled.turn.stop_detail == "changed my mind"
    rest = [event async for event in stream]
    last = rest[-1]
    assert last.HasField("turn_completed")
    assert last.turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
    # The partial answer was generated, so it is counted and billed.
    assert last.turn_completed.usage.completion_tokens > 0
    assert last.turn_completed.usage.model_calls == 1
    assert "message_completed" not in kinds(rest)
    again = await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=turn_id)
    assert again.turn.stop_reason == events_pb2.STOP_REASON_CANCELLED  # unchanged
    with pytest.raises(errors.FailedPrecondition):
        await paced_client.conversations.cancel_turn(conversation_id=cid)
    # The conversation goes on after a cancel.
    after = await collect(paced_client.conversations.send(conversation_id=cid, content="Hello"))
    assert after[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_cancel_stops_a_team_mid_answer(paced_client: AsyncClient) -> None:
    # The speaking agent runs inside AutoGen's group chat; the cancel reaches its model call.
    cid = await new_conversation(paced_client, team=pb.Team(preset="core"))
    stream = paced_client.conversations.send(
        conversation_id=cid, content="Review the budget and the security risks of the plan"
    )
    seen = await first_delta(stream)
    await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=seen[0].turn_id)
    rest = [event async for event in stream]
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
    assert "message_completed" not in kinds(seen + rest)
    assert kinds(seen).count("speaker_selected") == 1
    after = await collect(paced_client.conversations.send(conversation_id=cid, content="Hello"))
    assert after[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_the_team_remembers_a_cancelled_turn(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    stream = paced_client.conversations.send(
        conversation_id=cid,
        content="The warehouse budget for next year is 4700 dollars. " + LONG,
    )
    turn_id = (await first_delta(stream))[0].turn_id
    await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=turn_id)
    assert [event async for event in stream][-1].turn_completed.stop_reason == (
        events_pb2.STOP_REASON_CANCELLED
    )
    # The cancelled turn saved no team state; its message still reaches the team.
    after = await collect(
        paced_client.conversations.send(
            conversation_id=cid, content="Remind me what the warehouse budget was."
        )
    )
    answers = [e.message_completed for e in after if e.HasField("message_completed")]
    assert len(answers) == 1 and "4700" in answers[0].content
    transcript = await paced_client.conversations.list_messages(conversation_id=cid)
    assert [m.source for m in transcript.messages] == ["user", "user", "amy"]


async def test_busy_conversation_rejects_or_queues(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    running = paced_client.conversations.send(conversation_id=cid, content=LONG)
    seen = await first_delta(running)
    with pytest.raises(errors.FailedPrecondition):
        await collect(paced_client.conversations.send(conversation_id=cid, content="Me too"))
    queued = await collect(
        paced_client.conversations.send(
            conversation_id=cid, content="Hello after that", if_busy=pb.BUSY_POLICY_ENQUEUE
        )
    )
    first = seen + [event async for event in running]
    assert kinds(queued)[0] == "turn_queued" and queued[0].turn_queued.position == 1
    assert kinds(queued)[1] == "turn_started" and kinds(queued)[-1] == "turn_completed"
    # The queued turn started once the first one had ended.
    assert queued[1].sequence > first[-1].sequence
    assert first[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    transcript = await paced_client.conversations.list_messages(conversation_id=cid)
    assert [m.source for m in transcript.messages] == ["user", "amy", "user", "amy"]
    # Ending the first turn started the queued one and kept the counters right.
    got = await paced_client.conversations.get_conversation(conversation_id=cid)
    conversation = got.conversation
    assert conversation.message_count == 4 and conversation.turn_count == 2
    assert not conversation.active_turn_id and conversation.queued_turn_count == 0
    done = first[-1].turn_completed.usage.completion_tokens
    done += queued[-1].turn_completed.usage.completion_tokens
    assert conversation.usage.completion_tokens == done


async def test_cancel_a_queued_turn(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    running = paced_client.conversations.send(conversation_id=cid, content=LONG)
    await first_delta(running)
    queued = paced_client.conversations.send(
        conversation_id=cid, content="later", if_busy=pb.BUSY_POLICY_ENQUEUE
    )
    head = await queued.__anext__()
    assert head.HasField("turn_queued")
    cancelled = await paced_client.conversations.cancel_turn(
        conversation_id=cid, turn_id=head.turn_id
    )
    assert cancelled.turn.stop_reason == events_pb2.STOP_REASON_CANCELLED
    tail = [event async for event in queued]
    assert kinds(tail) == ["turn_completed"]
    await paced_client.conversations.cancel_turn(conversation_id=cid)
    rest = [event async for event in running]
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED


async def test_broken_connection_resumes_without_gap_or_duplicate(
    paced: RunningServer, streaming: None
) -> None:
    proxy = await Proxy(paced.target).start()
    try:
        async with AsyncClient(proxy.target, api_key=await member_key(paced)) as client:
            cid = await new_conversation(client)
            stream = client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
            seen = await first_delta(stream)
            proxy.cut()  # the client sees UNAVAILABLE and re-attaches through a new connection
            seen += [event async for event in stream]
            assert proxy.connections >= 2
            assert_whole_turn(seen)
    finally:
        await proxy.close()


async def test_disconnect_continues_by_default_and_cancels_when_asked(
    paced_client: AsyncClient,
) -> None:
    cid = await new_conversation(paced_client)
    stream = paced_client.conversations.send_message(conversation_id=cid, content=LONG)
    first = await stream.__anext__()
    stream.cancel()  # the client goes away; the turn goes on
    rest = [
        r.event
        async for r in paced_client.conversations.stream_events(
            conversation_id=cid, after_sequence=first.event.sequence, turn_id=first.event.turn_id
        )
    ]
    assert rest[0].sequence == first.event.sequence + 1
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED

    stream = paced_client.conversations.send_message(
        conversation_id=cid, content=LONG, on_disconnect=pb.DISCONNECT_POLICY_CANCEL
    )
    first = await stream.__anext__()
    stream.cancel()
    rest = [
        r.event
        async for r in paced_client.conversations.stream_events(
            conversation_id=cid, after_sequence=first.event.sequence, turn_id=first.event.turn_id
        )
    ]
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_DISCONNECTED
    turn = await paced_client.conversations.get_turn(
        conversation_id=cid, turn_id=first.event.turn_id
    )
    assert turn.turn.on_disconnect == pb.DISCONNECT_POLICY_CANCEL


async def test_follow_from_beyond_the_end_waits_for_new_events(
    paced_client: AsyncClient,
) -> None:
    cid = await new_conversation(paced_client)
    await collect(paced_client.conversations.send(conversation_id=cid, content="Hello"))
    last = (await paced_client.conversations.get_conversation(conversation_id=cid)).conversation
    follower = paced_client.conversations.stream_events(
        conversation_id=cid, after_sequence=last.last_sequence + 3
    )
    reader = asyncio.ensure_future(follower.__anext__())
    sent = await collect(paced_client.conversations.send(conversation_id=cid, content="Again"))
    got = await asyncio.wait_for(reader, 30)
    assert got.event.sequence == last.last_sequence + 4
    assert got.event.sequence in [e.sequence for e in sent]
    follower.cancel()


async def test_a_repeated_request_keeps_its_turns_disconnect_policy(
    paced_client: AsyncClient,
) -> None:
    # Sent with CONTINUE; repeated with CANCEL (a retry that re-attaches): the turn's own
    # policy holds, so the repeat going away does not cancel it, while the first stream
    # still reads it.
    cid = await new_conversation(paced_client)
    first = paced_client.conversations.send(
        conversation_id=cid, content=LONG, request_id="keep-policy"
    )
    started = await first.__anext__()
    repeat = paced_client.conversations.send_message(
        conversation_id=cid,
        content=LONG,
        request_id="keep-policy",
        on_disconnect=pb.DISCONNECT_POLICY_CANCEL,
    )
    assert (await repeat.__anext__()).event.turn_id == started.turn_id
    repeat.cancel()
    rest = await collect(first)
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_a_stream_watching_a_turn_cancels_it_only_when_asked(
    paced_client: AsyncClient,
) -> None:
    cid = await new_conversation(paced_client)
    sender = paced_client.conversations.send(conversation_id=cid, content=LONG)
    started = await sender.__anext__()
    with pytest.raises(errors.InvalidArgument) as refused:
        await collect(
            paced_client.conversations.follow(cid, on_disconnect=pb.DISCONNECT_POLICY_CANCEL)
        )
    assert "turn_id" in refused.value.message
    for policy in (pb.DISCONNECT_POLICY_UNSPECIFIED, pb.DISCONNECT_POLICY_CANCEL):
        watcher = paced_client.conversations.stream_events(
            conversation_id=cid, turn_id=started.turn_id, on_disconnect=policy
        )
        await watcher.__anext__()
        watcher.cancel()
    rest = await collect(sender)
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_DISCONNECTED


async def test_following_a_turn_from_beyond_its_end_ends_with_it(
    paced_client: AsyncClient,
) -> None:
    # Its events all come before `after_sequence`: nothing is sent, but the stream ends
    # when the turn does, as a turn's stream always does.
    cid = await new_conversation(paced_client)
    stream = paced_client.conversations.send(conversation_id=cid, content="Hello there")
    delta = (await first_delta(stream))[-1]
    follower = paced_client.conversations.follow(cid, turn_id=delta.turn_id, after_sequence=10**6)
    reader = asyncio.ensure_future(collect(follower))
    await collect(stream)
    assert await asyncio.wait_for(reader, 30) == []


async def test_delete_refuses_a_busy_conversation_unless_forced(
    paced_client: AsyncClient,
) -> None:
    cid = await new_conversation(paced_client)
    stream = paced_client.conversations.send(conversation_id=cid, content=LONG)
    await first_delta(stream)
    with pytest.raises(errors.FailedPrecondition):
        await paced_client.conversations.delete_conversation(conversation_id=cid)
    await paced_client.conversations.delete_conversation(conversation_id=cid, force=True)
    rest = [event async for event in stream]
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
    with pytest.raises(errors.NotFound):
        await paced_client.conversations.get_conversation(conversation_id=cid)


async def test_a_forced_delete_wins_over_clients_that_keep_sending(
    paced_client: AsyncClient,
) -> None:
    # Each sender queues a turn again as soon as it can: without the conversation refusing
    # new turns while it is deleted, they could keep it alive.
    cid = await new_conversation(paced_client)
    running = paced_client.conversations.send(conversation_id=cid, content=LONG)
    await first_delta(running)
    refusals: list[str] = []

    async def keep_sending(i: int) -> None:
        for n in range(1000):
            stream = paced_client.conversations.send(
                conversation_id=cid, content=f"{i}.{n}", if_busy=pb.BUSY_POLICY_ENQUEUE
            )
            try:
                await collect(stream)
            except (errors.NotFound, errors.FailedPrecondition) as exc:
                if isinstance(exc, errors.NotFound):
                    refusals.append(exc.message)
                    return

    senders = [asyncio.ensure_future(keep_sending(i)) for i in range(3)]
    await asyncio.sleep(0.3)  # turns queued behind the running one
    await paced_client.conversations.delete_conversation(conversation_id=cid, force=True)
    await asyncio.wait_for(asyncio.gather(*senders), 60)
    assert len(refusals) == 3
    assert all("deleted" in m or "does not exist" in m for m in refusals)
    with pytest.raises(errors.NotFound):
        await paced_client.conversations.get_conversation(conversation_id=cid)
    rest = await collect(running)
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED


async def test_a_broken_follow_stream_resumes_too(paced: RunningServer, streaming: None) -> None:
    proxy = await Proxy(paced.target).start()
    try:
        async with AsyncClient(proxy.target, api_key=await member_key(paced)) as client:
            await wait_streaming(client)
            cid = await new_conversation(client)
            sender = asyncio.ensure_future(
                collect(client.conversations.send(conversation_id=cid, content=LONG))
            )
            seen = []
            async for event in client.conversations.follow(cid):
                seen.append(event)
                if len(seen) == 5:
                    proxy.cut()  # both streams break; both re-attach
                if event.HasField("turn_completed"):
                    break
            sent = await sender
            assert [e.sequence for e in seen] == [e.sequence for e in sent]
            assert proxy.connections >= 2
    finally:
        await proxy.close()


async def test_a_restart_long_outage_is_outlasted(paced: RunningServer, streaming: None) -> None:
    # The proxy refuses connections for 3 s, as a restarting server does: far longer than
    # the few quick retries of a unary call, well within the stream's resume window.
    proxy = await Proxy(paced.target).start()
    try:
        async with AsyncClient(proxy.target, api_key=await member_key(paced)) as client:
            cid = await new_conversation(client)
            events = client.conversations.send(conversation_id=cid, content=LONG)
            seen = await first_delta(events)
            await proxy.stop()
            await asyncio.sleep(3)
            await proxy.start()
            async with asyncio.timeout(60):
                seen += [event async for event in events]
            assert proxy.connections >= 2
            assert_whole_turn(seen)
    finally:
        await proxy.close()


async def test_an_outage_longer_than_the_resume_window_raises(
    paced: RunningServer, streaming: None
) -> None:
    proxy = await Proxy(paced.target).start()
    key = await member_key(paced)
    try:
        async with AsyncClient(
            proxy.target, api_key=key, retry=RetryPolicy(resume_window_seconds=0.5)
        ) as client:
            cid = await new_conversation(client)
            events = client.conversations.send(conversation_id=cid, content=LONG)
            seen = await first_delta(events)
            await proxy.stop()
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):
                async with asyncio.timeout(2.5):  # before the proxy would be back
                    [event async for event in events]
            assert time.monotonic() - started < 2.5
    finally:
        await proxy.close()
    async with AsyncClient(paced.target, api_key=key) as direct:
        await direct.conversations.cancel_turn(conversation_id=cid, turn_id=seen[0].turn_id)


async def turn_ended_within(client: AsyncClient, cid: str, turn_id: str, seconds: float) -> pb.Turn:
    async with asyncio.timeout(seconds):
        while True:
            turn = (await client.conversations.get_turn(conversation_id=cid, turn_id=turn_id)).turn
            if turn.status == pb.TURN_STATUS_ENDED:
                return turn
            await asyncio.sleep(0.05)


# A LONG turn runs for about a second on the paced server: it ends DISCONNECTED (not
# COMPLETED) only if leaving the stream ended the call while the turn was running.
PROMPTLY = 2.0


async def test_leaving_an_async_with_block_ends_the_call(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    async with paced_client.conversations.send(
        conversation_id=cid, content=LONG, on_disconnect=pb.DISCONNECT_POLICY_CANCEL
    ) as events:
        async for event in events:
            turn_id = event.turn_id
            break
    turn = await turn_ended_within(paced_client, cid, turn_id, PROMPTLY)
    assert turn.stop_reason == events_pb2.STOP_REASON_DISCONNECTED

    # The same with cancel(), after which iterating ends at once.
    events = paced_client.conversations.send(
        conversation_id=cid, content=LONG, on_disconnect=pb.DISCONNECT_POLICY_CANCEL
    )
    async for event in events:
        turn_id = event.turn_id
        break
    events.cancel()
    assert [event async for event in events] == []
    turn = await turn_ended_within(paced_client, cid, turn_id, PROMPTLY)
    assert turn.stop_reason == events_pb2.STOP_REASON_DISCONNECTED

    # And with follow(): leaving its block ends its call too, not the turn it followed.
    events = paced_client.conversations.send(conversation_id=cid, content=LONG)
    turn_id = (await events.__anext__()).turn_id
    async with paced_client.conversations.follow(cid, turn_id=turn_id) as followed:
        async for _ in followed:
            break
    rest = [event async for event in events]
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


def _sync_send_and_leave(target: str, key: str, cid: str) -> tuple[str, pb.Turn]:
    with Client(target, api_key=key) as client:
        with client.conversations.send(
            conversation_id=cid, content=LONG, on_disconnect=pb.DISCONNECT_POLICY_CANCEL
        ) as events:
            for event in events:
                turn_id = event.turn_id
                break
        left = time.monotonic()
        while time.monotonic() - left < PROMPTLY:
            turn = client.conversations.get_turn(conversation_id=cid, turn_id=turn_id).turn
            if turn.status == pb.TURN_STATUS_ENDED:
                break
            time.sleep(0.05)
    return turn_id, turn


async def test_leaving_a_with_block_ends_the_call_of_the_sync_client(
    paced: RunningServer, streaming: None
) -> None:
    key = await member_key(paced)
    async with AsyncClient(paced.target, api_key=key) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
    # In a thread: the server runs on this test's event loop.
    _, turn = await asyncio.to_thread(_sync_send_and_leave, paced.target, key, cid)
    assert turn.status == pb.TURN_STATUS_ENDED
    assert turn.stop_reason == events_pb2.STOP_REASON_DISCONNECTED
