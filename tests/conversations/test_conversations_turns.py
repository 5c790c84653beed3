"""A turn end to end through the SDK with the offline model: events in order, one more
sequence per event, tool calls, usage, the transcript, turns; bad input."""

from __future__ import annotations

import asyncio

import pytest
from convergio import AsyncClient, Client, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.storage.redis import create_redis

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    kinds,
    member_key,
    new_conversation,
)
from tests.support.server import RunningServer


async def test_single_agent_turn_streams_tokens_tool_call_and_usage(conv: AsyncClient) -> None:
    cid = await new_conversation(conv, agent="amy")
    events = await collect(conv.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    names = kinds(events)
    assert names[0] == "turn_started" and names[-1] == "turn_completed"
    assert names.count("turn_completed") == 1
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(events)))
    turn_id = events[0].turn_id
    assert all(e.turn_id == turn_id and e.conversation_id == cid for e in events)
    assert names.index("speaker_selected") < names.index("tool_call")
    assert names.index("tool_call") < names.index("tool_result")
    assert names.index("tool_result") < names.index("token_delta")
    assert names.index("token_delta") < names.index("message_completed")
    call = next(e.tool_call for e in events if e.HasField("tool_call"))
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert call.tool == "financial_calculator" and call.agent == "amy"
    assert result.call_id == call.call_id and not result.is_error
    assert result.attempts == 1 and result.duration.ToNanoseconds() > 0
    assert "20" in result.content
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    deltas = "".join(
        e.token_delta.text
        for e in events
        if e.HasField("token_delta") and e.token_delta.message_id == completed.message_id
    )
    assert deltas == completed.content
    assert completed.usage.completion_tokens > 0 and completed.model == "offline/offline"
    done = events[-1].turn_completed
    assert done.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert done.message_count == 1 and done.last_message_id == completed.message_id
    assert done.usage.model_calls == 2  # the tool-choosing call and the answer
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0

    turn = (await conv.conversations.get_turn(conversation_id=cid, turn_id=turn_id)).turn
    assert turn.status == pb.TURN_STATUS_ENDED
    assert turn.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert turn.first_sequence == sequences[0] and turn.last_sequence == sequences[-1]
    assert turn.usage == done.usage
    transcript = await conv.conversations.list_messages(conversation_id=cid)
    assert [m.role for m in transcript.messages] == [
        events_pb2.MESSAGE_ROLE_USER,
        events_pb2.MESSAGE_ROLE_AGENT,
    ]
    assert transcript.messages[0].content == FINANCE_QUESTION
    assert transcript.messages[1].message_id == completed.message_id
    conversation = (await conv.conversations.get_conversation(conversation_id=cid)).conversation
    assert conversation.status == pb.CONVERSATION_STATUS_IDLE
    assert conversation.last_sequence == sequences[-1]
    assert conversation.turn_count == 1 and conversation.message_count == 2
    assert conversation.usage == done.usage


async def test_token_chunks_are_coalesced_and_the_first_goes_out_at_once(
    conv: AsyncClient,
) -> None:
    # The offline model at zero delay produces the answer in a burst: the first word goes
    # out alone, the rest in a few deltas (one per coalescing window), not one per word.
    # The question asks for a tool first, so that the answer is spoken while the turn runs
    # (words said while it is still being admitted go out together, with its first events).
    cid = await new_conversation(conv, agent="amy")
    events = await collect(conv.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    assert "tool_result" in kinds(events)
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    deltas = [e.token_delta.text for e in events if e.HasField("token_delta")]
    words = completed.content.split()
    assert "".join(deltas) == completed.content
    assert deltas[0].split() == words[:1]
    assert len(words) >= 20 and len(deltas) <= len(words) / 2


async def test_without_the_streaming_flag_the_message_carries_the_text(
    server: RunningServer,
) -> None:
    # A tenant with no flags: `true_streaming` is off for its callers.
    _, token = await server.server.keys.create("no-streaming", "no streaming", ["member"])
    async with AsyncClient(server.target, api_key=token) as client:
        cid = await new_conversation(client, agent="amy")
        events = await collect(
            client.conversations.send(conversation_id=cid, content="How do I plan a launch?")
        )
    names = kinds(events)
    assert "token_delta" not in names and names[-1] == "turn_completed"
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    assert len(completed.content.split()) > 10
    assert events[-1].turn_completed.last_message_id == completed.message_id


async def test_tokens_join_the_waiting_delta_while_the_log_is_behind(
    paced_client: AsyncClient, redis_url: str
) -> None:
    # Redis holds every write for a moment mid-turn: the tokens generated meanwhile go out
    # as one delta when it answers, not as one event each, and no text is lost.
    cid = await new_conversation(paced_client, agent="amy")
    redis = create_redis(redis_url)
    events = []
    try:
        async for event in paced_client.conversations.send(
            conversation_id=cid, content="How do I plan a product launch?"
        ):
            events.append(event)
            if kinds(events).count("token_delta") == 3:
                await redis.client_pause(400, all=False)  # writes only
    finally:
        await redis.aclose()
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    deltas = [e.token_delta.text for e in events if e.HasField("token_delta")]
    assert "".join(deltas) == completed.content
    # 400 ms at 60 tokens/s: about 24 tokens, in one delta or few.
    assert max(len(text.split()) for text in deltas) >= 10
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(events)))


