"""The offline model: a deterministic local `ChatCompletionClient` for development, tests
and benchmarks.

It is not a language model and does not reason. It composes answers from what it is given:

- the role its system message states ("You are Amy, Chief Financial Officer ...") picks a
  voice (see `voices.py`);
- the latest request and its key words frame the answer;
- the most relevant sentences of everything else in the context (earlier messages,
  injected documents, tool results) are quoted, ranked by keyword overlap with the request;
- when `tools=` offers a tool whose name or description matches the request, it returns a
  `FunctionCall` with JSON arguments built from the tool's parameter schema (numbers,
  percentages, enum values and queries read from the request); a compound-growth question
  ("how much will 10000 at 7% compounded for 10 years be worth?") picks a `future_value`
  operation and reads principal, years, compounding and contributions by their meaning;
  a tool that computes on a list of numbers is not called for a request without numbers;
  once the results are in the context it answers with them;
- asked AutoGen's speaker-selection prompt ("select the next role from [...]"), it answers
  with one candidate name, chosen by keyword overlap of the roles with the conversation.

Same input, same output, except the ids of tool calls: each call gets an id of its own, since
clients pair calls with their results by id and several agents of a turn may make the same
call. Usage is counted with the word/punctuation tokenizer of `text.py`.
`create_stream` yields one word at a time and then the `CreateResult`; `tokens_per_second`
paces it (0 = as fast as possible). The cancellation token is checked before every chunk
and interrupts a paced wait at once.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import time
import uuid
import zlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from autogen_core import CancellationToken, Component, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field

from convergio_server.domain.models.arguments import (
    TOOL_THRESHOLD,
    extract_numbers,
    fill_arguments,
    tool_score,
)
from convergio_server.domain.models.text import (
    content_text,
    count_message_tokens,
    count_text_tokens,
    message_text,
    sentences,
    stems,
    stream_chunks,
    tool_schema,
    truncate,
)
from convergio_server.domain.models.voices import TEMPLATE_SENTENCES, voice_for

OFFLINE_MODEL_NAME = "offline"
# Context window the offline model reports through remaining_tokens().
OFFLINE_CONTEXT_TOKENS = 128_000

_ROLE = re.compile(r"You are (?P<name>[^,.\n]+?),\s*(?:the\s+|an?\s+)?(?P<role>[^.\n]+)")
_SELECT = re.compile(r"select the next role from (?P<list>\[[^\]]*\])", re.IGNORECASE)
_FEEDBACK = re.compile(r"select (?:only one |a different name )?from:\s*(?P<list>\[[^\]]*\])")
_HISTORY_LINE = re.compile(r"^(?P<source>[\w.-]+): (?P<content>.*)$")


class OfflineModelConfig(BaseModel):
    """Declarative configuration of the offline model (AutoGen component config)."""

    model: str = OFFLINE_MODEL_NAME
    tokens_per_second: float = Field(0.0, ge=0)
    min_completion_tokens: int = Field(0, ge=0)
    max_completion_tokens: int = Field(4096, ge=1)


@dataclass
class _Reply:
    content: str | list[FunctionCall]
    finish_reason: Literal["stop", "length", "function_calls"]
    prompt_tokens: int
    completion_tokens: int


class OfflineChatCompletionClient(ChatCompletionClient, Component[OfflineModelConfig]):
    """Deterministic local model (see the module docstring).

    Args:
        model: the name reported in usage and the ledger ("offline").
        tokens_per_second: pace of generation; 0 (default) = no delay.
        min_completion_tokens: pad answers with further role-voice sentences up to this
            many tokens (benchmarks use it for longer streams).
        max_completion_tokens: cut answers at this many tokens (finish reason "length").
    """

    component_type = "model"
    component_config_schema = OfflineModelConfig
    component_provider_override = (
        "convergio_server.domain.models.offline.OfflineChatCompletionClient"
    )

    def __init__(
        self,
        model: str = OFFLINE_MODEL_NAME,
        *,
        tokens_per_second: float = 0.0,
        min_completion_tokens: int = 0,
        max_completion_tokens: int = 4096,
    ) -> None:
        if tokens_per_second < 0:
            raise ValueError("tokens_per_second must be >= 0")
        self._model = model
        self._tokens_per_second = tokens_per_second
        self._min_completion_tokens = min_completion_tokens
        self._max_completion_tokens = max_completion_tokens
        self._actual = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._model_info: ModelInfo = {
            "vision": False,
            "function_calling": True,
            "json_output": True,
            "family": ModelFamily.UNKNOWN,
            "structured_output": False,
            "multiple_system_messages": True,
        }

    # ------------------------------------------------------------------ API

    @property
    def model(self) -> str:
        return self._model

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    @property
    def capabilities(self) -> Any:  # deprecated in AutoGen; kept for old callers
        return self._model_info

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
        reply = self._reply(messages, tools, tool_choice, json_output)
        if self._tokens_per_second > 0:
            pacer = _Pacer(self._tokens_per_second, cancellation_token)
            try:
                await pacer.wait_until(reply.completion_tokens)
            except BaseException:
                # Cancelled mid-answer: bill the prompt and the tokens generated so far, as
                # a provider bills an abandoned request (and as a cancelled stream is).
                self._add_usage(
                    reply.prompt_tokens, min(reply.completion_tokens, pacer.generated())
                )
                raise
            finally:
                pacer.close()
        elif cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError()
        return self._finish(reply)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        reply = self._reply(messages, tools, tool_choice, json_output)
        pacer = _Pacer(self._tokens_per_second, cancellation_token)
        emitted = 0
        try:
            if isinstance(reply.content, str):
                for chunk in stream_chunks(reply.content):
                    cost = count_text_tokens(chunk)
                    await pacer.wait_until(emitted + cost)
                    emitted += cost  # counted once handed over: billed if cancelled later
                    yield chunk
            else:
                await pacer.wait_until(reply.completion_tokens)
        except BaseException:
            # Bill what was generated before the cancellation.
            self._add_usage(reply.prompt_tokens, emitted)
            raise
        finally:
            pacer.close()
        yield self._finish(reply)

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._actual

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return count_message_tokens(messages, tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return OFFLINE_CONTEXT_TOKENS - self.count_tokens(messages, tools=tools)

    def _to_config(self) -> OfflineModelConfig:
        return OfflineModelConfig(
            model=self._model,
            tokens_per_second=self._tokens_per_second,
            min_completion_tokens=self._min_completion_tokens,
            max_completion_tokens=self._max_completion_tokens,
        )

    @classmethod
    def _from_config(cls, config: OfflineModelConfig) -> Self:
        return cls(
            config.model,
            tokens_per_second=config.tokens_per_second,
            min_completion_tokens=config.min_completion_tokens,
            max_completion_tokens=config.max_completion_tokens,
        )

    # ------------------------------------------------------------ internals

    def _add_usage(self, prompt: int, completion: int) -> RequestUsage:
        usage = RequestUsage(prompt_tokens=prompt, completion_tokens=completion)
        self._actual = usage
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + prompt,
            completion_tokens=self._total.completion_tokens + completion,
        )
        return usage

    def _finish(self, reply: _Reply) -> CreateResult:
        usage = self._add_usage(reply.prompt_tokens, reply.completion_tokens)
        return CreateResult(
            finish_reason=reply.finish_reason,
            content=reply.content,
            usage=usage,
            cached=False,
        )

    def _reply(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
    ) -> _Reply:
        prompt_tokens = count_message_tokens(messages, tools)
        selection = _speaker_selection(messages)
        if selection is not None:
            return _Reply(selection, "stop", prompt_tokens, count_text_tokens(selection))
        schemas = _offered_tools(tools, tool_choice)
        calls = _tool_calls(messages, schemas, forced=tool_choice != "auto")
        if calls:
            completion = sum(count_text_tokens(c.name + " " + c.arguments) for c in calls)
            return _Reply(calls, "function_calls", prompt_tokens, completion)
        text = _compose_answer(messages, self._min_completion_tokens)
        if json_output is not None and json_output is not False:
            text = _as_json(text, json_output)
        finish: Literal["stop", "length"] = "stop"
        tokens = count_text_tokens(text)
        if tokens > self._max_completion_tokens:
            text = _cut_to_tokens(text, self._max_completion_tokens)
            tokens = count_text_tokens(text)
            finish = "length"
        return _Reply(text, finish, prompt_tokens, tokens)


# At zero delay, the longest the model runs without letting other tasks run.
_YIELD_SECONDS = 0.0005


class _Pacer:
    """Sleeps so that token n is released at start + n / tokens_per_second (no drift), and
    wakes at once when the cancellation token fires."""

    def __init__(self, tokens_per_second: float, token: CancellationToken | None) -> None:
        self._rate = tokens_per_second
        self._token = token
        self._start = self._yielded = time.monotonic()
        self._waits = 0
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._cancelled = False
        if token is not None and tokens_per_second > 0:
            # One callback per call (the token keeps its callbacks for its whole life).
            token.add_callback(self._on_cancel)

    def _on_cancel(self) -> None:
        # cancel() may run in another thread; touch the loop only from its own thread.
        self._cancelled = True
        try:
            self._loop.call_soon_threadsafe(self._wake_cancelled)
        except RuntimeError:  # loop closed: nothing is waiting any more
            pass

    def _wake_cancelled(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()

    async def wait_until(self, tokens: int) -> None:
        if self._rate <= 0:
            if self._token is not None and self._token.is_cancelled():
                raise asyncio.CancelledError()
            # Let other tasks run (and cancel us) now and then, as a network stream does
            # between reads: a loop iteration per chunk would cost more than the chunk.
            # Right after the first chunk too, so that it reaches the client at once.
            self._waits += 1
            now = time.monotonic()
            if self._waits == 2 or now - self._yielded >= _YIELD_SECONDS:
                await asyncio.sleep(0)
                self._yielded = time.monotonic()
                if self._token is not None and self._token.is_cancelled():
                    raise asyncio.CancelledError()
            return
        delay = self._start + tokens / self._rate - time.monotonic()
        # Paced, the token's callback sets `_cancelled` (is_cancelled takes a lock per call).
        if self._cancelled:
            raise asyncio.CancelledError()
        if delay <= 0:
            await asyncio.sleep(0)
        else:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiter = waiter
            handle = self._loop.call_later(delay, _resolve, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                self._waiter = None
        if self._cancelled:
            raise asyncio.CancelledError()

    def generated(self) -> int:
        """Tokens generated by now at this pace."""
        return int((time.monotonic() - self._start) * self._rate) if self._rate > 0 else 0

    def close(self) -> None:
        self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# ---------------------------------------------------------------- reading the context


def _offered_tools(
    tools: Sequence[Tool | ToolSchema], tool_choice: Tool | Literal["auto", "required", "none"]
) -> list[ToolSchema]:
    if tool_choice == "none":
        return []
    if isinstance(tool_choice, Tool):
        return [tool_choice.schema]
    return [tool_schema(t) for t in tools]


def _request_index(messages: Sequence[LLMMessage]) -> int:
    """Index of the request being answered: the last message from the user, else the
    last user-role message, else -1."""
    last_user_role = -1
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, UserMessage):
            if message.source == "user":
                return index
            if last_user_role < 0:
                last_user_role = index
    return last_user_role


def _request_text(messages: Sequence[LLMMessage]) -> str:
    index = _request_index(messages)
    if index >= 0:
        return message_text(messages[index])
    for message in reversed(messages):
        if not isinstance(message, SystemMessage):
            return message_text(message)
    return ""


def _tool_calls(
    messages: Sequence[LLMMessage], schemas: Sequence[ToolSchema], *, forced: bool
) -> list[FunctionCall]:
    if not schemas:
        return []
    index = _request_index(messages)
    if index < 0:
        return []
    # One round of tool calls per request: once results are in, answer with them.
    if any(
        isinstance(m, FunctionExecutionResultMessage)
        or (isinstance(m, AssistantMessage) and not isinstance(m.content, str))
        for m in messages[index + 1 :]
    ):
        return []
    request = message_text(messages[index])
    numbers = extract_numbers(request)
    # "What will 10,000 be worth at 7% in 10 years?" names no tool word, yet asks for a
    # computation: a growth question with a rate counts for a tool that offers future_value.
    growth = bool(numbers.percents and _GROWTH_CUE.search(request))
    scored = sorted(
        (
            (
                tool_score(s["name"], s.get("description", ""), request, s.get("parameters"))
                + (1 if growth and _FUTURE_VALUE in json.dumps(s.get("parameters") or {}) else 0),
                position,
                s,
            )
            for position, s in enumerate(schemas)
        ),
        key=lambda item: (-item[0], item[1]),
    )
    has_numbers = bool(numbers.plain or numbers.percents)
    chosen = [
        s for score, _, s in scored if score >= TOOL_THRESHOLD and (has_numbers or not _computes(s))
    ][:2]
    if not chosen and forced:
        chosen = [scored[0][2]]
    calls: list[FunctionCall] = []
    for schema in chosen:
        parameters: Mapping[str, Any] = schema.get("parameters") or {}
        filled = _compound_growth(parameters, fill_arguments(parameters, request), request)
        arguments = json.dumps(filled, sort_keys=True)
        calls.append(
            FunctionCall(id=f"call_{uuid.uuid4().hex}", name=schema["name"], arguments=arguments)
        )
    return calls


def _computes(schema: ToolSchema) -> bool:
    """Whether the tool computes on a list of numbers. Its arguments come from the request
    alone, so for a request without numbers ("what is the future of the product?") a call
    could only fail."""
    parameters: Mapping[str, Any] = schema.get("parameters") or {}
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    for prop in properties.values():
        if isinstance(prop, Mapping) and prop.get("type") == "array":
            items = prop.get("items")
            if isinstance(items, Mapping) and items.get("type") in ("number", "integer"):
                return True
    return False


# ------------------------------------------------------------ compound growth questions

_FUTURE_VALUE = "future_value"
# Ways of asking what an amount grows to without saying "future value".
_GROWTH_CUE = re.compile(
    r"\bfuture value\b|\bcompound(?:ed|ing)?\b|\bbe worth\b|\bgrows? (?:in)?to\b"
    r"|\bend up with\b|\bhow much(?: money)? (?:will|would) (?:i|we|you|they) have\b(?! to\b)",
    re.IGNORECASE,
)
_PER_YEAR = {
    "annually": 1,
    "annual": 1,
    "yearly": 1,
    "year": 1,
    "semi-annually": 2,
    "semiannually": 2,
    "semi-annual": 2,
    "semiannual": 2,
    "half-yearly": 2,
    "quarterly": 4,
    "quarter": 4,
    "monthly": 12,
    "month": 12,
    "weekly": 52,
    "week": 52,
    "daily": 365,
    "day": 365,
}
_FREQUENCY = "|".join(sorted((re.escape(word) for word in _PER_YEAR), key=len, reverse=True))
_COMPOUNDED = re.compile(
    rf"\bcompound(?:ed|ing)?\s+(?:every\s+|each\s+|per\s+|a\s+)?(?P<a>{_FREQUENCY})\b"
    rf"|\b(?P<b>{_FREQUENCY})\s+compounding\b",
    re.IGNORECASE,
)
_AMOUNT = r"\$?\d[\d,]*(?:\.\d+)?\s*(?:k|m|bn)?\b"
_CONTRIBUTION = re.compile(
    rf"\b(?:add(?:s|ing)?|contribut(?:e|es|ing)|deposit(?:s|ing)?|sav(?:e|es|ing)"
    rf"|put(?:s|ting)?(?:\s+(?:in|away|aside))?|invest(?:s|ing)?|plus)"
    rf"\s+(?:another\s+|an\s+extra\s+)?(?P<amount>{_AMOUNT})\s*"
    rf"(?:each|every|a|an|per)\s+(?P<frequency>{_FREQUENCY})\b"
    rf"|\b(?P<adjective>{_FREQUENCY})\s+(?:contributions?|deposits?|savings|payments?)"
    rf"\s+of\s+(?P<amount2>{_AMOUNT})",
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"(?<![\w.])(?P<number>\d+(?:\.\d+)?)\s*-?\s*(?P<unit>years?|yrs?|months?)\b",
    re.IGNORECASE,
)


def _compound_growth(
    parameters: Mapping[str, Any], arguments: dict[str, Any], request: str
) -> dict[str, Any]:
    """`arguments` for a compound-growth question to a tool with a `future_value`
    operation: that operation, with principal and years read by their meaning, not
    their order ("in 10 years, what will 10000 be worth?")."""
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    if _GROWTH_CUE.search(request) is None:
        return arguments
    for name, prop in properties.items():
        if not isinstance(prop, Mapping) or _FUTURE_VALUE not in (prop.get("enum") or ()):
            continue
        # Read as if it said "future value", so that an operation the request names
        # outright ("NPV", "loan payment") still wins.
        mentioned = f"{request} (future value)"
        if fill_arguments({"properties": {name: prop}}, mentioned).get(name) != _FUTURE_VALUE:
            return arguments
        filled = {**arguments, name: _FUTURE_VALUE}
        if "values" in properties:
            filled.update(_growth_terms(request, properties))
        return filled
    return arguments


def _growth_terms(request: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    terms: dict[str, Any] = {}
    rest = request
    can_compound = "periods_per_year" in properties
    per_year: int | None = None
    compounded = _COMPOUNDED.search(request)
    if compounded is not None and can_compound:
        per_year = _PER_YEAR[(compounded["a"] or compounded["b"]).lower()]
    contribution = _CONTRIBUTION.search(rest)
    if contribution is not None and "contribution" in properties:
        amount = extract_numbers(contribution["amount"] or contribution["amount2"]).plain
        every = _PER_YEAR[(contribution["frequency"] or contribution["adjective"]).lower()]
        if amount:
            if per_year is None:
                per_year = every if can_compound else 1
            # Paid at another pace than interest compounds: spread over the periods.
            terms["contribution"] = round(amount[0] * every / per_year, 2)
            rest = rest[: contribution.start()] + " " + rest[contribution.end() :]
    if per_year is not None and per_year != 1:
        terms["periods_per_year"] = per_year
    years: float | None = None
    duration = _DURATION.search(rest)
    if duration is not None:
        years = float(duration["number"])
        if duration["unit"].lower().startswith("m"):
            years /= 12
        rest = rest[: duration.start()] + " " + rest[duration.end() :]
    amounts = extract_numbers(rest).plain
    if not amounts and "contribution" not in terms:
        return terms  # nothing invested: let the tool say what is missing
    # Only contributions ("500 a month for 20 years") start from nothing.
    principal = amounts.pop(0) if amounts else 0.0
    if years is None:
        if not amounts:
            return terms
        years = amounts.pop(0)
    terms["values"] = [principal, years]
    return terms


def _system_text(messages: Sequence[LLMMessage]) -> str:
    for message in messages:
        if isinstance(message, SystemMessage):
            return message.content
    return ""


def _role(system: str) -> tuple[str, str]:
    match = _ROLE.search(system)
    if match is None:
        return "", ""
    return match["name"].strip(), match["role"].strip()


def _latest_results(messages: Sequence[LLMMessage]) -> list[FunctionExecutionResult]:
    results: list[FunctionExecutionResult] = []
    index = _request_index(messages)
    for message in messages[index + 1 :]:
        if isinstance(message, FunctionExecutionResultMessage):
            results.extend(message.content)
    return results


def _source_label(message: LLMMessage, first_system: bool) -> str:
    if isinstance(message, SystemMessage):
        return "the provided documents" if not first_system else ""
    if isinstance(message, UserMessage | AssistantMessage):
        return "you" if message.source == "user" else message.source.capitalize()
    return "a tool"


# A request for a recap ("summarize what we said so far"): its words name no subject, so
# the latest sentences of the conversation are quoted instead of the ones that share them.
_RECAP = re.compile(r"\b(summar(y|i[sz]e)|recap|so far|where (do )?we stand)\b", re.IGNORECASE)


def _grounding(
    messages: Sequence[LLMMessage], request: str, topic: str, limit: int = 2
) -> list[str]:
    """The most relevant sentences of the context (everything but the request and the
    agent's own instructions), as quotes with their source; for a recap, the latest ones,
    oldest first."""
    request_stems = stems(request)
    recap = _RECAP.search(request) is not None
    if not request_stems and not recap:
        return []
    index = _request_index(messages)
    ranked: list[tuple[int, int, str, str]] = []
    seen_system = False
    order = 0
    for position, message in enumerate(messages):
        first_system = isinstance(message, SystemMessage) and not seen_system
        if isinstance(message, SystemMessage):
            seen_system = True
        if first_system or position == index:
            continue
        if isinstance(message, FunctionExecutionResultMessage):
            continue  # tool results are reported on their own
        if isinstance(message, AssistantMessage):
            continue  # the agent's own earlier output: quoting oneself adds nothing
        label = _source_label(message, first_system)
        for sentence in sentences(message_text(message)):
            if (
                topic.strip('"') in sentence
                or sentence in TEMPLATE_SENTENCES
                or sentence.startswith("Building on what")
            ):
                continue  # restated requests, stock phrases and quotes of quotes
            score = len(request_stems & stems(sentence))
            if recap or score > 0:
                ranked.append((score, order, label, sentence))
            order += 1
    if recap:
        return [_quote(label, sentence) for _, _, label, sentence in ranked[-limit:]]
    ranked.sort(key=lambda item: (-item[0], item[1]))
    quotes: list[str] = []
    used: set[str] = set()
    for _, _, label, sentence in ranked:
        if sentence in used:
            continue
        used.add(sentence)
        quotes.append(_quote(label, sentence))
        if len(quotes) == limit:
            break
    return quotes


def _quote(label: str, sentence: str) -> str:
    quoted = truncate(sentence, 240)
    end = "" if quoted[-1:] in ".!?…" else "."
    return f'{label} noted: "{quoted}{end}"'


# Leading words that carry no subject ("Could you tell me...", "We are considering...").
_LEADING_FILLER = frozenset(
    """please hey hi ok okay so can could would should will shall do does did is are was were
    am what what's how why when which who where whether tell explain me you we i us our my
    the team much many has have had need want let's let""".split()
)


