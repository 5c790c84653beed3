"""A model-client wrapper that counts the calls and tokens of one turn, cancelled calls
included (their partial usage, as the model client reports it)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from convergio_server.domain.errors import DomainError
from convergio_server.domain.events.model import Usage
from convergio_server.domain.models.delegating import DelegatingChatCompletionClient

Pricing = Callable[[int, int], Decimal]  # (prompt, completion tokens) -> USD


def free(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return Decimal(0)


class Meter:
    """Usage and cost of every metered client of a turn, and the first call failure (an
    agent's exception reaches the turn through AutoGen only as text)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # Calls settled (ended, their usage added); one refused before it was sent is none.
        self.calls = 0
        self.cost = Decimal(0)
        self.failure: BaseException | None = None
        # Told of each call settled (the turn reports its running cost then).
        self.on_settled: Callable[[], None] | None = None

    def add(self, usage: RequestUsage | None, pricing: Pricing = free) -> None:
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.cost += pricing(usage.prompt_tokens, usage.completion_tokens)

    def settled(self, usage: RequestUsage, pricing: Pricing = free) -> None:
        """A call ended with `usage`."""
        self.calls += 1
        self.add(usage, pricing)
        if self.on_settled is not None:
            self.on_settled()

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, 0, self.calls)


class MeteredClient(DelegatingChatCompletionClient):
    def __init__(self, inner: ChatCompletionClient, meter: Meter, pricing: Pricing = free) -> None:
        self._inner = inner
        self.meter = meter
        self.pricing = pricing

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
        before = self.inner.total_usage()
        refused = False
        try:
            return await self.inner.create(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            )
        except Exception as exc:
            refused = self._failed(exc, before)
            raise
        finally:
            if not refused:
                self._settle(before)

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
        before = self.inner.total_usage()
        refused = False
        try:
            async for item in self.inner.create_stream(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            ):
                yield item
        except Exception as exc:
            refused = self._failed(exc, before)
            raise
        finally:
            if not refused:
                self._settle(before)

    def _failed(self, exc: BaseException, before: RequestUsage) -> bool:
        """Note the failure; whether the guards refused the call before it was sent (budget,
        open breaker): then no call was made, and the ledger has none."""
        if self.meter.failure is None:
            self.meter.failure = exc
        return _refused(exc) and self.inner.total_usage() == before

    def _settle(self, before: RequestUsage) -> None:
        after = self.inner.total_usage()
        self.meter.settled(
            RequestUsage(
                prompt_tokens=max(0, after.prompt_tokens - before.prompt_tokens),
                completion_tokens=max(0, after.completion_tokens - before.completion_tokens),
            ),
            self.pricing,
        )


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, DomainError) and exc.reason in ("BUDGET_EXHAUSTED", "CIRCUIT_OPEN")