async def test_group_turn_selects_speakers_by_expertise(conv: AsyncClient) -> None:
    cid = await new_conversation(conv, team=pb.Team(preset="core"))
    events = await collect(
        conv.conversations.send(
            conversation_id=cid, content="Review the budget and the security risks of the plan"
        )
    )
    selections = [e.speaker_selected for e in events if e.HasField("speaker_selected")]
    completed = [e.message_completed for e in events if e.HasField("message_completed")]
    assert selections and len(selections) == len(completed)
    assert [s.agent for s in selections] == [m.agent for m in completed]
    assert [s.round for s in selections] == list(range(1, len(selections) + 1))
    assert selections[0].policy == "simple" and selections[0].candidates
    assert kinds(events)[-1] == "turn_completed"
    assert events[-1].turn_completed.message_count == len(completed)


async def test_the_core_team_hands_a_loan_question_to_the_cfo_who_calculates(
    conv: AsyncClient,
) -> None:
    cid = await new_conversation(conv, team=pb.Team(preset="core"))
    events = await collect(
        conv.conversations.send(
            conversation_id=cid,
            content="Calculate the monthly payment on a 200000 loan at 5% over 30 years",
        )
    )
    first = next(e.speaker_selected for e in events if e.HasField("speaker_selected"))
    assert first.agent == "amy" and "loan" in first.reason
    call = next(e.tool_call for e in events if e.HasField("tool_call"))
    assert call.agent == "amy" and call.tool == "financial_calculator"
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert "1,073.64" in result.content and not result.is_error


async def test_each_speaker_is_announced_after_the_previous_one_finished(conv: AsyncClient) -> None:
    # A tool call makes the first speaker slower than the selector that picks the next one.
    cid = await new_conversation(conv, team=pb.Team(preset="core"))
    events = await collect(
        conv.conversations.send(
            conversation_id=cid,
            content="What is the ROI of a 10000 investment that returns 12000? And the risks?",
        )
    )
    speaking = ""
    finished: list[str] = []
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "speaker_selected":
            # Whoever spoke before has finished their message by now.
            assert not speaking or finished[-1:] == [speaking], kinds(events)
            speaking = event.speaker_selected.agent
        elif kind in ("token_delta", "tool_call", "message_completed"):
            agent = getattr(event, kind).agent
            assert agent == speaking, (kind, agent, speaking, kinds(events))
            if kind == "message_completed":
                finished.append(agent)
    assert len(finished) >= 2


