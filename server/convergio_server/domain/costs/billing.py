"""A ChatCompletionClient decorator that bills every model call: provider breaker check and
budget reservation before, settlement, breaker feedback and a ledger entry after, whether the
call completed, failed, was cancelled or its consumer went away (try/finally). The provider
breaker is the one of the endpoint the wrapped client calls (`endpoint_key`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from opentelemetry import trace
from pydantic import BaseModel

from convergio_server.domain import tracing
from convergio_server.domain.costs.breaker import endpoint_key, provider_name
from convergio_server.domain.errors import domain_cause
from convergio_server.domain.guards import CallInfo
from convergio_server.domain.models.delegating import DelegatingChatCompletionClient
from convergio_server.domain.models.errors import ModelError
from convergio_server.domain.models.text import count_text_tokens, tokenize

if TYPE_CHECKING:
    from convergio_server.domain.costs.enforcement import CallTicket, CostGuards

log = logging.getLogger(__name__)
CLIENT_GONE = "client_gone"


def _outcome_of_cancel(exc: BaseException) -> str:
    return "CLIENT_GONE" if CLIENT_GONE in (str(a) for a in exc.args) else "CANCELLED"


def base_url_of(client: ChatCompletionClient) -> str:
    """The base URL `client` calls, "" for its provider's own endpoint (or no endpoint)."""
    return str(getattr(client, "base_url", "") or "")


def _refused_by_endpoint(error: BaseException | None) -> bool:
    """The endpoint answered with an error status (429, 5xx, a rejected request) instead of
    an answer, or was never reached: it generated nothing, and providers bill nothing for a
    refused call."""
    cause = domain_cause(error)
    return isinstance(cause, ModelError) and (cause.status_code is not None or not cause.sent)


def _cached_tokens(result: CreateResult) -> int:
    # AutoGen's RequestUsage has no cached count; OpenAI-compatible clients may attach one.
    details = getattr(result.usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0)


class BilledModelClient(DelegatingChatCompletionClient):
    def __init__(self, inner: ChatCompletionClient, call: CallInfo, guards: CostGuards) -> None:
        self._inner = inner
        self._call = call
        self._guards = guards
        self._breaker = provider_name(endpoint_key(call.provider or "offline", base_url_of(inner)))
        # What the ledger billed beyond what the wrapped client reported (a call that failed
        # or was cancelled before its result: the prompt is billed all the same, unless the
        # endpoint refused it), so that a turn's usage, read from `total_usage`, says what its
        # ledger rows say.
        self._billed_beyond = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def total_usage(self) -> RequestUsage:
        inner = self._inner.total_usage()
        return RequestUsage(
            prompt_tokens=inner.prompt_tokens + self._billed_beyond.prompt_tokens,
            completion_tokens=inner.completion_tokens + self._billed_beyond.completion_tokens,
        )

    def _max_output(self, extra: Mapping[str, Any]) -> int:
        for key in ("max_tokens", "max_completion_tokens"):
            value = extra.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return self._call.max_output_tokens or self._guards.default_max_output_tokens

    def _prompt_tokens(
        self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema]
    ) -> int:
        try:
            return int(self._inner.count_tokens(messages, tools=tools))
        except Exception:  # e.g. a tokenizer that is not available offline: estimate
            return sum(len(tokenize(str(getattr(m, "content", "")))) + 3 for m in messages)

    def _kind(self, result: CreateResult | None) -> str:
        if result is not None and isinstance(result.content, list):
            return "TOOL_CHOICE"
        return {
            "speaker_selection": "SPEAKER_SELECTION",
            "tool_choice": "TOOL_CHOICE",
        }.get(self._call.kind, "AGENT_REPLY")

    async def _finish(
        self,
        ticket: CallTicket,
        result: CreateResult | None,
        streamed_tokens: int,
        outcome: str,
        error: BaseException | None,
        before: RequestUsage,
        max_output: int,
    ) -> None:
        if result is not None:
            prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
            cached = _cached_tokens(result)
        elif streamed_tokens == 0 and _refused_by_endpoint(error):
            prompt, completion, cached = 0, 0, 0
        else:
            # Counted locally, the tokens streamed may come out above what the endpoint
            # was allowed to generate; it generated no more than that.
            prompt, completion = ticket.prompt_estimate, min(streamed_tokens, max_output)
            cached = 0
            after = self._inner.total_usage()
            beyond = self._billed_beyond
            self._billed_beyond = RequestUsage(
                prompt_tokens=beyond.prompt_tokens
                + max(0, prompt - (after.prompt_tokens - before.prompt_tokens)),
                completion_tokens=beyond.completion_tokens
                + max(0, completion - (after.completion_tokens - before.completion_tokens)),
            )
        if tracing.enabled():
            self._trace(ticket, prompt, completion, outcome, error)
        # A second cancellation must not skip the bill: settle in a task of its own.
        finish = asyncio.ensure_future(
            self._guards.end_call(
                ticket, self._kind(result), prompt, completion, cached, outcome, error
            )
        )
        try:
            await asyncio.shield(finish)
        except asyncio.CancelledError:
            finish.add_done_callback(lambda f: f.exception())
            raise

    def _trace(
        self,
        ticket: CallTicket,
        prompt: int,
        completion: int,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        """The call's span (a child of its turn's), made as it ends: it starts when the
        guards admitted the call."""
        call = self._call
        ended = time.time_ns()
        span = tracing.tracer().start_span(
            f"chat {call.model or call.provider}",
            kind=trace.SpanKind.CLIENT,
            start_time=ended - int((time.monotonic() - ticket.started) * 1e9),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": call.provider or "offline",
                "gen_ai.request.model": call.model or "offline",
                "gen_ai.usage.input_tokens": prompt,
                "gen_ai.usage.output_tokens": completion,
                "convergio.agent": call.agent,
                "convergio.call_kind": call.kind,
                "convergio.outcome": outcome,
            },
        )
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:300]))
        span.end(end_time=ended)

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
        max_output = self._max_output(extra_create_args)
        ticket = await self._guards.begin_call(
            self._call, self._prompt_tokens(messages, tools), max_output, self._breaker
        )
        result: CreateResult | None = None
        outcome, error = "OK", None
        # A call cancelled mid-answer reports what it generated in its usage counters only.
        before = self._inner.total_usage()
        try:
            result = await self._inner.create(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            )
            return result
        except asyncio.CancelledError as exc:
            outcome = _outcome_of_cancel(exc)
            raise
        except BaseException as exc:
            outcome, error = "ERROR", exc
            raise
        finally:
            generated = max(
                0, self._inner.total_usage().completion_tokens - before.completion_tokens
            )
            await self._finish(ticket, result, generated, outcome, error, before, max_output)

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
        max_output = self._max_output(extra_create_args)
        ticket = await self._guards.begin_call(
            self._call, self._prompt_tokens(messages, tools), max_output, self._breaker
        )
        before = self._inner.total_usage()
        result: CreateResult | None = None
        streamed = 0
        outcome, error = "OK", None
        stream = self._inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        try:
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, CreateResult):
                        result = item
                    else:
                        streamed += count_text_tokens(item)
                    yield item
        except asyncio.CancelledError as exc:
            outcome = _outcome_of_cancel(exc)
            raise
        except GeneratorExit:  # the consumer stopped reading: bill what was generated
            outcome = "CANCELLED" if result is None else "OK"
            raise
        except BaseException as exc:
            outcome, error = "ERROR", exc
            raise
        finally:
            await self._finish(ticket, result, streamed, outcome, error, before, max_output)