def _topic(request: str) -> str:
    """The request's subject as a short quoted phrase: its first sentence without the
    leading question and filler words, at most twelve words."""
    split = sentences(request)
    first = split[0] if split else request
    words = first.rstrip("?.!:; ").split()
    dropped = 0
    while words and dropped < 5 and words[0].lower().strip(",") in _LEADING_FILLER:
        words.pop(0)
        dropped += 1
    if not words:
        return "this"
    phrase = " ".join(words[:12]) + ("..." if len(words) > 12 else "")
    return f'"{phrase}"'


def _compose_answer(messages: Sequence[LLMMessage], min_tokens: int) -> str:
    system = _system_text(messages)
    name, role = _role(system)
    voice = voice_for(role, system)
    request = _request_text(messages)
    topic = _topic(request)
    seed = zlib.crc32(f"{name}|{request}".encode())

    def pick(options: Sequence[str], salt: int = 0) -> str:
        return options[(seed + salt) % len(options)].format(topic=topic)

    parts = [pick(voice.openers)]
    for result in _latest_results(messages):
        if result.is_error:
            parts.append(
                f"The {result.name} tool failed ({truncate(result.content, 200)}), so I am "
                "answering without it."
            )
        else:
            content = truncate(result.content, 400).rstrip(".")
            parts.append(f"The {result.name} tool returned: {content}.")
    for quote in _grounding(messages, request, topic):
        parts.append(f"Building on what {quote}")
    parts.append(pick(voice.lenses))
    parts.append(pick(voice.closers, 1))
    text = " ".join(parts)
    tokens = count_text_tokens(text)
    salt = 1
    extra: list[str] = []
    while tokens < min_tokens:
        sentence = pick(voice.lenses, salt)
        extra.append(sentence)
        tokens += count_text_tokens(sentence)
        salt += 1
    return " ".join([text, *extra]) if extra else text


