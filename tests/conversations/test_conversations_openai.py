"""A turn over an OpenAI-compatible endpoint (a local server that speaks the protocol with
server-sent events): the endpoint's streamed text reaches the client as token deltas, its
tool call runs, and its reported usage is the turn's."""

from __future__ import annotations

from convergio import AsyncClient
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import events_pb2

from tests.conversations.conftest import collect, kinds, new_conversation
from tests.models.openai_stub import Action, openai_stub


async def test_a_turn_streams_an_endpoints_tool_call_and_answer(conv: AsyncClient) -> None:
    async with openai_stub() as stub:
        stub.then(Action("tool"), Action("text", text="At 8% the NPV is about 11 euros"))
        cid = await new_conversation(
            conv,
            agent="amy",
            model=common_pb2.ModelSelection(
                provider=common_pb2.MODEL_PROVIDER_OPENAI,
                model="gpt-4o-mini",
                endpoint=common_pb2.ModelEndpoint(base_url=stub.base_url),
            ),
        )
        events = await collect(
            conv.conversations.send(conversation_id=cid, content="What is the NPV at 8%?")
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
