"""A ChatCompletionClient that wraps another: everything but the streamed call
(`create_stream`) is the inner client's unless a subclass overrides it. The platform's
decorators (billing, turn metering, the text tap, endpoint adaptation) build on it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel


class DelegatingChatCompletionClient(ChatCompletionClient):
    """Subclasses set `self._inner` and implement `create_stream`; `create` is the inner
    client's unless they override it."""

    _inner: ChatCompletionClient

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        return await self._inner.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )

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


class SwitchedClient(DelegatingChatCompletionClient):
    """Passes every call to the client it was last told to `use`: an agent kept between
    turns keeps this one, and each turn puts its own wrappers (meter, guards) behind it."""

    def __init__(self, inner: ChatCompletionClient) -> None:
        self._inner = inner

    def use(self, inner: ChatCompletionClient) -> None:
        self._inner = inner

    # The options (tools, tool_choice, json_output, extra_create_args, cancellation_token)
    # pass through as given.
    def create_stream(
        self, messages: Sequence[LLMMessage], **options: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        return self._inner.create_stream(messages, **options)
