"""A model-client wrapper that hands streamed text straight to the turn, past AutoGen.

AutoGen turns every chunk a model client yields into an event (a pydantic model with a new
UUID) and passes it up through the agent's generators, and through a team's runtime: more
than the rest of the platform spends on a token. The turn needs none of that: it only
forwards the text as token deltas. So this wrapper gives each chunk to a sink as it arrives
and yields AutoGen only the call's final result, from which AutoGen builds the message as
before. The sink coalesces the chunks into deltas.

Each streamed call gets a message id of its own; when the call ends with text, the sink is
told (`answered`), so that the message AutoGen builds from it can carry the same id as its
deltas.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from convergio_server.domain.models.delegating import DelegatingChatCompletionClient


class TextSink(Protocol):
    def text(self, agent: str, message_id: str, chunk: str, generated: datetime) -> None:
        """A chunk of a streamed call, with the time the model generated it."""
        ...

    def answered(self, agent: str, message_id: str) -> None:
        """The streamed call `message_id` ended with text (not tool calls)."""
        ...


class TappedClient(DelegatingChatCompletionClient):
    def __init__(self, inner: ChatCompletionClient, agent: str, sink: TextSink) -> None:
        self._inner = inner
        self.agent = agent
        self.sink = sink

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        message_id = str(uuid.uuid4())
        stream = self._inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, str):
                    self.sink.text(self.agent, message_id, item, datetime.now(UTC))
                    continue
                if isinstance(item.content, str):
                    self.sink.answered(self.agent, message_id)
                yield item