async def test_the_next_turn_sees_the_earlier_ones(conv: AsyncClient) -> None:
    cid = await new_conversation(conv, agent="amy")
    await collect(conv.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    events = await collect(
        conv.conversations.send(conversation_id=cid, content="Summarize what the ROI was.")
    )
    answer = next(e.message_completed for e in events if e.HasField("message_completed"))
    # The offline model quotes its context: the earlier tool result is part of it.
    assert "20" in answer.content
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert len(turns.turns) == 2
    assert turns.turns[0].turn_id == events[0].turn_id  # newest first
    only_second = await conv.conversations.list_messages(
        conversation_id=cid, turn_id=events[0].turn_id
    )
    assert [m.source for m in only_second.messages] == ["user", "amy"]


async def test_repeated_request_id_replays_the_same_turn(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    first = await collect(
        conv.conversations.send(conversation_id=cid, content="Hello", request_id="same-turn")
    )
    again = await collect(
        conv.conversations.send(conversation_id=cid, content="Hello", request_id="same-turn")
    )
    assert [e.sequence for e in again] == [e.sequence for e in first]
    assert {e.turn_id for e in again} == {first[0].turn_id}
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert len(turns.turns) == 1


async def test_bad_messages_are_refused_before_the_turn(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    with pytest.raises(errors.InvalidArgument) as empty:
        await collect(conv.conversations.send(conversation_id=cid, content="   "))
    assert empty.value.field_violations[0].field == "content"
    with pytest.raises(errors.InvalidArgument) as large:
        await collect(conv.conversations.send(conversation_id=cid, content="x" * 40_000))
    assert large.value.reason == "PAYLOAD_TOO_LARGE"
    assert large.value.field_violations[0].field == "content"
    with pytest.raises(errors.NotFound):
        await collect(
            conv.conversations.send(
                conversation_id="0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e", content="hi"
            )
        )
    with pytest.raises(errors.InvalidArgument) as negative:
        async for _ in conv.conversations.stream_events(conversation_id=cid, after_sequence=-1):
            pass
    assert negative.value.field_violations[0].field == "after_sequence"
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert list(turns.turns) == []


async def test_stream_events_replays_history_and_ends_after_the_turn(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    sent = await collect(conv.conversations.send(conversation_id=cid, content="Hello"))
    replay = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
        )
    ]
    assert [e.sequence for e in replay] == [e.sequence for e in sent]
    assert [e.SerializeToString() for e in replay] == [e.SerializeToString() for e in sent]
    middle = sent[len(sent) // 2].sequence
    rest = [
        r.event
        async for r in conv.conversations.stream_events(
            conversation_id=cid, after_sequence=middle, turn_id=sent[0].turn_id
        )
    ]
    assert [e.sequence for e in rest] == [e.sequence for e in sent if e.sequence > middle]


async def test_a_group_stops_at_max_turns(conv: AsyncClient, streaming: None) -> None:
    cid = await new_conversation(conv, team=pb.Team(preset="core"))
    events = await collect(
        conv.conversations.send(
            conversation_id=cid,
            content="Review the budget and the security risks of the plan",
            max_turns=1,
        )
    )
    assert kinds(events).count("message_completed") == 1
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_MAX_TURNS


async def test_unknown_turn_is_not_found(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    unknown = "0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e"
    with pytest.raises(errors.NotFound):
        await conv.conversations.get_turn(conversation_id=cid, turn_id=unknown)
    with pytest.raises(errors.NotFound):
        async for _ in conv.conversations.stream_events(conversation_id=cid, turn_id=unknown):
            pass
    with pytest.raises(errors.NotFound):
        await conv.conversations.list_messages(conversation_id=cid, turn_id=unknown)


async def test_the_sync_client_sends_too(server: RunningServer, streaming: None) -> None:
    key = await member_key(server)
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client)

    def chat() -> tuple[list[events_pb2.ConversationEvent], list[events_pb2.ConversationEvent]]:
        with Client(server.target, api_key=key) as sync_client:
            sent = list(sync_client.conversations.send(conversation_id=cid, content="Hello"))
            return sent, list(sync_client.conversations.follow(cid, replay=True))

    events, replayed = await asyncio.to_thread(chat)
    assert kinds(events)[0] == "turn_started" and kinds(events)[-1] == "turn_completed"
    # What was logged, again: the deltas included while the live window holds them.
    assert [e.SerializeToString() for e in replayed] == [e.SerializeToString() for e in events]


async def test_turns_ending_together_while_another_streams_all_end_whole(
    paced_client: AsyncClient,
) -> None:
    # Six turns end at about the same moment while a team turn streams: their ends take
    # turns (two at a time, the default), and each still ends with its message stored and
    # its TurnCompleted, as does the team turn.
    team_cid = await new_conversation(paced_client, team=pb.Team(preset="core"))
    team_stream = paced_client.conversations.send(
        conversation_id=team_cid,
        content="Plan next year's launch with the whole team.",
        max_turns=3,
    )
    team_events = []
    async for event in team_stream:
        team_events.append(event)
        if event.HasField("token_delta"):
            break
    cids = [await new_conversation(paced_client) for _ in range(6)]
    results = await asyncio.gather(
        *(
            collect(paced_client.conversations.send(conversation_id=cid, content="Hello there"))
            for cid in cids
        ),
        collect(team_stream),
    )
    team_events += results[-1]
    for cid, events in zip(cids, results[:-1], strict=True):
        assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        completed = next(e.message_completed for e in events if e.HasField("message_completed"))
        text = "".join(e.token_delta.text for e in events if e.HasField("token_delta"))
        assert text == completed.content
        stored = await paced_client.conversations.list_messages(conversation_id=cid)
        assert [m.content for m in stored.messages if m.role == events_pb2.MESSAGE_ROLE_AGENT] == [
            text
        ]
    assert team_events[-1].turn_completed.stop_reason in (
        events_pb2.STOP_REASON_COMPLETED,
        events_pb2.STOP_REASON_MAX_TURNS,
    )
    assert team_events[-1].turn_completed.message_count >= 2
