"""A turn over an OpenAI-compatible endpoint (a local server that speaks the protocol with
server-sent events): the endpoint's streamed text reaches the client as token deltas, its
tool call runs (a malformed or unknown one becomes a tool error the turn goes on after), and
its reported usage is the turn's."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from convergio import AsyncClient
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.errors import InvalidArgument

from tests.conversations.conftest import (
    PRICED_TENANT,
    collect,
    kinds,
    member_key,
    new_conversation,
    wait_streaming,
)
from tests.models.openai_stub import Action, OpenAIStub, openai_stub
from tests.support.server import RunningServer, running_server, server_settings


async def _stub_conversation(client: AsyncClient, stub: OpenAIStub, **selection: int) -> str:
    """A conversation with amy answering through the stub endpoint."""
    return await new_conversation(
        client,
        agent="amy",
        model=common_pb2.ModelSelection(
            provider=common_pb2.MODEL_PROVIDER_OPENAI,
            model="gpt-4o-mini",
            endpoint=common_pb2.ModelEndpoint(base_url=stub.base_url),
            **selection,
        ),
    )


async def test_a_turn_streams_an_endpoints_tool_call_and_answer(priced_conv: AsyncClient) -> None:
    async with openai_stub() as stub:
        stub.then(Action("tool"), Action("text", text="At 8% the NPV is about 11 euros"))
        cid = await _stub_conversation(priced_conv, stub)
        events = await collect(
            priced_conv.conversations.send(conversation_id=cid, content="What is the NPV at 8%?")
        )
    names = kinds(events)
    assert names[-1] == "turn_completed", names
    assert names.index("tool_call") < names.index("tool_result") < names.index("token_delta")
    call = next(e.tool_call for e in events if e.HasField("tool_call"))
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert call.tool == "financial_calculator" and not result.is_error
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    deltas = [e.token_delta for e in events if e.HasField("token_delta")]
    assert completed.content == "At 8% the NPV is about 11 euros"
    assert {d.message_id for d in deltas} == {completed.message_id}
    assert "".join(d.text for d in deltas) == completed.content
    assert completed.model == "openai/gpt-4o-mini"
    done = events[-1].turn_completed
    assert done.stop_reason == events_pb2.STOP_REASON_COMPLETED
    # Two calls (the tool choice and the answer), each reported by the endpoint as 11 + 7.
    assert (done.usage.model_calls, done.usage.prompt_tokens) == (2, 22)
    assert done.usage.completion_tokens == 14
    assert all(request.body.get("stream") for request in stub.requests)
    # No max_output_tokens chosen: the endpoint is sent the cap the cost guards reserve
    # for (an uncapped answer could spend past a budget).
    assert all(request.body.get("max_tokens") == 4096 for request in stub.requests)


def _local_model(
    info: common_pb2.ModelInfo, *, base_url: str = "", max_output_tokens: int = 0
) -> common_pb2.ModelSelection:
    """A model the server does not know, behind an OpenAI-compatible endpoint."""
    return common_pb2.ModelSelection(
        provider=common_pb2.MODEL_PROVIDER_OPENAI,
        model="local-model",
        max_output_tokens=max_output_tokens,
        endpoint=common_pb2.ModelEndpoint(base_url=base_url, model_info=info),
    )


async def _last_request_after_turns(server: RunningServer, info: common_pb2.ModelInfo) -> str:
    """Five turns of 900-word messages over the endpoint (a client of their own: turns
    are rate-limited per key); the text of the messages of the last request it got."""
    async with (
        openai_stub() as stub,
        AsyncClient(server.target, api_key=await member_key(server, PRICED_TENANT)) as client,
    ):
        stub.then(*(Action("text", text=f"Noted {i}") for i in range(5)))
        cid = await new_conversation(
            client,
            agent="amy",
            model=_local_model(info, base_url=stub.base_url, max_output_tokens=1000),
        )
        for i in range(5):
            words = " ".join(f"w{i}x{k}" for k in range(900))
            await collect(
                client.conversations.send(conversation_id=cid, content=f"Turn {i}: {words}")
            )
        messages = stub.requests[-1].body["messages"]
    return "\n".join(str(m.get("content")) for m in messages)


async def test_a_models_context_window_bounds_what_its_calls_carry(
    server: RunningServer, priced_streaming: None
) -> None:
    small = await _last_request_after_turns(
        server, common_pb2.ModelInfo(function_calling=True, context_window_tokens=4000)
    )
    # 4,000 tokens less 1,000 for the answer leave room for the running turn and the one
    # before it, not for all four earlier turns (3,600 tokens and more).
    assert "Turn 4:" in small and "Turn 3:" in small
    assert "Turn 0:" not in small
    large = await _last_request_after_turns(server, common_pb2.ModelInfo(function_calling=True))
    assert all(f"Turn {i}:" in large for i in range(5))


async def test_a_context_window_out_of_range_is_refused(priced_conv: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await new_conversation(
            priced_conv,
            agent="amy",
            model=_local_model(common_pb2.ModelInfo(context_window_tokens=10)),
        )
    assert "context_window_tokens" in str(refused.value)


async def test_a_context_window_is_kept_with_the_conversation(priced_conv: AsyncClient) -> None:
    selection = _local_model(
        common_pb2.ModelInfo(function_calling=True, context_window_tokens=8192),
        base_url="http://127.0.0.1:9/v1",
    )
    cid = await new_conversation(priced_conv, agent="amy", model=selection)
    got = await priced_conv.conversations.get_conversation(conversation_id=cid)
    assert got.conversation.model.endpoint.model_info.context_window_tokens == 8192


async def test_a_model_without_function_calling_answers_without_tools(
    priced_conv: AsyncClient,
) -> None:
    # A small local model: the agent's tools are not offered to it (AutoGen would refuse
    # every call), and it answers.
    async with openai_stub() as stub:
        stub.then(Action("text", text="Roughly 11 euros"))
        cid = await new_conversation(
            priced_conv,
            agent="amy",
            model=_local_model(
                common_pb2.ModelInfo(function_calling=False), base_url=stub.base_url
            ),
        )
        events = await collect(
            priced_conv.conversations.send(conversation_id=cid, content="What is the NPV at 8%?")
        )
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert "tool_call" not in kinds(events)
    assert all("tools" not in request.body for request in stub.requests)


async def _turn_with_a_tool_call(
    client: AsyncClient, call: Action, answer: str
) -> tuple[list[events_pb2.ConversationEvent], list[dict[str, object]]]:
    """A turn in which the endpoint asks for `call`, then answers `answer`: the events the
    client received, and the messages of the endpoint's last request."""
    async with openai_stub() as stub:
        stub.then(call, Action("text", text=answer))
        cid = await _stub_conversation(client, stub)
        events = await collect(
            client.conversations.send(conversation_id=cid, content="What is the NPV at 8%?")
        )
        messages = stub.requests[-1].body["messages"]
    return events, messages


