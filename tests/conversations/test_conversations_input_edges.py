"""Input at the edges of what the API takes: id spellings, text no store can hold, enum
numbers the server does not know, oversized names echoed in errors, empty teams, repeated
request_ids (at once, for another message, after a delete), documents with secrets, and
followers of a deleted conversation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.domain.conversations.model import MAX_QUEUED_TURNS
from convergio_server.domain.conversations.service import idle_tick

from tests.conversations.conftest import (
    PACED_TOKENS_PER_SECOND,
    collect,
    kinds,
    member_key,
    new_conversation,
)
from tests.support.server import running_server, server_settings

# An OpenAI-style key as the secret rules know it (built in pieces: it is not a real key).
SECRET = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "AbCdEfGh"


def field_of(error: pytest.ExceptionInfo[errors.InvalidArgument]) -> str:
    return str(error.value.field_violations[0].field)


async def test_ids_in_other_spellings_are_refused_and_upper_case_is_the_same_id(
    conv: AsyncClient,
) -> None:
    cid = await new_conversation(conv)
    for spelling in (f"{{{cid}}}", f"urn:uuid:{cid}", cid.replace("-", "")):
        with pytest.raises(errors.InvalidArgument) as bad:
            await conv.conversations.get_conversation(conversation_id=spelling)
        assert field_of(bad) == "conversation_id"
        assert "expected a UUID" in bad.value.message
    with pytest.raises(errors.InvalidArgument) as bad_turn:
        await conv.conversations.get_turn(conversation_id=cid, turn_id=f"{{{uuid.uuid4()}}}")
    assert field_of(bad_turn) == "turn_id"
    got = await conv.conversations.get_conversation(conversation_id=cid.upper())
    assert got.conversation.conversation_id == cid
    events = await collect(conv.conversations.send(conversation_id=cid.upper(), content="Hello"))
    assert kinds(events)[-1] == "turn_completed"
    assert {e.conversation_id for e in events} == {cid}


async def test_nul_characters_are_refused_where_they_would_be_stored(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    with pytest.raises(errors.InvalidArgument) as content:
        await collect(conv.conversations.send(conversation_id=cid, content="a\x00b"))
    assert field_of(content) == "content"
    assert "NUL" in content.value.message
    with pytest.raises(errors.InvalidArgument) as title:
        await conv.conversations.create_conversation(title="t\x00")
    assert field_of(title) == "title"
    with pytest.raises(errors.InvalidArgument) as label:
        await conv.conversations.create_conversation(labels={"team": "x\x00"})
    assert field_of(label) == "labels['team']"
    with pytest.raises(errors.InvalidArgument) as document:
        await collect(
            conv.conversations.send(
                conversation_id=cid,
                content="Summarise it",
                documents=[pb.InputDocument(title="notes", content="\x00")],
            )
        )
    assert field_of(document) == "documents[0].content"
    with pytest.raises(errors.InvalidArgument) as reason:
        await conv.conversations.cancel_turn(conversation_id=cid, reason="\x00")
    assert field_of(reason) == "reason"
    # Nothing was stored: the conversation goes on.
    events = await collect(conv.conversations.send(conversation_id=cid, content="Hello"))
    assert kinds(events)[-1] == "turn_completed"


async def test_enum_numbers_the_server_does_not_know_are_refused(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    with pytest.raises(errors.InvalidArgument) as status:
        await conv.conversations.list_conversations(status=99)  # type: ignore[arg-type]
    assert field_of(status) == "status"
    assert "CONVERSATION_STATUS_IDLE" in status.value.message
    with pytest.raises(errors.InvalidArgument) as busy:
        await collect(
            conv.conversations.send(
                conversation_id=cid,
                content="Hello",
                if_busy=7,  # type: ignore[arg-type]
            )
        )
    assert field_of(busy) == "if_busy"
    with pytest.raises(errors.InvalidArgument) as provider:
        await conv.conversations.create_conversation(
            model=common_pb2.ModelSelection(provider=9)  # type: ignore[arg-type]
        )
    assert field_of(provider) == "model.provider"


async def test_an_oversized_name_is_not_found_with_a_short_message(conv: AsyncClient) -> None:
    # The whole name repeated in the status used to exceed what a client accepts in
    # metadata: the client then saw RESOURCE_EXHAUSTED instead of NOT_FOUND.
    for size in (5_000, 20_000):
        with pytest.raises(errors.NotFound) as missing:
            await conv.conversations.get_agent(name="x" * size)
        assert len(missing.value.message) <= 1000
        with pytest.raises(errors.NotFound):
            await conv.conversations.create_conversation(team=pb.Team(single_agent="y" * size))


async def test_an_empty_team_is_refused_not_made_the_core_team(conv: AsyncClient) -> None:
    teams = {
        "team.agents.names": pb.Team(agents=pb.AgentNames(names=[])),
        "team.single_agent": pb.Team(single_agent=""),
        "team.preset": pb.Team(preset=""),
    }
    for field, team in teams.items():
        with pytest.raises(errors.InvalidArgument) as empty:
            await conv.conversations.create_conversation(team=team)
        assert field_of(empty) == field


async def test_sends_of_one_request_id_at_once_share_one_turn(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)

    async def send() -> list[events_pb2.ConversationEvent]:
        return await collect(
            conv.conversations.send(conversation_id=cid, content="Hello", request_id="together")
        )

    streams = await asyncio.gather(*(send() for _ in range(6)))
    turn_ids = {event.turn_id for events in streams for event in events}
    assert len(turn_ids) == 1
    assert all(kinds(events)[-1] == "turn_completed" for events in streams)
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert len(turns.turns) == 1


async def test_queued_sends_of_one_request_id_at_once_share_one_turn(
    paced_client: AsyncClient,
) -> None:
    cid = await new_conversation(paced_client)
    running = paced_client.conversations.send(conversation_id=cid, content="Tell me a story")
    first = await running.__anext__()
    assert first.HasField("turn_started")

    async def queue() -> str:
        stream = paced_client.conversations.send(
            conversation_id=cid,
            content="And then?",
            request_id="queued-together",
            if_busy=pb.BUSY_POLICY_ENQUEUE,
        )
        async for event in stream:
            return event.turn_id  # the queued turn's first event names it
        raise AssertionError("no event")

    queued = await asyncio.gather(*(queue() for _ in range(5)))
    assert len(set(queued)) == 1
    await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=queued[0])
    await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=first.turn_id)
    await collect(running)
    turns = await paced_client.conversations.list_turns(conversation_id=cid)
    assert len(turns.turns) == 2


async def test_sends_queued_at_once_get_distinct_places_and_respect_the_limit(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    streaming: None,
) -> None:
    # More turns at once than the queue holds, so a rate limit above them.
    stores = (pg_dsn, redis_url, redis_prefix)
    async with _paced_client(tmp_path_factory.mktemp("queue-limit"), stores, 100) as client:
        await _queue_at_once(client)


@contextlib.asynccontextmanager
async def _paced_client(
    data: Path, stores: tuple[str, str, str], turns_per_minute: int
) -> AsyncIterator[AsyncClient]:
    """A client of a server of its own, with a paced model and this turn rate limit."""
    settings = server_settings(
        data, *stores, offline_tokens_per_second=PACED_TOKENS_PER_SECOND,
        rate_limit_turns_per_minute=turns_per_minute,
    )  # fmt: skip
    async with (
        running_server(settings) as running,
        AsyncClient(running.target, api_key=await member_key(running)) as client,
    ):
        yield client


async def test_a_send_refused_as_busy_takes_no_turn_of_the_rate_limit(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    streaming: None,
) -> None:
    # Only turns count: a message refused because a turn runs (or the queue is full) starts
    # none, so it gives its place in the window back.
    stores = (pg_dsn, redis_url, redis_prefix)
    async with _paced_client(tmp_path_factory.mktemp("busy-rate"), stores, 3) as client:
        cid = await new_conversation(client)
        running = client.conversations.send(conversation_id=cid, content="Tell me a story")
        first = await running.__anext__()
        for i in range(3):
            with pytest.raises(errors.FailedPrecondition):
                await collect(client.conversations.send(conversation_id=cid, content=f"{i}?"))
        status = await client.costs.get_rate_limit_status()
        turns = next(s for s in status.limits if s.window.seconds == 60)
        assert (turns.used, turns.remaining) == (1, 2)
        await client.conversations.cancel_turn(conversation_id=cid, turn_id=first.turn_id)
        await collect(running)
        for i in range(2):  # the two turns left in the window
            done = await collect(
                client.conversations.send(conversation_id=cid, content=f"Short, {i}")
            )
            assert done[-1].HasField("turn_completed")


async def _queue_at_once(paced_client: AsyncClient) -> None:
    cid = await new_conversation(paced_client)
    running = paced_client.conversations.send(conversation_id=cid, content="Tell me a story")
    first = await running.__anext__()
    assert first.HasField("turn_started")

    async def queue(i: int) -> tuple[str, int] | str:
        stream = paced_client.conversations.send(
            conversation_id=cid, content=f"And then? ({i})", if_busy=pb.BUSY_POLICY_ENQUEUE
        )
        try:
            async for event in stream:
                return event.turn_id, event.turn_queued.position
        except errors.FailedPrecondition as exc:
            return exc.message
        raise AssertionError("no event")

    outcomes = await asyncio.gather(*(queue(i) for i in range(MAX_QUEUED_TURNS + 3)))
    places = dict(o for o in outcomes if isinstance(o, tuple))
    refused = [o for o in outcomes if isinstance(o, str)]
    # One place each, and no more turns queued than the queue holds.
    assert sorted(places.values()) == list(range(1, MAX_QUEUED_TURNS + 1))
    assert len(refused) == 3 and all("already queued" in r for r in refused)
    # The places are the order in which the queued turns will run.
    turns = await paced_client.conversations.list_turns(conversation_id=cid)
    queued = sorted(
        (t for t in turns.turns if t.status == pb.TURN_STATUS_QUEUED),
        key=lambda t: (t.create_time.seconds, t.create_time.nanos),
    )
    assert [places[t.turn_id] for t in queued] == list(range(1, MAX_QUEUED_TURNS + 1))
    await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=first.turn_id)
    for turn in queued:
        await paced_client.conversations.cancel_turn(conversation_id=cid, turn_id=turn.turn_id)
    await collect(running)


async def test_a_request_id_reused_for_another_message_is_refused(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    first = await collect(
        conv.conversations.send(conversation_id=cid, content="Hello", request_id="reused")
    )
    with pytest.raises(errors.InvalidArgument) as reused:
        await collect(
            conv.conversations.send(
                conversation_id=cid, content="Something else", request_id="reused"
            )
        )
    assert field_of(reused) == "request_id"
    assert first[0].turn_id in reused.value.message
    again = await collect(
        conv.conversations.send(conversation_id=cid, content="Hello", request_id="reused")
    )
    assert [e.sequence for e in again] == [e.sequence for e in first]


async def test_a_create_repeated_after_its_conversation_was_deleted_is_refused(
    conv: AsyncClient,
) -> None:
    request_id = f"create-{uuid.uuid4().hex[:8]}"
    created = await conv.conversations.create_conversation(request_id=request_id, title="a")
    cid = created.conversation.conversation_id
    await conv.conversations.delete_conversation(conversation_id=cid)
    with pytest.raises(errors.FailedPrecondition) as gone:
        await conv.conversations.create_conversation(request_id=request_id, title="a")
    assert cid in gone.value.message
    assert "new request_id" in gone.value.message


async def test_documents_are_screened_as_the_message_is(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    with pytest.raises(errors.InvalidArgument) as blocked:
        await collect(
            conv.conversations.send(
                conversation_id=cid,
                content="Summarise the document",
                documents=[
                    pb.InputDocument(title="fine", content="Quarterly notes."),
                    pb.InputDocument(title="notes", content=f"our key is {SECRET}"),
                ],
            )
        )
    assert blocked.value.reason == "INPUT_BLOCKED"
    assert field_of(blocked) == "documents[1].content"
    assert "document 2" in blocked.value.message
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert not turns.turns


async def test_a_follower_of_a_deleted_conversation_is_told_it_is_gone(
    conv: AsyncClient,
) -> None:
    cid = await new_conversation(conv)
    await collect(conv.conversations.send(conversation_id=cid, content="Hello"))

    async def follow() -> None:
        async for _ in conv.conversations.stream_events(conversation_id=cid, after_sequence=0):
            pass

    follower = asyncio.ensure_future(follow())
    await asyncio.sleep(0.3)
    await conv.conversations.delete_conversation(conversation_id=cid)
    # Within the lease period (10 s), when the idle stream next looks at the conversation.
    with pytest.raises(errors.NotFound) as gone:
        await asyncio.wait_for(follower, 30)
    assert "deleted" in gone.value.message


@pytest.mark.parametrize(
    ("heartbeat", "lease"), [(15.0, 10.0), (15.0, 15.0), (15.0, 4.0), (5.0, 10.0), (30.0, 7.0)]
)
def test_an_idle_stream_wakes_for_every_lease_period_and_on_each_heartbeat(
    heartbeat: float, lease: float
) -> None:
    tick = idle_tick(heartbeat, lease)
    assert tick <= lease  # a dead process's turn is noticed within a lease period
    wakes = heartbeat / tick
    assert abs(wakes - round(wakes)) < 1e-9  # the heartbeat falls on a wake-up


async def test_a_label_key_or_id_ending_in_a_newline_is_refused(conv: AsyncClient) -> None:
    # A pattern's `$` matches before a final newline; the checks end at the text's end.
    with pytest.raises(errors.InvalidArgument) as label:
        await conv.conversations.create_conversation(labels={"team\n": "x"})
    assert field_of(label).startswith("labels")
    cid = await new_conversation(conv)
    with pytest.raises(errors.InvalidArgument) as bad_id:
        await conv.conversations.get_conversation(conversation_id=cid + "\n")
    assert field_of(bad_id) == "conversation_id"


async def test_documents_need_text_and_ids_of_a_sensible_size(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    bad = [
        (pb.InputDocument(document_id="empty", content="  "), "documents[0].content"),
        (pb.InputDocument(document_id="d" * 501, content="text"), "documents[0].document_id"),
        (pb.InputDocument(content="text", source="s" * 501), "documents[0].source"),
    ]
    for document, field in bad:
        with pytest.raises(errors.InvalidArgument) as refused:
            await collect(
                conv.conversations.send(conversation_id=cid, content="Hi", documents=[document])
            )
        assert field_of(refused) == field
    turns = await conv.conversations.list_turns(conversation_id=cid)
    assert not turns.turns  # nothing was started
