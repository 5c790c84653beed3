"""Streamed text goes to the turn's sink as the model generates it, past AutoGen: AutoGen
sees only the call's result and builds the same message from it; a call that ends with text
is reported under the id of its chunks; errors, cancellation and an early close reach the
right side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, LLMMessage, RequestUsage, UserMessage
from convergio_server.domain.models.delegating import DelegatingChatCompletionClient
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.domain.models.tap import TappedClient

from tests.models.calculator_tool import CALCULATOR

QUESTION: list[LLMMessage] = [UserMessage(content="How do I plan a product launch?", source="u")]


class Sink:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, str, str, datetime]] = []
        self.answers: list[tuple[str, str]] = []

    def text(self, agent: str, message_id: str, chunk: str, generated: datetime) -> None:
        self.chunks.append((agent, message_id, chunk, generated))

    def answered(self, agent: str, message_id: str) -> None:
        self.answers.append((agent, message_id))

    @property
    def joined(self) -> str:
        return "".join(chunk for _, _, chunk, _ in self.chunks)


async def collect(client: TappedClient, **options: Any) -> list[str | CreateResult]:
    return [item async for item in client.create_stream(QUESTION, **options)]


async def test_chunks_go_to_the_sink_and_autogen_gets_only_the_result() -> None:
    direct = [
        c
        async for c in OfflineChatCompletionClient(min_completion_tokens=300).create_stream(
            QUESTION
        )
        if isinstance(c, str)
    ]
    sink = Sink()
    items = await collect(
        TappedClient(OfflineChatCompletionClient(min_completion_tokens=300), "amy", sink)
    )
    assert len(items) == 1 and isinstance(items[0], CreateResult)
    assert [chunk for _, _, chunk, _ in sink.chunks] == direct
    assert sink.joined == items[0].content
    ids = {message_id for _, message_id, _, _ in sink.chunks}
    assert len(ids) == 1 and {agent for agent, _, _, _ in sink.chunks} == {"amy"}
    assert sink.answers == [("amy", ids.pop())]
    times = [generated for _, _, _, generated in sink.chunks]
    assert times == sorted(times)


async def test_each_call_streams_under_an_id_of_its_own() -> None:
    sink = Sink()
    client = TappedClient(OfflineChatCompletionClient(), "luca", sink)
    await collect(client)
    await collect(client)
    assert len({message_id for _, message_id in sink.answers}) == 2
    assert {message_id for _, message_id, _, _ in sink.chunks} == {
        message_id for _, message_id in sink.answers
    }


async def test_a_call_that_ends_with_tool_calls_is_not_an_answer() -> None:
    sink = Sink()
    question = [
        UserMessage(content="What is the NPV of cash flows -1000, 300, 400, 500 at 8%?", source="u")
    ]
    items = [
        item
        async for item in TappedClient(OfflineChatCompletionClient(), "diana", sink).create_stream(
            question, tools=[CALCULATOR]
        )
    ]
    (result,) = items
    assert isinstance(result, CreateResult) and isinstance(result.content, list)
    assert isinstance(result.content[0], FunctionCall)
    assert sink.answers == []


class _Failing(DelegatingChatCompletionClient):
    """Streams a few chunks, then fails, or stops when its reader goes away."""

    def __init__(self) -> None:
        self._inner = OfflineChatCompletionClient()
        self.closed = False

    async def create(self, messages: Sequence[LLMMessage], **_: Any) -> CreateResult:
        raise NotImplementedError

    async def create_stream(  # type: ignore[override]
        self,
        messages: Sequence[LLMMessage],
        *,
        extra_create_args: Mapping[str, Any] = {},
        **_: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        try:
            for word in ("one ", "two ", "three "):
                yield word
                await asyncio.sleep(0.02)
            if extra_create_args.get("fail"):
                raise ConnectionError("the endpoint went away")
            await asyncio.sleep(10)
        finally:
            self.closed = True


async def test_an_error_after_some_chunks_comes_after_them() -> None:
    sink = Sink()
    with pytest.raises(ConnectionError, match="went away"):
        await collect(TappedClient(_Failing(), "amy", sink), extra_create_args={"fail": True})
    assert sink.joined == "one two three "
    assert sink.answers == []


async def test_cancelling_the_consumer_stops_the_model_call() -> None:
    inner = _Failing()
    task = asyncio.create_task(collect(TappedClient(inner, "amy", Sink())))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.closed


async def test_the_cancellation_token_stops_a_paced_stream_at_once() -> None:
    token = CancellationToken()

    class Cancelling(Sink):
        def text(self, agent: str, message_id: str, chunk: str, generated: datetime) -> None:
            super().text(agent, message_id, chunk, generated)
            if len(self.chunks) == 3:
                token.cancel()

    sink = Cancelling()
    client = TappedClient(OfflineChatCompletionClient(tokens_per_second=20), "amy", sink)
    with pytest.raises(asyncio.CancelledError):
        await collect(client, cancellation_token=token)
    assert len(sink.chunks) == 3
    usage: RequestUsage = client.total_usage()
    assert usage.completion_tokens >= 3  # the partial call is still counted


async def test_an_agent_builds_its_message_from_the_tapped_text() -> None:
    sink = Sink()
    client = TappedClient(OfflineChatCompletionClient(min_completion_tokens=300), "amy", sink)
    agent = AssistantAgent("amy", client, model_client_stream=True)
    final = None
    async for item in agent.run_stream(task="How do I plan a product launch?"):
        assert not isinstance(item, ModelClientStreamingChunkEvent)
        if isinstance(item, TextMessage) and item.source == "amy":
            final = item.content
    assert final is not None and final == sink.joined
    assert len(sink.chunks) > 200  # word by word
