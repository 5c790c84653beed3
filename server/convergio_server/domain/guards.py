"""The contract between a turn and the cost and safety guards (budgets, rate
limits, circuit breaker, input screening, the cost ledger).

The turn runner calls these hooks; the cost capability implements them. Until
it is wired in, `NoGuards` admits everything and records nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from convergio_server.domain.auth import Principal


@dataclass(frozen=True)
class BudgetAlertInfo:
    """A budget crossed an alert threshold (70, 85 by default) or was exhausted (100): the
    turn puts it on its stream as a BudgetAlert event. Delivered once per budget, period and
    threshold, to the turn whose spending crossed it."""

    scope: str  # "TENANT", "USER", "CONVERSATION"
    subject: str
    period: str  # "DAILY", "MONTHLY", "TOTAL", "PER_TURN"
    threshold_percent: int
    spent_usd: Decimal
    limit_usd: Decimal


@dataclass(frozen=True)
class ScreenedResult:
    """What a model may see of a tool result (secrets redacted, instructions withheld or
    marked), the screening rules it matched, and whether it was withheld (`blocked`)."""

    text: str
    rules: tuple[str, ...] = ()
    blocked: bool = False


# Called by the guards during a turn (from inside a model call) with each alert crossed.
AlertSink = Callable[[BudgetAlertInfo], Awaitable[None]]


@dataclass(frozen=True)
class TurnScope:
    """Who is spending, where: what every guard decision and ledger row is keyed by.
    `alerts`, when set, receives the budget alerts crossed by this turn's model calls."""

    principal: Principal
    conversation_id: str
    turn_id: str
    alerts: AlertSink | None = field(default=None, compare=False, hash=False, repr=False)
    # For workflow steps: conversation_id "" and turn_id a unique id of the step's run (it
    # keys the per-turn cap); these two go to the ledger.
    execution_id: str = ""
    step_id: str = ""


@dataclass(frozen=True)
class CallInfo:
    """One model call as the ledger sees it."""

    scope: TurnScope
    agent: str
    provider: str
    model: str
    kind: str  # "agent_reply", "speaker_selection", "tool_choice"
    # Most tokens one call may generate (bounds the budget reservation); 0 = server default.
    max_output_tokens: int = 0


@dataclass
class Admission:
    """What the guards decided for a turn that may start: warnings to put on the stream."""

    alerts: list[BudgetAlertInfo] = field(default_factory=list)
    # Ids of the screening rules that matched the message when the action is "flag".
    flagged_input: list[str] = field(default_factory=list)
    # What the admission counted, for `Guards.turn_not_started`: the rate-limit slot (its
    # key and name) and whether the turn is the tenant breaker's half-open probe.
    rate_slot: tuple[str, str] | None = None
    probe: bool = False


class Guards(Protocol):
    async def conversation_created(self, principal: Principal) -> None:
        """Count a new conversation; raise QuotaExceeded when over the hourly limit."""
        ...

    async def conversation_stored(self, principal: Principal, conversation_id: str) -> None:
        """A new conversation exists and has spent nothing yet (what its first turn would
        otherwise look up). Never raises."""
        ...

    async def admit_turn(
        self, scope: TurnScope, content: str, documents: Sequence[str] = ()
    ) -> Admission:
        """Rate limit, breaker, budgets and input screening (of the message and of the
        documents sent with it) before a turn starts. Raises QuotaExceeded, Unavailable or
        InvalidArgument to refuse it."""
        ...

    async def turn_not_started(self, scope: TurnScope, admission: Admission) -> None:
        """A turn admitted while its conversation was being read did not start after all
        (the conversation does not exist, or the request repeats one that started): give
        back what `admit_turn` counted. Never raises."""
        ...

    def wrap_model_client(self, client: Any, call: CallInfo) -> Any:
        """A ChatCompletionClient that reserves before each call, settles after,
        and writes every call (cancelled ones too) to the ledger. A call refused by a
        budget raises QuotaExceeded (reason BUDGET_EXHAUSTED), by an open provider breaker
        Unavailable (reason CIRCUIT_OPEN): the turn should end with that error. Cancel the
        turn's task with the message "client_gone" (`task.cancel("client_gone")`) to have
        interrupted calls recorded as CLIENT_GONE rather than CANCELLED."""
        ...

    async def screen_tool_result(self, scope: TurnScope, content: str) -> ScreenedResult:
        """Screen a tool result before it reaches a model: what to pass on, and why."""
        ...

    async def turn_finished(
        self,
        scope: TurnScope,
        cost_usd: Decimal,
        failed: bool,
        ordinary: bool = True,
        *,
        neutral: bool = False,
    ) -> None:
        """Feed the breaker and the cost-spike detector. Only an `ordinary` turn (one that
        ran to its normal end) is a sample of what turns cost: a turn stopped early
        (cancelled, refused by a budget, timed out) cost a part of one, often nothing.
        A `neutral` turn says nothing of the tenant's health (its model endpoint failed,
        which counts on that endpoint's breaker): it counts neither way, and frees the
        half-open probe it may have been."""
        ...


class NoGuards:
    async def conversation_created(self, principal: Principal) -> None:
        return None

    async def conversation_stored(self, principal: Principal, conversation_id: str) -> None:
        return None

    async def admit_turn(
        self, scope: TurnScope, content: str, documents: Sequence[str] = ()
    ) -> Admission:
        return Admission()

    async def turn_not_started(self, scope: TurnScope, admission: Admission) -> None:
        return None

    def wrap_model_client(self, client: Any, call: CallInfo) -> Any:
        return client

    async def screen_tool_result(self, scope: TurnScope, content: str) -> ScreenedResult:
        return ScreenedResult(content)

    async def turn_finished(
        self,
        scope: TurnScope,
        cost_usd: Decimal,
        failed: bool,
        ordinary: bool = True,
        *,
        neutral: bool = False,
    ) -> None:
        return None
