"""A ChatCompletionClient that wraps another: everything but the calls themselves
(`create`, `create_stream`) is the inner client's. The platform's decorators
(billing, turn metering, endpoint adaptation) build on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema


class DelegatingChatCompletionClient(ChatCompletionClient):
    """Subclasses set `self._inner` and implement `create` and `create_stream`."""

    _inner: ChatCompletionClient

    @property
    def inner(self) -> ChatCompletionClient:
        return self._inner

    async def close(self) -> None:
        await self._inner.close()

    def actual_usage(self) -> RequestUsage:
        return self._inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._inner.total_usage()

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen, still part of the interface
        return self._inner.model_info

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info
