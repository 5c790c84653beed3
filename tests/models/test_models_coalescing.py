"""Chunks are merged before AutoGen sees them: a burst becomes one chunk per window, a model
slower than the window streams as before, the text and the final result are unchanged, and
errors, cancellation and an early close reach the right side."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, RequestUsage, UserMessage
from convergio_server.domain.models.coalescing import CoalescingClient
from convergio_server.domain.models.delegating import DelegatingChatCompletionClient
from convergio_server.domain.models.offline import OfflineChatCompletionClient

QUESTION: list[LLMMessage] = [UserMessage(content="How do I plan a product launch?", source="u")]


async def collect(client: CoalescingClient) -> tuple[list[str], CreateResult | None]:
    chunks: list[str] = []
    result = None
    async for item in client.create_stream(QUESTION):
        if isinstance(item, str):
            chunks.append(item)
        else:
            result = item
    return chunks, result


async def test_a_burst_reaches_autogen_as_few_chunks_with_the_same_text() -> None:
    model = OfflineChatCompletionClient(min_completion_tokens=400)
    direct = [c async for c in model.create_stream(QUESTION) if isinstance(c, str)]
    generated: deque[datetime] = deque()
    chunks, result = await collect(
        CoalescingClient(OfflineChatCompletionClient(min_completion_tokens=400), 0.005, generated)
    )
    assert result is not None and isinstance(result.content, str)
    assert "".join(chunks) == "".join(direct) == result.content
    assert len(direct) >= 300
    assert chunks[0] == direct[0]  # the first chunk does not wait for a window
    assert len(chunks) < len(direct) / 10
    assert len(generated) == len(chunks)
    assert list(generated) == sorted(generated)


async def test_a_model_slower_than_the_window_streams_chunk_by_chunk() -> None:
    model = OfflineChatCompletionClient(tokens_per_second=100)
    direct = [c async for c in model.create_stream(QUESTION) if isinstance(c, str)]
    chunks, result = await collect(
        CoalescingClient(OfflineChatCompletionClient(tokens_per_second=100), 0.002, deque())
    )
    assert result is not None
    assert "".join(chunks) == "".join(direct)
    # 10 ms between tokens, a 2 ms window: nothing to merge but an occasional late timer.
    assert len(chunks) >= 0.5 * len(direct)


async def test_without_a_window_every_chunk_goes_through() -> None:
    model = OfflineChatCompletionClient()
    direct = [c async for c in model.create_stream(QUESTION) if isinstance(c, str)]
    generated: deque[datetime] = deque()
    chunks, _ = await collect(CoalescingClient(OfflineChatCompletionClient(), 0.0, generated))
    assert chunks == direct
    assert len(generated) == len(direct)


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
    client = CoalescingClient(_Failing(), 0.005, deque())
    chunks = []
    with pytest.raises(ConnectionError, match="went away"):
        async for item in client.create_stream(QUESTION, extra_create_args={"fail": True}):
            chunks.append(item)
    assert "".join(map(str, chunks)) == "one two three "


async def test_closing_the_stream_early_closes_the_model_call() -> None:
    inner = _Failing()
    stream = CoalescingClient(inner, 0.005, deque()).create_stream(QUESTION)
    assert await anext(stream) == "one "
    await stream.aclose()
    assert inner.closed


async def test_cancelling_the_consumer_stops_the_model_call() -> None:
    inner = _Failing()

    async def consume() -> None:
        async for _ in CoalescingClient(inner, 0.005, deque()).create_stream(QUESTION):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.closed


async def test_the_cancellation_token_stops_a_paced_stream_at_once() -> None:
    token = CancellationToken()
    client = CoalescingClient(OfflineChatCompletionClient(tokens_per_second=20), 0.005, deque())
    chunks = []
    with pytest.raises(asyncio.CancelledError):
        async for item in client.create_stream(QUESTION, cancellation_token=token):
            chunks.append(item)
            if len(chunks) == 3:
                token.cancel()
    assert len(chunks) == 3
    usage: RequestUsage = client.total_usage()
    assert usage.completion_tokens >= 3  # the partial call is still counted


async def test_an_agent_streams_the_merged_chunks_and_the_same_message() -> None:
    generated: deque[datetime] = deque()
    client = CoalescingClient(
        OfflineChatCompletionClient(min_completion_tokens=300), 0.005, generated
    )
    agent = AssistantAgent("amy", client, model_client_stream=True)
    chunks: list[str] = []
    final = None
    async for item in agent.run_stream(task="How do I plan a product launch?"):
        if isinstance(item, ModelClientStreamingChunkEvent):
            chunks.append(item.content)
        elif isinstance(item, TextMessage) and item.source == "amy":
            final = item.content
    assert final is not None and "".join(chunks) == final
    assert 1 < len(chunks) < 60
    assert len(generated) == len(chunks)
