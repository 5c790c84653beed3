"""A turn's team starts while the store admits the turn, so that its first model call (the
reservation, the request, the wait for the first token) overlaps that round trip instead of
following it. A turn the store then refuses (a repeated request, a busy conversation) must
have done nothing a refused turn may not do: its tools and its later model calls wait until
the admission has come back. The first call is cancelled with the turn; the ledger keeps it,
as it keeps every call made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage

from convergio_server.domain.models.delegating import DelegatingChatCompletionClient


class Admittance:
    """Whether the turn has been admitted; one per turn, shared by its team."""

    def __init__(self) -> None:
        self._admitted = asyncio.Event()
        self._first_call_taken = False

    def admit(self) -> None:
        self._admitted.set()

    async def wait(self) -> None:
        """Until the turn is admitted (a tool call waits here)."""
        if not self._admitted.is_set():
            await self._admitted.wait()

    async def call_may_start(self) -> None:
        """The turn's first model call starts at once; the others once it is admitted."""
        if not self._first_call_taken:
            self._first_call_taken = True
            return
        await self.wait()


class AdmittedClient(DelegatingChatCompletionClient):
    """`inner`, whose calls start as `admittance` allows."""

    def __init__(self, inner: ChatCompletionClient, admittance: Admittance) -> None:
        self._inner = inner
        self._admittance = admittance

    # The options (tools, tool_choice, json_output, extra_create_args, cancellation_token)
    # pass through as given.
    async def create(self, messages: Sequence[LLMMessage], **options: Any) -> CreateResult:
        await self._admittance.call_may_start()
        return await self._inner.create(messages, **options)

    async def create_stream(
        self, messages: Sequence[LLMMessage], **options: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        await self._admittance.call_may_start()
        stream = self._inner.create_stream(messages, **options)
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item
