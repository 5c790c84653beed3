"""Failures during a turn: a model endpoint that is down or answers garbage ends the turn
with an Error event and TurnCompleted(ERROR), and the conversation stays usable; a bad
model selection is refused at creation. Also: grpcurl can drive a turn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.domain.errors import Unavailable
from convergio_server.domain.events.failures import error_event, outage_failure
from convergio_server.domain.models.errors import ModelError
from convergio_server.storage.redis import Keys

from tests.conversations.conftest import TENANT, collect, kinds, member_key, new_conversation
from tests.platform.procs import free_port
from tests.support.server import RunningServer

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
async def garbage_endpoint() -> AsyncIterator[str]:
    """An HTTP server that answers every request with something that is not the OpenAI
    protocol."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = b"<html>not an API</html>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


def openai_at(base_url: str) -> common_pb2.ModelSelection:
    return common_pb2.ModelSelection(
        provider=common_pb2.MODEL_PROVIDER_OPENAI,
        model="gpt-4o-mini",
        endpoint=common_pb2.ModelEndpoint(base_url=base_url),
    )


# AutoGen warns about the empty result a garbage stream gives before it becomes an error.
@pytest.mark.filterwarnings("ignore:No text content or tool calls:UserWarning")
@pytest.mark.parametrize("endpoint", ["down", "garbage"])
async def test_a_failing_model_ends_the_turn_with_an_error(
    conv: AsyncClient, garbage_endpoint: str, endpoint: str
) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1" if endpoint == "down" else garbage_endpoint
    cid = await new_conversation(conv, model=openai_at(base_url))
    events = await collect(conv.conversations.send(conversation_id=cid, content="Hello"))
    assert kinds(events)[-2:] == ["error", "turn_completed"]
    error = events[-2].error
    assert error.code in (14, 4) and "model" in error.message
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    conversation = (await conv.conversations.get_conversation(conversation_id=cid)).conversation
    assert conversation.status == pb.CONVERSATION_STATUS_IDLE
    # Still usable: the next message is accepted and ends the same clean way.
    again = await collect(conv.conversations.send(conversation_id=cid, content="Hello again"))
    assert again[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    turn = await conv.conversations.get_turn(conversation_id=cid, turn_id=again[0].turn_id)
    assert turn.turn.error.code == error.code and turn.turn.stop_detail


async def test_a_bad_model_selection_is_refused(conv: AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument) as bad_url:
        await conv.conversations.create_conversation(model=openai_at("ftp://example"))
    assert bad_url.value.field_violations[0].field == "model.endpoint.base_url"
    with pytest.raises(errors.InvalidArgument) as bad_override:
        await conv.conversations.create_conversation(
            team=pb.Team(single_agent="amy"), agent_models={"luca": common_pb2.ModelSelection()}
        )
    assert bad_override.value.field_violations[0].field == "agent_models[luca]"


async def test_grpcurl_sends_a_message(server: RunningServer, streaming: None) -> None:
    key = await member_key(server)
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client)
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-H",
        f"authorization: Bearer {key}",
        "-d",
        json.dumps({"conversation_id": cid, "content": "Hello from grpcurl"}),
        server.target,
        "convergio.conversation.v1.ConversationService/SendMessage",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    decoder = json.JSONDecoder()
    text, events = out.decode().strip(), []
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event["event"])
        text = text[end:].strip()
    assert "turnStarted" in events[0] and "turnCompleted" in events[-1]
    assert events[-1]["turnCompleted"]["stopReason"] == "STOP_REASON_COMPLETED"
    assert any("tokenDelta" in e for e in events)


