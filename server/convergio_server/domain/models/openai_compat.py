"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI's v1 API, Ollama,
vLLM, llama.cpp server, LiteLLM...) as an AutoGen `ChatCompletionClient`.

It wraps autogen_ext's `OpenAIChatCompletionClient` and adds what a platform needs:

- streamed usage: every streamed call asks for `stream_options.include_usage`;
- model info for names the client library does not know (function calling only, unless
  the selection says more);
- retries: the OpenAI SDK retries timeouts, connection errors, 429 and 5xx with
  exponential backoff (honouring `Retry-After`), `max_retries` times; the whole wait for
  the first byte, retries included, is bounded by `timeout_seconds`, and so is every gap
  between two streamed chunks;
- errors: every failure becomes a `ModelError` with a kind, never a raw SDK exception; a
  stream that ends without a finish reason (cut off, or not the protocol) is one too;
- the answer cap: a stream is read only up to the call's `max_tokens` (what the cost guards
  reserved for), then closed and ended as cut off at its length limit, whether or not the
  endpoint honours the cap; a stream whose usage is missing (cut off, or an endpoint that
  does not report it) gets an estimate, so that it is not billed as free;
- token counting offline: `count_tokens` uses the local tokenizer of `text.py` instead of
  tiktoken (which downloads its encodings on first use and fails without network);
- cancellation: the cancellation token aborts the HTTP request at once;
- what a failure cost: each call notes whether any of its HTTP attempts sent its request
  (`_Sending`), so that one that never left (refused, no such host, no connection before the
  timeout) is "cannot be reached" and billed nothing, however the retries ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal, cast

import httpx2
import openai
from autogen_core import CancellationToken
from autogen_core.models import (
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from openai import AsyncStream, omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.completion_usage import CompletionUsage
from pydantic import BaseModel, ValidationError

from convergio_server.domain.models.delegating import DelegatingChatCompletionClient
from convergio_server.domain.models.errors import ModelError, ModelErrorKind
from convergio_server.domain.models.text import count_message_tokens

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 128_000
# Used when the selection gives no model info and the client library does not know the name.
# Where a selection without a base URL sends its calls (the client library's default).
PROVIDER_URL = "https://api.openai.com/v1"

UNKNOWN_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "structured_output": False,
    "family": "unknown",
    "multiple_system_messages": True,
}