def _cut_to_tokens(text: str, limit: int) -> str:
    out: list[str] = []
    used = 0
    for chunk in stream_chunks(text):
        cost = count_text_tokens(chunk)
        if used + cost > limit:
            break
        out.append(chunk)
        used += cost
    return "".join(out).rstrip()


def _as_json(text: str, json_output: bool | type[BaseModel]) -> str:
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        schema = json_output.model_json_schema()
        arguments = fill_arguments(schema, text)
        try:
            return json_output.model_validate(arguments).model_dump_json()
        except ValueError:
            return json.dumps({"answer": text})
    return json.dumps({"answer": text})


# ------------------------------------------------------------- speaker selection


def _parse_list(raw: str) -> list[str]:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _speaker_selection(messages: Sequence[LLMMessage]) -> str | None:
    """The answer to AutoGen's selector prompt, or None when this is not one."""
    # AutoGen sends the selector prompt as the first message (system or user); the phrase
    # anywhere else is ordinary conversation.
    if not messages or not isinstance(messages[0], SystemMessage | UserMessage):
        return None
    prompt = message_text(messages[0])
    match = _SELECT.search(prompt)
    if match is None:
        return None
    candidates = _parse_list(match["list"])
    # Feedback after a rejected answer narrows the list and rules out what was said.
    rejected: set[str] = set()
    for message in messages:
        if isinstance(message, AssistantMessage) and isinstance(message.content, str):
            rejected.add(message.content.strip())
        elif isinstance(message, UserMessage) and message.source == "user":
            feedback = _FEEDBACK.search(content_text(message.content))
            if feedback is not None:
                candidates = _parse_list(feedback["list"]) or candidates
    if not candidates:
        return None
    roles: dict[str, str] = {}
    history: list[tuple[str, str]] = []
    in_history = False
    for line in prompt.splitlines():
        if line.startswith("Read the following conversation"):
            in_history = True
            continue
        if line.startswith("Read the above conversation"):
            in_history = False
            continue
        parsed = _HISTORY_LINE.match(line.strip())
        if parsed is None:
            if in_history and history and line.strip():
                source, content = history[-1]
                history[-1] = (source, content + " " + line.strip())
            continue
        if in_history:
            history.append((parsed["source"], parsed["content"]))
        elif parsed["source"] in candidates:
            roles[parsed["source"]] = parsed["content"]
    user_text = " ".join(c for s, c in history if s == "user")
    last_source, last_text = history[-1] if history else ("", "")
    user_stems = stems(user_text)
    last_stems = stems(last_text)
    spoken = [s for s, _ in history]
    best: tuple[int, int, int, int] | None = None
    choice = candidates[0]
    for position, name in enumerate(candidates):
        if name in rejected and len(candidates) > len(rejected):
            continue
        role_stems = stems(roles.get(name, "")) | stems(name)
        score = 2 * len(user_stems & role_stems) + len(last_stems & role_stems)
        mentioned = name != last_source and bool(
            re.search(r"\b" + re.escape(name) + r"\b", last_text, re.IGNORECASE)
        )
        # Named in the last message first; then whoever has spoken least (the turn moves
        # through the specialists instead of bouncing between two); then expertise.
        key = (int(mentioned), -spoken.count(name), score, -position)
        if best is None or key > best:
            best = key
            choice = name
    return choice
