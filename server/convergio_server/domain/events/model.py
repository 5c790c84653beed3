"""The events of a conversation as the domain sees them: one dataclass per event kind
of the public API, an envelope (`Event`) with the conversation, turn, sequence and time,
and a compact JSON form used by both halves of the event log (Redis and PostgreSQL).

Enumerations are carried as their short names ("COMPLETED", "AGENT", "TIMEOUT"); the API
layer maps them to the proto enums.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.model_calls + other.model_calls,
        )


class EventBody:
    """Base of every event kind; `KIND` is its name in the log and in the API oneof."""

    KIND: ClassVar[str] = ""
    # Token deltas live only in the live window; every other kind is also kept in PostgreSQL.
    DURABLE: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class TurnQueued(EventBody):
    KIND: ClassVar[str] = "turn_queued"
    request_id: str
    position: int


@dataclass(frozen=True, slots=True)
class TurnStarted(EventBody):
    KIND: ClassVar[str] = "turn_started"
    request_id: str
    user_message_id: str
    content: str
    participants: list[str]
    speaker_policy: str
    max_turns: int
    enabled_features: list[str]
    created_by: str


@dataclass(frozen=True, slots=True)
class ScoreFactor:
    name: str
    value: float
    weight: float


@dataclass(frozen=True, slots=True)
class SpeakerCandidate:
    agent: str
    score: float
    factors: list[ScoreFactor] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpeakerSelected(EventBody):
    KIND: ClassVar[str] = "speaker_selected"
    agent: str
    round: int
    policy: str
    reason: str
    candidates: list[SpeakerCandidate] = field(default_factory=list)
    selection_duration: float = 0.0  # seconds


@dataclass(frozen=True, slots=True)
class ContextDocument:
    document_id: str
    title: str
    snippet: str
    score: float
    source: str
    score_factors: dict[str, float] = field(default_factory=dict)
    # What input screening found in a knowledge-base document; `withheld`: it was left out.
    screening_findings: list[ScreeningFinding] = field(default_factory=list)
    withheld: bool = False


@dataclass(frozen=True, slots=True)
class ContextInjected(EventBody):
    KIND: ClassVar[str] = "context_injected"
    agent: str
    query: str
    documents: list[ContextDocument]
    threshold: float


@dataclass(frozen=True, slots=True)
class TokenDelta(EventBody):
    KIND: ClassVar[str] = "token_delta"
    DURABLE: ClassVar[bool] = False
    message_id: str
    agent: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall(EventBody):
    KIND: ClassVar[str] = "tool_call"
    call_id: str
    agent: str
    tool: str
    arguments_json: str
    risk_level: str = "LOW"
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult(EventBody):
    KIND: ClassVar[str] = "tool_result"
    call_id: str
    agent: str
    tool: str
    content: str
    is_error: bool = False
    error_kind: str = "UNSPECIFIED"
    attempts: int = 1
    duration: float = 0.0  # seconds


@dataclass(frozen=True, slots=True)
class MessageCompleted(EventBody):
    KIND: ClassVar[str] = "message_completed"
    message_id: str
    agent: str
    role: str
    content: str
    model: str
    usage: Usage
    cost_usd: str


@dataclass(frozen=True, slots=True)
class ApprovalRequired(EventBody):
    KIND: ClassVar[str] = "approval_required"
    approval_id: str
    call_id: str
    agent: str
    tool: str
    summary: str
    risk_level: str
    expire_time: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class ApprovalResolved(EventBody):
    KIND: ClassVar[str] = "approval_resolved"
    approval_id: str
    call_id: str
    status: str
    decided_by: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class CostUpdate(EventBody):
    KIND: ClassVar[str] = "cost_update"
    turn_usage: Usage
    turn_cost_usd: str
    conversation_cost_usd: str


@dataclass(frozen=True, slots=True)
class BudgetAlert(EventBody):
    KIND: ClassVar[str] = "budget_alert"
    scope: str
    subject: str
    period: str
    threshold_percent: int
    spent_usd: str
    limit_usd: str


@dataclass(frozen=True, slots=True)
class ScreeningFinding:
    category: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class InputFlagged(EventBody):
    KIND: ClassVar[str] = "input_flagged"
    message_id: str
    call_id: str
    findings: list[ScreeningFinding]


@dataclass(frozen=True, slots=True)
class ErrorOccurred(EventBody):
    """An Error event: `code` is the numeric gRPC status code, `reason` an ErrorReason name."""

    KIND: ClassVar[str] = "error"
    code: int
    reason: str
    message: str
    retryable: bool = False
    retry_delay: float = 0.0  # seconds; 0 = no advice
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnCompleted(EventBody):
    KIND: ClassVar[str] = "turn_completed"
    stop_reason: str
    stop_detail: str
    usage: Usage
    cost_usd: str
    message_count: int
    last_message_id: str
    duration: float  # seconds


BODY_TYPES: dict[str, type[EventBody]] = {
    cls.KIND: cls
    for cls in (
        TurnQueued,
        TurnStarted,
        SpeakerSelected,
        ContextInjected,
        TokenDelta,
        ToolCall,
        ToolResult,
        MessageCompleted,
        ApprovalRequired,
        ApprovalResolved,
        CostUpdate,
        BudgetAlert,
        InputFlagged,
        ErrorOccurred,
        TurnCompleted,
    )
}


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a conversation's event log."""

    conversation_id: str
    turn_id: str
    sequence: int
    event_time: datetime
    body: EventBody

    @property
    def kind(self) -> str:
        return self.body.KIND

    @property
    def terminal(self) -> bool:
        return isinstance(self.body, TurnCompleted)

    def to_json(self) -> bytes:
        return encode(self.conversation_id, self.turn_id, self.sequence, self.event_time, self.body)