class _Sending:
    """One model call's HTTP attempts: whether one sent its request, and the last failure
    to connect."""

    __slots__ = ("connect_error", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.connect_error: BaseException | None = None


# The call being made in this task (set by each call, read by `_WatchedTransport`).
_sending: ContextVar[_Sending | None] = ContextVar("convergio_model_call", default=None)


async def _on_http_event(name: str, info: dict[str, Any]) -> None:
    if name.endswith("send_request_headers.complete"):
        sending = _sending.get()
        if sending is not None:
            sending.sent = True


class _WatchedTransport(httpx2.AsyncBaseTransport):
    """The HTTP library's transport, telling the call being made whether its request went
    out (through the library's trace hook) and why a connection failed."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=openai.DEFAULT_CONNECTION_LIMITS)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.extensions = {**request.extensions, "trace": _on_http_event}
        try:
            return await self._inner.handle_async_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            sending = _sending.get()
            if sending is not None:
                sending.connect_error = exc
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


def _where(model: str, base_url: str) -> str:
    return f"model {model!r} at {base_url or PROVIDER_URL}"


def model_error(exc: BaseException, *, model: str, base_url: str, sending: _Sending) -> ModelError:
    """The ModelError for an exception raised by a call to `model` at `base_url`, whose
    HTTP attempts did what `sending` says."""
    where = _where(model, base_url)
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        if not sending.sent:
            # Out of time while connecting, or retrying connections: the request never left.
            reason = sending.connect_error or "no connection was made in time"
            return ModelError(
                f"{where} cannot be reached: {reason}", kind="unavailable", sent=False
            )
        return ModelError(f"{where} did not answer in time", kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            f"{where} cannot be reached: {exc.__cause__ or exc}",
            kind="unavailable",
            # No connection was made (refused, no such host): the request never left.
            sent=sending.sent,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _detail(exc)
        kind: ModelErrorKind
        if status == 429:
            kind = "rate_limited"
        elif status == 401:
            kind = "authentication"
        elif status == 403:
            kind = "permission_denied"
        elif status == 404:
            kind = "not_found"
        elif status >= 500:
            kind = "server_error"
        elif "context" in detail.lower() and "length" in detail.lower():
            kind = "context_length"
        else:
            kind = "bad_request"
        return ModelError(
            f"{where} answered HTTP {status}: {detail}", kind=kind, status_code=status
        )
    if isinstance(exc, openai.APIResponseValidationError | ValidationError | json.JSONDecodeError):
        return ModelError(
            f"{where} sent a response that is not valid: {exc}", kind="invalid_response"
        )
    if isinstance(exc, openai.APIError):
        return ModelError(f"{where} failed: {exc}", kind="invalid_response")
    # AutoGen's own checks on what came back (a stream without a final chunk, a missing
    # field, an unknown finish reason...).
    return ModelError(
        f"{where} sent an answer that could not be used ({type(exc).__name__}: {exc})",
        kind="invalid_response",
    )


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])[:300]
    return str(exc.message)[:300]


def _answer_cap(create_args: Mapping[str, Any]) -> int:
    for key in ("max_tokens", "max_completion_tokens"):
        value = create_args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _text_tokens(text: str) -> int:
    """Tokens of a streamed piece of text, counted low so that an answer within its cap is
    not cut: every chunk is at least one token (servers that stream token by token send one
    each, "..." and "'s" included), and a chunk of several words at least one per word
    (the usual tokenizers never make one token of two words apart)."""
    if not text:
        return 0
    return max(1, len(text.split()))


def _generated_tokens(chunk: ChatCompletionChunk) -> int:
    """Tokens a chunk adds to the answer: text, reasoning and tool calls alike."""
    if not chunk.choices:
        return 0
    delta = chunk.choices[0].delta
    pieces = [delta.content or ""]
    reasoning = (delta.model_extra or {}).get("reasoning_content")
    if isinstance(reasoning, str):
        pieces.append(reasoning)
    for call in delta.tool_calls or ():
        if call.function is not None:
            pieces += [call.function.name or "", call.function.arguments or ""]
    return sum(_text_tokens(piece) for piece in pieces)


def _usage_chunk(
    last: ChatCompletionChunk, usage: CompletionUsage | None, generated: int
) -> ChatCompletionChunk:
    """A last chunk carrying `usage`, or, when the endpoint reported none, the tokens counted
    here (the prompt is left to the wrapping client's estimate)."""
    if usage is None:
        usage = CompletionUsage(
            prompt_tokens=0, completion_tokens=generated, total_tokens=generated
        )
    return ChatCompletionChunk(
        id=last.id,
        object="chat.completion.chunk",
        created=last.created,
        model=last.model,
        choices=[],
        usage=usage,
    )


class _CappedOpenAIClient(OpenAIChatCompletionClient):
    """AutoGen's client with its reader of a stream's chunks replaced by one that stops at
    the call's `max_tokens`, closes the HTTP response whenever it stops (AutoGen's leaves it
    open when a stream is abandoned), and ends a stream that reported no usage with a usage
    chunk of its own (AutoGen would report 0 tokens). Its prompt count is 0: the wrapping
    client, which has the messages, puts its estimate there."""

    async def _create_stream_chunks(
        self,
        tool_params: list[ChatCompletionToolParam],
        oai_messages: list[ChatCompletionMessageParam],
        create_args: dict[str, Any],
        cancellation_token: CancellationToken | None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        cap = _answer_cap(create_args)
        opened = asyncio.ensure_future(
            self._client.chat.completions.create(
                messages=oai_messages,
                stream=True,
                tools=tool_params if tool_params else omit,
                **create_args,
            )
        )
        if cancellation_token is not None:
            cancellation_token.link_future(opened)
        stream = cast(AsyncStream[ChatCompletionChunk], await opened)
        generated = 0
        last: ChatCompletionChunk | None = None
        reported: CompletionUsage | None = None
        try:
            while True:
                read = asyncio.ensure_future(anext(stream))
                if cancellation_token is not None:
                    cancellation_token.link_future(read)
                try:
                    chunk = await read
                except StopAsyncIteration:
                    break
                tokens = _generated_tokens(chunk)
                if cap and generated + tokens > cap:
                    # The endpoint ignores the cap: what it sends past it was not reserved
                    # for. Stop reading, and end the answer as a length-capped one ends.
                    await stream.close()
                    log.warning(
                        "model %r kept answering past max_tokens=%d; its answer was cut there",
                        create_args.get("model"),
                        cap,
                    )
                    yield chunk.model_copy(
                        update={
                            "choices": [
                                Choice(index=0, delta=ChoiceDelta(), finish_reason="length")
                            ],
                            "usage": None,
                        }
                    )
                    yield _usage_chunk(chunk, None, generated)
                    return
                generated += tokens
                reported = chunk.usage or reported
                last = chunk
                yield chunk
            if last is not None and last.usage is None:
                # AutoGen reads the usage of the last chunk only.
                yield _usage_chunk(last, reported, generated)
        finally:
            await stream.close()


class OpenAICompatChatCompletionClient(DelegatingChatCompletionClient):
    """An OpenAI-compatible endpoint with usage, retries, offline token counting and domain
    errors (see the module docstring)."""

    _inner: _CappedOpenAIClient

    def __init__(
        self,
        *,
        model: str,
        base_url: str = "",
        api_key: str = "",
        model_info: ModelInfo | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        temperature: float | None = None,
        max_output_tokens: int = 0,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    ) -> None:
        if not model:
            raise ModelError("an OpenAI-compatible model needs a model name", kind="configuration")
        self._model = model
        self._base_url = base_url
        self._timeout = timeout_seconds
        self._context_tokens = context_tokens
        config: dict[str, Any] = {
            "model": model,
            # Local servers (Ollama, vLLM) take any key; the SDK insists on one.
            "api_key": api_key or "not-needed",
            "timeout": timeout_seconds,
            "max_retries": max_retries,
        }
        if base_url:
            config["base_url"] = base_url
        if temperature is not None:
            config["temperature"] = temperature
        if max_output_tokens:
            config["max_tokens"] = max_output_tokens
        if model_info is not None:
            config["model_info"] = model_info
        # Prompts whose count the endpoint did not report (see `create_stream`).
        self._estimated = RequestUsage(prompt_tokens=0, completion_tokens=0)
        config["http_client"] = openai.DefaultAsyncHttpxClient(transport=_WatchedTransport())
        try:
            self._inner = _CappedOpenAIClient(**config)
        except ValueError:
            # A name the library does not know: function calling only, as documented.
            config["model_info"] = UNKNOWN_MODEL_INFO
            self._inner = _CappedOpenAIClient(**config)

    @property
    def model(self) -> str:
        return self._model

    def _error(self, exc: BaseException, sending: _Sending) -> ModelError:
        error = model_error(exc, model=self._model, base_url=self._base_url, sending=sending)
        log.warning("model call failed: %s (%s)", error.message, error.kind)
        return error

    @property
    def base_url(self) -> str:
        """The endpoint it calls ("" for the provider's own), which names its breaker."""
        return self._base_url or ""

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
        sending = _Sending()
        _sending.set(sending)
        try:
            async with asyncio.timeout(self._timeout):
                return await self._inner.create(
                    messages,
                    tools=tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=extra_create_args,
                    cancellation_token=cancellation_token,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._error(exc, sending) from exc

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
        extra = dict(extra_create_args)
        include_usage = None if "stream_options" in extra else True
        stream = self._inner.create_stream(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra,
            cancellation_token=cancellation_token,
            include_usage=include_usage,
        )
        iterator = stream.__aiter__()
        began = False
        sending = _Sending()
        _sending.set(sending)
        try:
            while True:
                try:
                    # Bounds the first byte (retries included) and every gap between chunks.
                    async with asyncio.timeout(self._timeout):
                        item = await anext(iterator)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = self._error(exc, sending)
                    if began and error.kind == "unavailable":
                        # The endpoint was reached and answered: the stream was cut off.
                        raise ModelError(
                            f"{_where(self._model, self._base_url)} cut its stream off "
                            f"before the end ({exc.__cause__ or exc})",
                            kind="invalid_response",
                        ) from exc
                    raise error from exc
                began = True
                if isinstance(item, CreateResult) and item.finish_reason == "unknown":
                    # Every OpenAI-compatible server ends a complete stream with a finish
                    # reason; without one the stream was cut or was not that protocol.
                    raise self._error(
                        ModelError(
                            f"{_where(self._model, self._base_url)} ended its stream without a "
                            "finish reason (truncated, or not the OpenAI protocol)",
                            kind="invalid_response",
                        ),
                        sending,
                    )
                if isinstance(item, CreateResult) and item.usage.prompt_tokens == 0:
                    # No prompt can be empty: the endpoint did not report this call's usage
                    # (or its answer was cut off before it did).
                    item = self._with_prompt_estimate(item, messages, tools)
                yield item
        finally:
            await stream.aclose()

    def _with_prompt_estimate(
        self,
        result: CreateResult,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
    ) -> CreateResult:
        # The same count the cost guards reserved for, so that a cut-off answer is billed
        # no more than its reservation.
        prompt = self.count_tokens(messages, tools=tools)
        self._estimated = RequestUsage(
            prompt_tokens=self._estimated.prompt_tokens + prompt, completion_tokens=0
        )
        usage = RequestUsage(prompt_tokens=prompt, completion_tokens=result.usage.completion_tokens)
        return result.model_copy(update={"usage": usage})

    def total_usage(self) -> RequestUsage:
        return self._with_estimates(self._inner.total_usage())

    def actual_usage(self) -> RequestUsage:
        return self._with_estimates(self._inner.actual_usage())

    def _with_estimates(self, inner: RequestUsage) -> RequestUsage:
        return RequestUsage(
            prompt_tokens=inner.prompt_tokens + self._estimated.prompt_tokens,
            completion_tokens=inner.completion_tokens,
        )

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        # An offline estimate: tiktoken would download its encodings on first use.
        return count_message_tokens(messages, tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._context_tokens - self.count_tokens(messages, tools=tools)
