"""A model-client wrapper that coalesces streamed text chunks before AutoGen sees them.

AutoGen turns every chunk a model client yields into an event and passes it through the
agent (and a team's runtime): about 13 µs a chunk, more than the model itself and the rest of
the platform spend on a token. Coalescing after AutoGen (into token deltas) saves gRPC
messages but not that cost, so chunks are merged here too, over the same window: the first
chunk after a quiet window goes on at once, the chunks of a burst wait for the window to
close and go on as one. A model paced slower than the window streams exactly as before.

When each merged chunk's first part was generated is kept in `generated` (oldest first, one
entry per chunk yielded), so that token deltas keep the model's own time, not the time the
window closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from convergio_server.domain.models.delegating import DelegatingChatCompletionClient


class _Pending:
    """What the reading task has taken from the model and the stream has not yielded yet."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.first_generated: datetime | None = None
        self.result: CreateResult | None = None
        self.error: BaseException | None = None
        self.finished = False
        # Resolved when the stream should look again: on the next chunk while it waits for
        # one (`on_chunk`), or when the model is done while it waits out a window.
        self.wake: asyncio.Future[None] | None = None
        self.on_chunk = False

    def add(self, chunk: str) -> None:
        if not self.parts:
            self.first_generated = datetime.now(UTC)
        self.parts.append(chunk)
        if self.on_chunk:
            self._wake()

    def finish(self, result: CreateResult | None, error: BaseException | None) -> None:
        self.result, self.error, self.finished = result, error, True
        self._wake()

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def take(self) -> tuple[str, datetime | None]:
        text, generated = "".join(self.parts), self.first_generated
        self.parts, self.first_generated = [], None
        return text, generated


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class CoalescingClient(DelegatingChatCompletionClient):
    def __init__(
        self, inner: ChatCompletionClient, window_seconds: float, generated: deque[datetime]
    ) -> None:
        self._inner = inner
        self.window = window_seconds
        self.generated = generated

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
        stream = self._inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        if self.window <= 0:
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, str):
                        self.generated.append(datetime.now(UTC))
                    yield item
            return
        pending = _Pending()
        # The model is read by a task of its own, so that chunks keep arriving while a
        # window is open; the model's stream is closed there, however this one ends.
        reader = asyncio.create_task(_read(stream, pending), name="model-stream")
        try:
            async for item in self._merged(pending):
                yield item
        except asyncio.CancelledError as exc:
            reader.cancel(*exc.args[:1])  # the reason (a client gone) goes to the model call
            raise
        finally:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _merged(self, pending: _Pending) -> AsyncIterator[str | CreateResult]:
        loop = asyncio.get_running_loop()
        flushed = float("-inf")
        while True:
            if not pending.parts and not pending.finished:
                pending.wake, pending.on_chunk = loop.create_future(), True
                await pending.wake
            left = flushed + self.window - loop.time()
            if left > 0 and not pending.finished:
                # Inside the window of the last chunk: wait for it to close (or for the
                # model to finish), gathering what comes meanwhile.
                wake = pending.wake = loop.create_future()
                pending.on_chunk = False
                timer = loop.call_later(left, _resolve, wake)
                try:
                    await wake
                finally:
                    timer.cancel()
            pending.wake = None
            if pending.parts:
                text, first = pending.take()
                flushed = loop.time()
                self.generated.append(first or datetime.now(UTC))
                yield text
            if pending.finished and not pending.parts:
                if pending.error is not None:
                    raise pending.error
                if pending.result is not None:
                    yield pending.result
                return


async def _read(stream: AsyncGenerator[str | CreateResult, None], pending: _Pending) -> None:
    result: CreateResult | None = None
    try:
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, str):
                    pending.add(item)
                else:
                    result = item
    except BaseException as exc:
        pending.finish(None, exc)
        if not isinstance(exc, Exception):
            raise
        return
    pending.finish(result, None)
