"""Text helpers shared by the model clients: a deterministic tokenizer, keyword stems,
sentence splitting and relevance by keyword overlap.

The tokenizer counts words and punctuation marks. It is not any vendor's tokenizer; it
is stable, offline and close enough to real counts (within a factor of about 1.3 for
English) to drive usage reports, budgets and benchmarks.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from autogen_core import FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'-]*|\d+(?:\.\d+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# Chunks streamed to clients: one word with its trailing punctuation and whitespace.
_CHUNK = re.compile(r"\s*\S+\s*")

# Each message costs a few tokens of framing (role, separators), as with real chat models.
MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 85

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just let me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours
    yourself yourselves please tell give make want need know think like get us one two its
    shall may might must much many well way use using used via per etc what's it's i'm we're
    let's don't can't""".split()
)


def tokenize(text: str) -> list[str]:
    """Words and punctuation marks, in order."""
    return _TOKEN.findall(text)


def count_text_tokens(text: str) -> int:
    # Counted again and again: streamed chunks (words), and system prompts and earlier
    # messages at every model call of a turn (by the model client and by billing).
    if len(text) <= 24:
        return _count_word(text)
    if len(text) <= 8192:
        return _count_text(text)
    return _count(text)


def _count(text: str) -> int:
    return len(_TOKEN.findall(text))


# Many distinct words, few distinct long texts: a cache each, sized for what it holds.
_count_word = functools.lru_cache(maxsize=16384)(_count)
_count_text = functools.lru_cache(maxsize=1024)(_count)


def stream_chunks(text: str) -> list[str]:
    """Split `text` into streamable chunks (a word with its whitespace); joined they give
    back `text` exactly."""
    chunks = _CHUNK.findall(text)
    if "".join(chunks) != text:  # only whitespace-only text can differ; keep it exact
        return [text] if text else []
    return chunks


_SUFFIXES = ("ing", "ies", "ed", "es", "s")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude stem: lower case, common English suffixes off, first five letters.
    "calculate" and "calculator" share "calcu"; "risks" and "risk" share "risk";
    "planning" and "plan" share "plan"."""
    lowered = word.lower().strip("'-_")
    for suffix in _SUFFIXES:
        if (
            lowered.endswith(suffix)
            and len(lowered) - len(suffix) >= 3
            and not (suffix == "s" and lowered.endswith("ss"))
        ):
            lowered = lowered[: -len(suffix)]
            if suffix == "ies":
                lowered += "y"
            elif suffix == "ing" and len(lowered) > 3 and lowered[-1] == lowered[-2]:
                lowered = lowered[:-1]  # planning -> plan
            break
    return lowered[:5] if len(lowered) > 5 else lowered


def keywords(text: str) -> list[str]:
    """Content words of `text` in order of first appearance (no stop words, no duplicates)."""
    seen: set[str] = set()
    out: list[str] = []
    for match in _WORD.findall(text.replace("_", " ")):
        lowered = match.lower()
        if lowered in STOPWORDS or len(lowered) < 2 or lowered in seen:
            continue
        seen.add(lowered)
        out.append(lowered)
    return out


@functools.lru_cache(maxsize=8192)
def stems(text: str) -> frozenset[str]:
    """Stems of the content words of `text` (cached: the same context sentences are read
    again at every call of a conversation)."""
    return frozenset(stem(word) for word in keywords(text))


def overlap(query_stems: frozenset[str] | set[str], text: str) -> int:
    """How many of the query's stems appear in `text`."""
    return len(query_stems & stems(text))


@functools.lru_cache(maxsize=4096)
def sentences(text: str) -> tuple[str, ...]:
    """The sentences of `text` (cached, as `stems`: a long conversation's context is read
    again at every call)."""
    return tuple(s.strip() for s in _SENTENCE.split(text) if len(s.strip()) > 1)


def content_text(content: str | Sequence[Any]) -> str:
    """The text of a message content (strings, images, function calls)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for item in content:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, FunctionCall):
            parts.append(f"{item.name}({item.arguments})")
        elif isinstance(item, Image):
            parts.append("[image]")
        else:
            parts.append(str(item))
    return "\n".join(parts)


def message_text(message: LLMMessage) -> str:
    if isinstance(message, SystemMessage):
        return message.content
    if isinstance(message, UserMessage | AssistantMessage):
        return content_text(message.content)
    if isinstance(message, FunctionExecutionResultMessage):
        return "\n".join(f"{r.name}: {r.content}" for r in message.content)
    return str(message)  # pragma: no cover - LLMMessage is a closed union


def _images(message: LLMMessage) -> int:
    if isinstance(message, UserMessage) and not isinstance(message.content, str):
        return sum(1 for item in message.content if isinstance(item, Image))
    return 0


def tool_schema(tool: Tool | ToolSchema) -> ToolSchema:
    # A ToolSchema is a dict; not isinstance(tool, Tool): a runtime Protocol check is slow.
    return tool if isinstance(tool, dict) else tool.schema


def _schema_tokens(tool: Tool | ToolSchema) -> int:
    return count_text_tokens(json.dumps(dict(tool_schema(tool)), sort_keys=True))


@functools.lru_cache(maxsize=1024)
def _json_schema_tokens(compact: bytes) -> int:
    schema: ToolSchema = orjson.loads(compact)
    return _schema_tokens(schema)


# Tools of one kind, name and arguments share their schema: its token count is computed once.
_TOOL_TOKENS: dict[tuple[type, str, str, Any], int] = {}


def tool_tokens(tool: Tool | ToolSchema) -> int:
    if isinstance(tool, dict):
        # AutoGen hands over a fresh copy of each schema on every call: keyed by its compact
        # JSON (a tenth of the cost of the JSON it is counted in).
        try:
            compact = orjson.dumps(tool, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # what orjson does not take (keys that are not strings)
            return _schema_tokens(tool)
        return _json_schema_tokens(compact)
    args = getattr(tool, "args_type", None)
    key = (type(tool), tool.name, tool.description, args() if callable(args) else None)
    found = _TOOL_TOKENS.get(key)
    if found is None:
        found = _TOOL_TOKENS[key] = _schema_tokens(tool)
    return found


def count_message_tokens(
    messages: Iterable[LLMMessage], tools: Sequence[Tool | ToolSchema] = ()
) -> int:
    """Prompt tokens of a request: every message's text plus framing, images at a flat
    rate, and the JSON of the tool schemas."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_text_tokens(message_text(message))
        total += IMAGE_TOKENS * _images(message)
    for tool in tools:
        total += tool_tokens(tool)
    return total


def truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def mapping_str(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
