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
- token counting offline: `count_tokens` uses the local tokenizer of `text.py` instead of
  tiktoken (which downloads its encodings on first use and fails without network);
- cancellation: the cancellation token aborts the HTTP request at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

import openai
from autogen_core import CancellationToken
from autogen_core.models import (
    CreateResult,
    LLMMessage,
    ModelInfo,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel, ValidationError

from convergio_server.domain.models.delegating import DelegatingChatCompletionClient
from convergio_server.domain.models.errors import ModelError, ModelErrorKind
from convergio_server.domain.models.text import count_message_tokens

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 128_000
# Used when the selection gives no model info and the client library does not know the name.
UNKNOWN_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "structured_output": False,
    "family": "unknown",
    "multiple_system_messages": True,
}


def model_error(exc: BaseException, *, model: str, base_url: str) -> ModelError:
    """The ModelError for an exception raised by a call to `model` at `base_url`."""
    where = f"model {model!r} at {base_url or 'the default endpoint'}"
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return ModelError(f"{where} did not answer in time", kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(f"{where} cannot be reached: {exc.__cause__ or exc}", kind="unavailable")
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


class OpenAICompatChatCompletionClient(DelegatingChatCompletionClient):
    """An OpenAI-compatible endpoint with usage, retries, offline token counting and domain
    errors (see the module docstring)."""

    _inner: OpenAIChatCompletionClient

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
        try:
            self._inner = OpenAIChatCompletionClient(**config)
        except ValueError:
            # A name the library does not know: function calling only, as documented.
            config["model_info"] = UNKNOWN_MODEL_INFO
            self._inner = OpenAIChatCompletionClient(**config)

    @property
    def model(self) -> str:
        return self._model

    def _error(self, exc: BaseException) -> ModelError:
        error = model_error(exc, model=self._model, base_url=self._base_url)
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
            raise self._error(exc) from exc

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
                    error = self._error(exc)
                    if began and error.kind == "unavailable":
                        # The endpoint was reached and answered: the stream was cut off.
                        raise ModelError(
                            f"model {self._model!r} at "
                            f"{self._base_url or 'the default endpoint'} cut its stream off "
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
                            f"model {self._model!r} at {self._base_url or 'the default endpoint'}"
                            " ended its stream without a finish reason (truncated, or not the "
                            "OpenAI protocol)",
                            kind="invalid_response",
                        )
                    )
                yield item
        finally:
            await stream.aclose()

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        # An offline estimate: tiktoken would download its encodings on first use.
        return count_message_tokens(messages, tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return self._context_tokens - self.count_tokens(messages, tools=tools)
