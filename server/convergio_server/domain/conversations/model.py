"""Conversations, turns and transcript messages as the domain sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from convergio_server.domain.costs.money import fmt
from convergio_server.domain.events.model import Usage

# Turn lifecycle states and stop reasons, by their API names.
QUEUED = "QUEUED"
RUNNING = "RUNNING"
WAITING_FOR_APPROVAL = "WAITING_FOR_APPROVAL"
ENDED = "ENDED"

IDLE = "IDLE"  # conversation status when no turn is active

COMPLETED = "COMPLETED"
MAX_TURNS = "MAX_TURNS"
CANCELLED = "CANCELLED"
DISCONNECTED = "DISCONNECTED"
ERROR = "ERROR"
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
TIMEOUT = "TIMEOUT"

CONTINUE = "CONTINUE"
CANCEL = "CANCEL"

MAX_QUEUED_TURNS = 10
DEFAULT_MAX_TURNS = 6
DEFAULT_TURN_TIMEOUT_SECONDS = 600.0


def money(value: Decimal) -> str:
    """As the API shows amounts: six decimals, or more when needed to stay exact."""
    return fmt(value)


@dataclass(frozen=True)
class TeamSpec:
    """Who takes part: exactly one of preset, agents, single_agent is set."""

    preset: str = ""
    agents: tuple[str, ...] = ()
    single_agent: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.single_agent:
            return {"single_agent": self.single_agent}
        if self.agents:
            return {"agents": list(self.agents)}
        return {"preset": self.preset}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeamSpec:
        return cls(
            preset=data.get("preset", ""),
            agents=tuple(data.get("agents", ())),
            single_agent=data.get("single_agent", ""),
        )


@dataclass
class Conversation:
    tenant_id: str
    id: str
    title: str
    team: TeamSpec
    participants: list[str]
    # ModelSelection as a plain mapping ({} = server default), see domain/models.
    model: dict[str, Any]
    agent_models: dict[str, dict[str, Any]]
    max_turns_per_message: int
    speaker_policy: str
    labels: dict[str, str]
    turn_timeout_seconds: float
    created_by: str
    create_time: datetime | None = None
    update_time: datetime | None = None
    turn_count: int = 0
    message_count: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    active_turn_id: str = ""
    active_turn_status: str = ""
    queued_turn_count: int = 0
    last_sequence: int = 0

    @property
    def status(self) -> str:
        if not self.active_turn_id:
            return IDLE
        if self.active_turn_status == WAITING_FOR_APPROVAL:
            return WAITING_FOR_APPROVAL
        return RUNNING


@dataclass
class TurnOptions:
    """What a turn was started with; stored with it so a queued start or a re-attach keeps it."""

    max_turns: int
    on_disconnect: str = CONTINUE
    documents: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_turns": self.max_turns,
            "on_disconnect": self.on_disconnect,
            "documents": self.documents,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnOptions:
        return cls(
            max_turns=int(data.get("max_turns", DEFAULT_MAX_TURNS)),
            on_disconnect=data.get("on_disconnect", CONTINUE),
            documents=list(data.get("documents", [])),
        )


@dataclass
class Turn:
    tenant_id: str
    conversation_id: str
    id: str
    request_id: str
    status: str
    content: str
    options: TurnOptions
    user_message_id: str
    created_by: str
    stop_reason: str = ""
    stop_detail: str = ""
    error: dict[str, Any] | None = None
    message_count: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # False while a turn promoted from the queue waits for a server to start it.
    started: bool = True
    first_sequence: int = 0
    last_sequence: int = 0
    # Its TurnCompleted is in the durable log (last_sequence is then that event's).
    end_logged: bool = False


@dataclass
class Message:
    tenant_id: str
    conversation_id: str
    id: str
    turn_id: str
    role: str  # USER | AGENT | TOOL | SYSTEM
    source: str
    content: str
    model: str = ""
    usage: Usage | None = None
    cost_usd: Decimal | None = None
    create_time: datetime | None = None


@dataclass
class Memory:
    """What a turn's team starts from: the team state saved after the last turn that
    completed, and the transcript messages written since then that it does not hold (the
    turns that were cancelled, failed or timed out before saving), oldest first."""

    state: dict[str, Any] | None
    missed: list[Message]
    # The saved state is the one the caller said it holds (`state` is then not read).
    held: bool = False


@dataclass
class TurnOutcome:
    """How a turn ended, as the runner reports it to the store."""

    stop_reason: str
    stop_detail: str = ""
    error: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    # AutoGen's save_state() as JSON text, encoded once; None = keep the saved state.
    team_state_json: str | None = None