async def test_a_failing_tool_is_reported_and_the_turn_goes_on(conv: AsyncClient) -> None:
    cid = await new_conversation(conv)
    events = await collect(
        conv.conversations.send(
            conversation_id=cid, content="What is the ROI of a 0 investment that returns 100?"
        )
    )
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert result.is_error
    assert result.error_kind == events_pb2.TOOL_ERROR_KIND_INVALID_ARGUMENTS
    assert result.attempts == 1
    assert kinds(events).count("message_completed") == 1  # the agent answered without it
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_a_turn_whose_start_cannot_be_logged_ends_and_is_logged_later(
    conv: AsyncClient, server: RunningServer
) -> None:
    # Redis refuses the conversation's log (its stream key holds a string): the caller gets
    # an error, the turn ends at once instead of waiting for a reaper, and once the log
    # works again the turn's events reach it, its end included.
    cid = await new_conversation(conv)
    stream_key = Keys(server.settings.redis_prefix).k("conv", TENANT, cid, "events")
    await server.infra.redis.set(stream_key, "not a stream")
    with pytest.raises(errors.Internal):
        await collect(conv.conversations.send(conversation_id=cid, content="Hello"))
    (turn,) = (await conv.conversations.list_turns(conversation_id=cid)).turns
    for _ in range(100):
        turn = (await conv.conversations.get_turn(conversation_id=cid, turn_id=turn.turn_id)).turn
        if turn.status == pb.TURN_STATUS_ENDED:
            break
        await asyncio.sleep(0.05)
    assert turn.stop_reason == events_pb2.STOP_REASON_ERROR
    await server.infra.redis.delete(stream_key)
    for _ in range(100):
        logged = [
            r.event
            async for r in conv.conversations.stream_events(
                conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
            )
        ]
        if logged and logged[-1].HasField("turn_completed"):
            break
        await asyncio.sleep(0.1)
    assert kinds(logged)[0] == "turn_started" and kinds(logged)[-1] == "turn_completed"
    assert logged[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    # The conversation goes on.
    events = await collect(conv.conversations.send(conversation_id=cid, content="Hello again"))
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_a_log_failing_mid_turn_ends_the_turn_with_an_error(
    paced_client: AsyncClient, paced: RunningServer
) -> None:
    # The conversation's log breaks while tokens stream: the turn stops with an error
    # instead of streaming into the void, and its end reaches the client once the log
    # works again.
    cid = await new_conversation(paced_client)
    stream_key = Keys(paced.settings.redis_prefix).k("conv", TENANT, cid, "events")
    events = []
    async for event in paced_client.conversations.send(
        conversation_id=cid, content="How do I plan a product launch?"
    ):
        events.append(event)
        if kinds(events).count("token_delta") == 3:
            await paced.infra.redis.delete(stream_key)
            await paced.infra.redis.set(stream_key, "not a stream")
            turn_id = event.turn_id
            for _ in range(100):
                got = await paced_client.conversations.get_turn(
                    conversation_id=cid, turn_id=turn_id
                )
                if got.turn.status == pb.TURN_STATUS_ENDED:
                    break
                await asyncio.sleep(0.05)
            assert got.turn.stop_reason == events_pb2.STOP_REASON_ERROR
            await paced.infra.redis.delete(stream_key)
    assert kinds(events)[-1] == "turn_completed"
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    assert "message_completed" not in kinds(events)
    (error,) = [e.error for e in events if e.HasField("error")]
    assert error.reason == common_pb2.ERROR_REASON_UNAVAILABLE and error.retryable
    assert error.message.startswith("the conversation's event log could not be written")


def test_a_store_outage_is_no_failure_of_the_tenants_turns() -> None:
    # Turns ended by an unreachable store, or refused by a breaker, are neutral for the
    # tenant's breaker; a model endpoint's failures count on the endpoint's own.
    socket_gone = FileNotFoundError(2, "No such file or directory", "/srv/x/redis.sock")
    assert outage_failure(Unavailable("Redis is unreachable; retry shortly"))
    assert outage_failure(socket_gone)
    assert not outage_failure(ModelError("model 'm' cannot be reached", kind="unavailable"))
    assert not outage_failure(ValueError("a bug"))
    # Said without the internal path the operating system named.
    event = error_event(socket_gone)
    assert event.reason == "UNAVAILABLE" and event.retryable
    assert "/srv" not in event.message and "send the message again" in event.message