# Event times travel as integer microseconds, the precision PostgreSQL keeps, so that an
# event replayed from either half of the log is the same to the microsecond.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def body_dict(body: EventBody) -> dict[str, Any]:
    if isinstance(body, TokenDelta):  # the hot path: most events are deltas
        return {"message_id": body.message_id, "agent": body.agent, "text": body.text}
    return typing.cast(dict[str, Any], _plain(body))


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """Dataclasses as dicts, recursively. Unlike `dataclasses.asdict`, leaves are not
    deep-copied: they are immutable (str, int, float, bool, None)."""
    cls = type(value)
    if cls in _LEAVES:
        return value
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if cls is list or cls is tuple:
        return [_plain(v) for v in value]
    if cls is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


# One encoder for every event: `json.dumps` with separators builds a new one each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_string = json.encoder.encode_basestring_ascii


def event_time_micros(event_time: datetime) -> int:
    """Microseconds since the epoch."""
    return (event_time - _EPOCH) // _MICROSECOND


# A token delta's payload, written out: most events are deltas, and this is a third of what
# the generic encoder costs. The same JSON as the encoder's (ASCII, compact).
_DELTA = (
    '{"c":%s,"t":%s,"s":%d,"ts":%d,"k":"token_delta","d":{"message_id":%s,"agent":%s,"text":%s}}'
)


def encode(
    conversation_id: str, turn_id: str, sequence: int, event_time: datetime, body: EventBody
) -> bytes:
    if type(body) is TokenDelta:
        return (
            _DELTA
            % (
                _string(conversation_id),
                _string(turn_id),
                sequence,
                event_time_micros(event_time),
                _string(body.message_id),
                _string(body.agent),
                _string(body.text),
            )
        ).encode()
    payload = {
        "c": conversation_id,
        "t": turn_id,
        "s": sequence,
        "ts": event_time_micros(event_time),
        "k": body.KIND,
        "d": body_dict(body),
    }
    return _COMPACT.encode(payload).encode()


def decode(raw: bytes | str) -> Event:
    payload = json.loads(raw)
    return Event(
        conversation_id=payload["c"],
        turn_id=payload["t"],
        sequence=int(payload["s"]),
        event_time=_EPOCH + timedelta(microseconds=payload["ts"]),
        body=body_from_dict(payload["k"], payload["d"]),
    )


def body_from_dict(kind: str, data: dict[str, Any]) -> EventBody:
    if kind == "token_delta":
        return TokenDelta(data["message_id"], data["agent"], data["text"])
    cls = BODY_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    return typing.cast(EventBody, _build(cls, data))


_HINTS: dict[type, dict[str, Any]] = {}


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        values[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(typing.cast(type, hint), value)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    return value