def _answered_without_the_tool(
    events: list[events_pb2.ConversationEvent],
    messages: list[dict[str, object]],
    answer: str,
) -> events_pb2.ToolResult:
    """The one ToolResult of a turn that went on after the failed call and completed with
    the endpoint's answer; the model was sent the same error text as the client."""
    names = kinds(events)
    assert names[-1] == "turn_completed", names
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert names.index("tool_call") < names.index("tool_result") < names.index("token_delta")
    results = [e.tool_result for e in events if e.HasField("tool_result")]
    assert len(results) == 1
    result = results[0]
    assert result.is_error and result.attempts == 0
    completed = [e.message_completed for e in events if e.HasField("message_completed")]
    assert completed[-1].content == answer
    assert messages[-1]["role"] == "tool" and messages[-1]["content"] == result.content
    return result


@pytest.mark.parametrize(
    ("arguments", "detail"),
    [
        ('{"operation": "npv", "values": [-100, 60', "not valid JSON"),
        ("[-100, 60, 70]", "an array"),
    ],
)
async def test_a_tool_call_whose_arguments_are_not_a_json_object_is_invalid(
    priced_conv: AsyncClient, arguments: str, detail: str
) -> None:
    answer = "I could not run the calculator, so here is an estimate"
    events, messages = await _turn_with_a_tool_call(
        priced_conv, Action("tool", tool_arguments=arguments), answer
    )
    result = _answered_without_the_tool(events, messages, answer)
    assert result.tool == "financial_calculator"
    assert result.error_kind == events_pb2.TOOL_ERROR_KIND_INVALID_ARGUMENTS
    assert result.content.startswith(
        "error (INVALID_ARGUMENTS): arguments are not a JSON object"
    ), result.content
    assert detail in result.content


async def test_a_call_of_a_tool_the_agent_does_not_have_names_the_tools_it_has(
    priced_conv: AsyncClient,
) -> None:
    answer = "I have no such tool, so here is an estimate"
    events, messages = await _turn_with_a_tool_call(
        priced_conv, Action("tool", tool_name="send_wire_transfer"), answer
    )
    call = next(e.tool_call for e in events if e.HasField("tool_call"))
    assert call.tool == "send_wire_transfer"
    result = _answered_without_the_tool(events, messages, answer)
    assert result.tool == "send_wire_transfer"
    assert result.error_kind == events_pb2.TOOL_ERROR_KIND_UNKNOWN_TOOL
    assert result.content.startswith("error (UNKNOWN_TOOL): "), result.content
    assert "'send_wire_transfer'" in result.content
    for tool in ("financial_calculator", "search_knowledge_base", "conversation_cost"):
        assert tool in result.content


async def test_an_answer_over_the_message_limit_is_cut_on_the_wire_and_kept_whole(
    tmp_path: Path,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    priced_streaming: None,
) -> None:
    # An endpoint answers about 300 KB (the caller allowed 120,000 output tokens) to a
    # server whose gRPC messages are at most 256 KiB: the answer's MessageCompleted could
    # not be sent, and a client re-attaching would meet it again forever. Its text is cut
    # to fit, with a note; the transcript keeps the whole answer.
    limit = 256 * 1024
    answer = " ".join(f"{i:04d}" + "x" * 995 for i in range(300))
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, max_message_bytes=limit)
    async with running_server(settings) as small, openai_stub() as stub:
        stub.then(Action("text", text=answer))
        async with AsyncClient(
            small.target, api_key=await member_key(small, PRICED_TENANT)
        ) as client:
            await wait_streaming(client)
            cid = await _stub_conversation(client, stub, max_output_tokens=120_000)
            events = await collect(
                client.conversations.send(conversation_id=cid, content="Write it all out.")
            )
            replayed = [
                response.event
                async for response in client.conversations.stream_events(
                    conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
                )
            ]
            listed = await client.conversations.list_messages(conversation_id=cid)
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    completed = next(e.message_completed for e in events if e.HasField("message_completed"))
    assert completed.content.startswith(answer[:1000])
    assert "[cut: " in completed.content and "max_message_bytes" in completed.content
    assert len(completed.content.encode()) < limit
    assert kinds(replayed) == kinds(events)
    agent = [m for m in listed.messages if m.role == events_pb2.MESSAGE_ROLE_AGENT]
    assert len(agent) == 1 and "[cut: " in agent[0].content
    # The tokens arrived whole (each delta is small), and the transcript has every byte.
    streamed = "".join(e.token_delta.text for e in events if e.HasField("token_delta"))
    assert streamed == answer
    connection = await asyncpg.connect(pg_dsn)
    try:
        stored = await connection.fetchval(
            "SELECT content FROM messages WHERE id = $1", completed.message_id
        )
    finally:
        await connection.close()
    assert stored == answer
