"""The turn runner: runs one turn of a conversation in a task the server owns and turns
every AutoGen event into a domain event on the conversation's event log.

One `TurnExecution` per running turn. It builds the team (see `team.py`), restores the
saved state, runs `run_stream`, coalesces the model's text chunks (handed over by the model
client, past AutoGen: see `models/tap.py`) into deltas, stores each completed
message in the transcript, and always ends with a TurnCompleted event, whatever happened:
completion, the turn limit, a cancel, a timeout, a model failure. A lease in Redis says
which process runs the turn; it is renewed while the turn runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    BaseChatMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
)
from autogen_core import CancellationToken
from autogen_core.models import RequestUsage
from opentelemetry import trace

from convergio_server.domain import tracing
from convergio_server.domain.auth import Principal
from convergio_server.domain.background import Backoff, cancel_and_wait
from convergio_server.domain.conversations import state_packing
from convergio_server.domain.conversations.admittance import Admittance
from convergio_server.domain.conversations.endings import EndingGate
from convergio_server.domain.conversations.history import trim_team_state
from convergio_server.domain.conversations.kept_teams import (
    ANOTHER_MAKE,
    NONE_KEPT,
    REUSED,
    STALE,
    KeptTeams,
    close_team,
)
from convergio_server.domain.conversations.metering import Meter, Pricing
from convergio_server.domain.conversations.metering import free as _free
from convergio_server.domain.conversations.model import (
    BUDGET_EXHAUSTED,
    COMPLETED,
    ERROR,
    MAX_TURNS,
    TIMEOUT,
    Conversation,
    Message,
    Turn,
    TurnOutcome,
    money,
)
from convergio_server.domain.conversations.screening import Screen, category_of, findings_of
from convergio_server.domain.conversations.selection import Plan
from convergio_server.domain.conversations.store import ConversationStore
from convergio_server.domain.conversations.turn_stats import TurnStats
from convergio_server.domain.errors import Unavailable
from convergio_server.domain.events.failures import endpoint_failure, error_event, outage_failure
from convergio_server.domain.events.log import EventLog
from convergio_server.domain.events.model import (
    BudgetAlert,
    ContextDocument,
    ContextInjected,
    CostUpdate,
    ErrorOccurred,
    EventBody,
    InputFlagged,
    MessageCompleted,
    ScreeningFinding,
    SpeakerSelected,
    TokenDelta,
    ToolCall,
    ToolResult,
    TurnCompleted,
    TurnStarted,
    Usage,
)
from convergio_server.domain.guards import (
    Admission,
    AlertSink,
    BudgetAlertInfo,
    Guards,
    ScreenedResult,
    TurnScope,
)
from convergio_server.domain.models.tap import TextSink

_T = TypeVar("_T")
# How long a turn retries a write PostgreSQL cannot take (it is unreachable).
STORE_RETRY_SECONDS = 120.0
log = logging.getLogger(__name__)
# One line per turn that ends here: what operators search when a caller asks about a turn.
turn_log = logging.getLogger("convergio.turns")

# At most this many messages of turns that ended without saving the team are replayed to it.
MAX_MISSED_MESSAGES = 50
# How long token deltas wait, at most, for this process's readers of the conversation to
# catch up before they are logged (they keep growing meanwhile).
HOLD_SECONDS = 0.05
# Promoted turns that no server started, started per look (`TurnRunner.sweep`).
SWEEP_BATCH = 50
# A cancel that arrives while its turn is being started here is applied when it starts.
EARLY_CANCEL_SECONDS = 5.0
MAX_EARLY_CANCELS = 10_000

_END = object()
_CANCEL = object()
_FLUSH = object()  # the coalescing window of the pending token chunks has closed
_SELECTED = object()  # the team's selector chose a speaker
_SETTLED = object()  # a model call ended: its usage and cost are the turn's


@dataclass(slots=True)
class _Chunk:
    """Text of a streamed model call, as the model client handed it over (the chunks that
    came while it waited in the queue included)."""

    source: str
    message_id: str
    text: str
    generated: datetime


@dataclass(slots=True)
class _Answered:
    """The streamed call `message_id` of `source` ended with text: the message AutoGen
    builds from it is that one."""

    source: str
    message_id: str


UNAVAILABLE_CODE = 14
SERVER_STOPPED = "the server running the turn stopped before it ended"
INTERNAL_CODE = 13


@dataclass
class BuiltTeam:
    """A team ready to run one turn."""

    runnable: Any  # a Team or a single AssistantAgent: run_stream / save_state / load_state
    participants: list[str]
    policy: str
    plan: Plan | None  # None for a single agent
    meter: Meter
    models: dict[str, str]  # agent -> "provider/model"
    risk: dict[str, str] = field(default_factory=dict)  # tool -> risk level
    features: list[str] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    pricing: dict[str, Pricing] = field(default_factory=dict)  # agent -> cost of a call
    context: list[ContextDocument] = field(default_factory=list)  # documents injected
    # Puts those documents into the agents' memories (after their saved state is restored).
    inject_context: Callable[[], Awaitable[None]] | None = None
    history_tokens: int = 0  # the agents' memory budget (bounds a group member's buffer)
    tool_attempts: dict[str, int] = field(default_factory=dict)  # call id -> attempts
    # Call id -> what input screening found in the call's result (when it found anything).
    screened: dict[str, ScreenedResult] = field(default_factory=dict)
    # Screens what reaches the turn's models from outside (tool results, knowledge).
    screen: Screen | None = None
    kept: Any = None  # what the builder needs to make the team ready for another turn


@dataclass(frozen=True)
class TeamRequest:
    """What a turn asks of the team builder: whose turn, with which policy and features,
    and where its team reports (budget alerts, streamed text, the turn's admission)."""

    principal: Principal
    conversation: Conversation
    turn: Turn
    policy: str
    features: list[str]
    alerts: AlertSink | None = None
    text: TextSink | None = None
    # With it, the team may run before the turn is admitted (see `admittance.py`).
    admittance: Admittance | None = None


class TeamBuilder(Protocol):
    async def build(self, request: TeamRequest) -> BuiltTeam: ...

    async def reuse(self, team: BuiltTeam, request: TeamRequest) -> BuiltTeam | None:
        """`team`, which ran the conversation's previous turn, made ready for this one; None
        when the turn needs a team of another make (then `build` one)."""
        ...

    def resolve(self, principal: Principal, conversation: Conversation) -> tuple[str, list[str]]:
        """The speaker policy and the features (flags) on for this caller's turn."""
        ...


class Leases(Protocol):
    async def acquire(self, tenant_id: str, conversation_id: str, holder: str) -> bool: ...

    async def acquire_if_free(self, tenant_id: str, conversation_id: str, holder: str) -> bool:
        """Take the lease unless someone holds it."""
        ...

    async def renew_many(self, held: list[tuple[str, str, str]]) -> list[bool]:
        """Renew (tenant, conversation, holder) leases in one round trip; False where the
        holder no longer holds it."""
        ...

    async def release(self, tenant_id: str, conversation_id: str, holder: str) -> None: ...

    async def holder(self, tenant_id: str, conversation_id: str) -> str | None: ...


@dataclass
class RunnerConfig:
    coalesce_seconds: float
    lease_seconds: float
    # How long a turn retries logging its end (then another process's sweep logs it).
    end_retry_seconds: float = 120.0
    # Turn ends run at once while other turns stream (see `endings.py`); 0 = no limit.
    endings_at_once: int = 0
    # Teams kept between turns (see `kept_teams.py`): how many, how much memory they may
    # hold (estimated), and for how long idle.
    teams_kept: int = 0
    teams_kept_bytes: int = 0
    team_idle_seconds: float = 300.0
    # New turns a process runs at once (queued turns it promotes excepted); 0 = no limit.
    max_running_turns: int = 0


class _Deltas:
    """Token chunks of one message, coalesced: a chunk goes out at once when no delta went
    out within the window, else with the others of the window when it closes. Sparse
    tokens wait for nothing; a burst becomes one delta per window."""

    def __init__(self) -> None:
        self.message_id = ""
        self.agent = ""
        self.parts: list[str] = []
        self.flushed = 0.0  # when the last delta went out (monotonic)
        self.generated: datetime | None = None

    def add(self, message_id: str, agent: str, text: str, generated: datetime) -> None:
        if not self.parts:
            self.message_id, self.agent = message_id, agent
            self.generated = generated
        self.parts.append(text)

    def take(self) -> tuple[TokenDelta, datetime | None] | None:
        """The coalesced delta and when its first token was generated."""
        if not self.parts:
            return None
        delta = TokenDelta(self.message_id, self.agent, "".join(self.parts))
        self.parts = []
        self.flushed = time.monotonic()
        return delta, self.generated


def _release(held: asyncio.Future[None]) -> None:
    if not held.done():
        held.set_result(None)


def _usage(u: RequestUsage | None) -> Usage:
    if u is None:
        return Usage()
    return Usage(u.prompt_tokens, u.completion_tokens, 0, 1)


class TurnExecution:
    def __init__(
        self,
        runner: TurnRunner,
        principal: Principal,
        conversation: Conversation,
        turn: Turn,
        policy: str,
        features: list[str],
    ) -> None:
        self.runner = runner
        self.policy = policy
        self.features = features
        self.principal = principal
        self.conversation = conversation
        self.turn = turn
        self.token = CancellationToken()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._last_queued: Any = None  # what `put` queued last
        # The turn's loop (`_drive`) waits for the queue: a chunk, or the end of a coalescing
        # window, is handled where it happens instead of waking the loop.
        self._idle = False
        # The token stream of `_drive` (set there).
        self._deltas = _Deltas()
        self._window = runner.config.coalesce_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._plan: Plan | None = None
        self._announced = 0  # the plan's selections announced so far
        self._spoken = 0  # the speakers whose message is complete
        self.stop: tuple[str, str] | None = None
        self.done = asyncio.Event()
        self.started = time.monotonic()
        self.message_count = 0
        self.last_message_id = ""
        self.usage_by_agent: dict[str, Usage] = {}
        self.meter = Meter()
        self._calls_told = 0  # model calls whose cost a CostUpdate has reported
        self.task: asyncio.Task[None] | None = None
        self.preparing: asyncio.Future[BuiltTeam] | None = None
        # The team runs as soon as it is built, while the turn may still be being admitted;
        # what it produces waits in the queue until `_drive` (see `admittance.py`).
        self.admittance = Admittance()
        self.pump: asyncio.Task[None] | None = None
        self.holder = runner.holder(turn.id)
        # Events posted by the turn and not yet in the log; one writer task appends them in
        # order, in batches, so the team never waits for Redis between tokens.
        self._outbox: list[tuple[EventBody, datetime | None]] = []
        # The turn's events are numbered 1, 2, ... as posted (the ordinal of the outbox's
        # first): a retried append whose first attempt Redis ran after all appends nothing
        # twice. The first `_sealed` items of the outbox are such a retry: none joins them.
        self._outbox_base = 1
        self._sealed = 0
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._outbox_writer: asyncio.Task[None] | None = None
        self._outbox_failure: Exception | None = None
        self._holding: asyncio.Future[None] | None = None  # see `_hold`
        # The turn's first token delta is never held: its readers are behind the turn's
        # first events then, and the first token must not wait for them.
        self._delta_logged = False
        self.first_token_seconds: float | None = None  # when its first delta was posted
        # The sequence of the turn's first event (TurnStarted), once it is logged.
        self.first_logged: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # While the turn runs, this process publishes its events straight to its readers.
        self._writing = runner.events.writing(conversation.tenant_id, conversation.id)
        # Messages of earlier turns that the saved team state lacks, replayed to the team.
        self.missed: list[TextMessage] = []
        self.speaker_announced = False  # the single agent's SpeakerSelected went with TurnStarted
        self._context: ContextInjected | None = None  # a team's, until its first speaker
        self.lease_released = False  # renewed by the runner until then
        self.server_stopping = False  # ended because this process is shutting down
        self.endpoint_failed = False  # ended by its model endpoint (see `endpoint_failure`)
        self.outage = False  # ended because a store was unreachable (see `outage_failure`)
        self._team_reusable = False  # the team holds exactly the state it saved
        self.team_kept = False  # see `kept_teams.py`
        self._in_hand: BuiltTeam | None = None  # the team `_prepare` is making ready
        self._streaming = False  # counted among the runner's streaming turns
        # The turn's trace span (tracing on): a child of the call that started it, the parent
        # of its model calls' spans (the team's tasks are started in its context).
        self.span: trace.Span | None = None
        if tracing.enabled():
            self.span = tracing.tracer().start_span(
                "turn",
                attributes={
                    "convergio.tenant": conversation.tenant_id,
                    "convergio.conversation_id": conversation.id,
                    "convergio.turn_id": turn.id,
                },
            )

    @property
    def tenant_id(self) -> str:
        return self.conversation.tenant_id

    def cancel(self, reason: str, detail: str) -> None:
        if self.stop is None:
            self.stop = (reason, detail)
            self.token.cancel()
            self.put(_CANCEL)

    async def _alert(self, alert: BudgetAlertInfo) -> None:
        # Called from inside a model call: the event loop of the turn emits it in order.
        self.put(_budget_alert(alert))

    # The turn's TextSink, called from inside a model call: a chunk is handled at once when
    # the turn's loop is idle, else queued, so that it keeps its place among the team's events.
    def text(self, agent: str, message_id: str, chunk: str, generated: datetime) -> None:
        if self._idle and not self.queue.qsize():
            self._inline(self._on_chunk, _Chunk(agent, message_id, chunk, generated))
            return
        last = self._last_queued
        if type(last) is _Chunk and last.message_id == message_id and self.queue.qsize():
            # The previous chunk still waits, last in the queue: this one joins it (a burst
            # costs the turn's loop one item, not one per word).
            last.text += chunk
            return
        self.put(_Chunk(agent, message_id, chunk, generated))

    def answered(self, agent: str, message_id: str) -> None:
        self.put(_Answered(agent, message_id))

    def _inline(self, handle: Callable[[Any], None], item: Any) -> None:
        """Handle an item for the idle turn loop, here; what it raises (an earlier append
        that failed) goes to the loop, which ends the turn with it."""
        try:
            handle(item)
        except Exception as exc:
            self.put(exc)

    def _on_chunk(self, item: _Chunk) -> None:
        if not self._streaming:
            self._streaming = True
            self.runner.endings.started_streaming()
        self._announce(item.source)
        deltas = self._deltas
        if deltas.parts and deltas.message_id != item.message_id:
            self._emit_delta()
        deltas.add(item.message_id, item.source, item.text, item.generated)
        left = deltas.flushed + self._window - time.monotonic()
        if left <= 0:
            self._emit_delta()
        elif self._timer is None:
            # One timer per window, not a timeout per chunk.
            self._timer = asyncio.get_running_loop().call_later(left, self._window_closed)

    def _stopped_streaming(self) -> None:
        if self._streaming:
            self._streaming = False
            self.runner.endings.stopped_streaming()

    def _window_closed(self) -> None:
        if self._idle and not self.queue.qsize():
            self._inline(self._on_window_closed, None)
        else:
            self.put(_FLUSH)  # after the chunks queued before it

    def _on_window_closed(self, _: object = None) -> None:
        self._timer = None
        deltas = self._deltas
        if deltas.parts:
            left = deltas.flushed + self._window - time.monotonic()
            if left > 0:
                self._timer = asyncio.get_running_loop().call_later(left, self._window_closed)
            else:
                self._emit_delta()

    def _announce(self, source: str) -> None:
        """Announce the plan's selections up to `source`'s, when it is not the agent
        speaking. The selector may already have chosen the speaker after this one (it runs
        ahead of the turn's queue): announcing only up to this item's speaker keeps a
        SpeakerSelected from preceding the previous speaker's message."""
        selections = self._plan.selections if self._plan is not None else []
        speaking = selections[self._announced - 1].agent if self._announced else ""
        if source in ("user", speaking):
            return
        while self._announced < len(selections):
            selection = selections[self._announced]
            self._emit_delta()
            self._post_selection(selection)
            self._announced += 1
            if selection.agent == source:
                break

    def _announce_next(self) -> None:
        """Announce the next selection once the speaker before it has finished its message,
        without waiting for the new speaker's first words."""
        selections = self._plan.selections if self._plan is not None else []
        if self._announced < len(selections) and self._announced <= self._spoken:
            self._emit_delta()
            self._post_selection(selections[self._announced])
            self._announced += 1

    def _post_selection(self, selection: SpeakerSelected) -> None:
        """Post a team's SpeakerSelected; the first is followed by the turn's context, which
        went into the context of the agent it names (as a single agent's does)."""
        self.post(selection)
        if self._context is not None:
            context, self._context = self._context, None
            self.post(replace(context, agent=selection.agent))

    def put(self, item: Any) -> None:
        """Queue an item for the turn's loop (`_drive`)."""
        self._last_queued = item
        self.queue.put_nowait(item)

    def post(
        self, body: EventBody, event_time: datetime | None = None, *, ending: bool = False
    ) -> None:
        """Queue an event for the log without waiting for it. Raises what made an earlier
        append fail (once), so that the turn ends as it would have then; not for the
        events that end the turn (`ending`), which must be queued whatever happened."""
        if not ending:
            self._raise_outbox_failure()
        if type(body) is TokenDelta and len(self._outbox) > self._sealed:
            # The log is behind (the last append has not returned): the text joins the
            # delta that waits with it rather than making one more event. Under load, deltas
            # grow instead of piling up; no token waits longer than it would have.
            last, first_time = self._outbox[-1]
            if (
                type(last) is TokenDelta
                and last.message_id == body.message_id
                and last.agent == body.agent
            ):
                self._outbox[-1] = (
                    TokenDelta(last.message_id, last.agent, last.text + body.text),
                    first_time,
                )
                return
        self._outbox.append((body, event_time))
        if self._holding is not None and type(body) is not TokenDelta:
            _release(self._holding)
        self._outbox_empty.clear()
        if self._outbox_writer is None or self._outbox_writer.done():
            self._outbox_writer = asyncio.create_task(
                self._write_outbox(), name=f"turn-events:{self.turn.id}"
            )

    async def flush(self) -> None:
        """Wait until everything posted is logged; raises what made an append fail."""
        await self._outbox_empty.wait()
        self._raise_outbox_failure()

    def _raise_outbox_failure(self) -> None:
        if self._outbox_failure is not None:
            failure, self._outbox_failure = self._outbox_failure, None
            # Said as what it is, not as a failing model call.
            raise Unavailable(
                f"the conversation's event log could not be written: {failure}"[:500],
                retry_after_seconds=1.0,
            ) from failure

    async def _write_outbox(self) -> None:
        try:
            while self._outbox:
                if (
                    self._delta_logged
                    and self.runner.events.readers_behind(self.tenant_id, self.conversation.id)
                    and all(type(body) is TokenDelta for body, _ in self._outbox)
                ):
                    await self._hold()
                batch, self._outbox = self._outbox, []
                base, self._sealed = self._outbox_base, 0
                self._outbox_base = base + len(batch)
                try:
                    logged = await self.runner.events.append_many(
                        self.tenant_id,
                        self.conversation.id,
                        self.turn.id,
                        batch,
                        range(base, base + len(batch)),
                    )
                except Exception as exc:
                    log.warning("turn %s: events could not be logged: %s", self.turn.id, exc)
                    self._outbox_failure = exc
                    if not self.first_logged.done():
                        self.first_logged.set_exception(exc)
                        self.first_logged.exception()  # retrieved: the starter may be gone
                    # Kept, in order, for the next attempt: the turn's end must be logged.
                    # (Redis may have run this one after all: the ordinals tell it.)
                    self._outbox[:0] = batch
                    self._outbox_base, self._sealed = base, len(batch)
                    return
                if logged and not self.first_logged.done():
                    self.first_logged.set_result(logged[0].sequence)
                if not self._delta_logged:
                    self._delta_logged = any(type(body) is TokenDelta for body, _ in batch)
        finally:
            self._outbox_empty.set()

    async def _hold(self) -> None:
        """Keep the token deltas out of the log while a reader of this process still has
        events waiting behind the one it is writing (its client, or the event loop, is
        slower than the tokens): the text posted meanwhile joins them, so the reader gets
        fewer, larger deltas instead of a growing queue. Until it catches up, another kind
        of event is posted, or HOLD_SECONDS."""
        loop = asyncio.get_running_loop()
        held = self._holding = loop.create_future()
        timer = loop.call_later(HOLD_SECONDS, _release, held)
        forget = self.runner.events.when_caught_up(self.tenant_id, self.conversation.id, held)
        try:
            await held
        finally:
            timer.cancel()
            forget()
            self._holding = None

    def begin(self, first: list[EventBody]) -> None:
        """Queue the turn's first events and start it: the team starts while they are
        being logged (`first_logged`)."""
        self._writing.__enter__()
        self.admittance.admit()
        try:
            if self.preparing is None:
                self.prepare()
            # The turn's loop is created before the log's writer (by the first `post`), so it
            # runs first: words the team said while the turn was admitted go out in the same
            # append as TurnStarted, not in one after it.
            self.task = self._start_task(self.run(), f"turn-run:{self.turn.id}")
        except BaseException:
            self._writing.__exit__(None, None, None)
            raise
        for body in first:
            self.post(body)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._writing.__exit__(None, None, None)

    async def _run(self) -> None:
        team: BuiltTeam | None = None
        outcome = TurnOutcome(stop_reason=ERROR)
        error: ErrorOccurred | None = None
        try:
            try:
                async with asyncio.timeout(self.conversation.turn_timeout_seconds):
                    assert self.preparing is not None
                    team = await self.preparing
                    self.meter = team.meter
                    outcome, error = await self._drive(team)
            except TimeoutError:
                outcome = TurnOutcome(
                    stop_reason=TIMEOUT,
                    stop_detail=f"the turn ran longer than "
                    f"{self.conversation.turn_timeout_seconds:g} s",
                )
            except Exception as exc:  # building the team failed (bad model settings...)
                log.warning("turn %s failed: %s", self.turn.id, exc)
                error = error_event(exc)
                outcome = TurnOutcome(stop_reason=_stop_reason(error), stop_detail=error.message)
            # A cancelled turn's end is not queued: its stream must end at once.
            async with self.runner.endings.slot(urgent=self.stop is not None):
                next_turn = await self._finish(outcome, error, team)
            if next_turn is not None:
                await self.runner.start_promoted(next_turn, lease_held=True)
        except Exception:
            log.exception("turn %s could not be finished", self.turn.id)
        finally:
            self.lease_released = True  # (if not already): no more renewals
            with contextlib.suppress(Exception):
                await self.flush()
            if team is not None and not self.team_kept:
                await close_team(team)
            self.done.set()
            self.runner.local.pop(self.turn.id, None)
            if self.span is not None:
                self.span.end()

    def prepare(self) -> None:
        """Build the team, restore its state and start it, while the turn is admitted and
        TurnStarted logged (what it produces waits for `_drive`)."""
        self.preparing = self._start_task(self._prepare(), f"turn-team:{self.turn.id}")

    def _start_task(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """A task of the turn: in its span's context when it is traced."""
        context = tracing.context_with(self.span) if self.span is not None else None
        return asyncio.get_running_loop().create_task(coro, name=name, context=context)

    def discard(self) -> None:
        """The turn does not start now (refused, queued, a repeated request)."""
        self.token.cancel()  # its team's first model call may be under way
        if self.span is not None:  # its team's first calls may be traced under it
            self.span.set_attribute("convergio.started", False)
            self.span.end()
        if self.preparing is not None:
            self.preparing.cancel()
            self.preparing.add_done_callback(self._drop_team)

    def _drop_team(self, preparing: asyncio.Future[BuiltTeam]) -> None:
        # Whatever it ended with, nobody waits for it; a team that was built is stopped (its
        # first model call may be under way) and closed.
        if preparing.cancelled() or preparing.exception() is not None:
            return
        closing = asyncio.ensure_future(self._abandon(preparing.result()))
        _closing.add(closing)  # a reference, so that the task is not collected midway
        closing.add_done_callback(_closing.discard)

    async def _abandon(self, team: BuiltTeam) -> None:
        if self.pump is not None:
            await cancel_and_wait([self.pump])
        await close_team(team)

    async def _prepare(self) -> BuiltTeam:
        try:
            team = await self._ready_team()
            if team.inject_context is not None:
                await team.inject_context()
        except BaseException:
            # A kept or built team that will not run is closed (its model clients).
            if self._in_hand is not None:
                self.runner.teams.close_later(self._in_hand)
            raise
        self._run_team(team)
        return team

    async def _ready_team(self) -> BuiltTeam:
        """The team kept from the conversation's last turn when it is still current, else
        one built and restored from the saved state."""
        builder, teams = self.runner.builder, self.runner.teams
        request = TeamRequest(
            self.principal,
            self.conversation,
            self.turn,
            self.policy,
            self.features,
            self._alert,
            self,
            self.admittance,
        )
        kept = teams.take(self.conversation.id)
        team: BuiltTeam | None = None
        how = NONE_KEPT
        if kept is not None:
            self._in_hand = kept.team
            team = await builder.reuse(kept.team, request)
            how = REUSED
            if team is None:  # this turn needs a team of another make
                how = ANOTHER_MAKE
                teams.close_later(kept.team)
                self._in_hand = None
        if self.conversation.message_count or self.conversation.turn_count > 1:
            memory = await self.runner.store.load_memory(
                self.tenant_id,
                self.conversation.id,
                self.turn.id,
                MAX_MISSED_MESSAGES,
                held_turn_id=kept.state_turn_id if team is not None and kept else "",
            )
            if team is not None and not memory.held:
                # Another process ran a turn since: the kept team is out of date.
                how = STALE
                teams.close_later(team)
                team = self._in_hand = None
            if team is None:
                team = self._in_hand = await builder.build(request)
                if memory.state:
                    await team.runnable.load_state(state_packing.unpack(memory.state))
            # Turns that ended without saving the team (cancelled, failed, timed out) are
            # still part of the conversation: the team hears them again before this message.
            self.missed = [
                TextMessage(content=m.content, source=m.source) for m in memory.missed if m.content
            ]
        if team is None:  # the conversation's first turn
            team = self._in_hand = await builder.build(request)
        teams.count(how)
        return team

    def _run_team(self, team: BuiltTeam) -> None:
        """Run the team, its events queued for `_drive`."""
        self._plan = team.plan
        if team.plan is not None:
            team.plan.on_select = lambda: self.put(_SELECTED)
        team.meter.on_settled = lambda: self.put(_SETTLED)

        async def pump() -> None:
            try:
                # Closed here, in this task, however the turn ends (a cancel included): left
                # to the garbage collector, AutoGen's telemetry span would be closed in
                # another context, which logs a traceback.
                async with contextlib.aclosing(
                    team.runnable.run_stream(task=self._task(), cancellation_token=self.token)
                ) as stream:
                    async for item in stream:
                        self.put(item)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.put(exc)
                return
            self.put(_END)

        self.pump = asyncio.create_task(pump(), name=f"turn:{self.turn.id}")

    async def _drive(self, team: BuiltTeam) -> tuple[TurnOutcome, ErrorOccurred | None]:
        if team.plan is None and team.participants and not self.speaker_announced:
            self.post(_single_speaker(team.participants[0]))
        if team.context:
            first = team.participants[0] if team.plan is None else (team.plan.speakers or [""])[0]
            context = ContextInjected(
                agent=first, query=self.turn.content[:500], documents=team.context, threshold=0.0
            )
            if team.plan is None:
                self.post(context)  # after the single agent's SpeakerSelected
            else:
                self._context = context  # after the first SpeakerSelected (`_post_selection`)
        # Per agent, the id its streamed text went out under, for the message made of it.
        streamed: dict[str, str] = {}
        pending_usage: dict[str, Usage] = {}
        tools_started = time.monotonic()
        result: TaskResult | None = None
        failure: BaseException | None = None

        replayed = {m.id for m in self.missed}
        pumping = self.pump
        assert pumping is not None  # started by `_prepare`
        try:
            while True:
                self._idle = True
                try:
                    item = await self.queue.get()
                finally:
                    self._idle = False
                if type(item) is _Chunk:
                    self._on_chunk(item)
                    continue
                if item is _FLUSH:
                    self._on_window_closed()
                    continue
                if item is _SELECTED:
                    self._announce_next()
                    continue
                if item is _SETTLED:
                    self._emit_delta()
                    self.post(self._cost_update())
                    continue
                if item is _END or item is _CANCEL:
                    break
                if isinstance(item, BaseException):
                    failure = item
                    break
                if isinstance(item, TaskResult):
                    result = item
                    continue
                if replayed and getattr(item, "id", None) in replayed:
                    continue  # an earlier turn's message, heard again: not news
                if isinstance(item, BudgetAlert):
                    self._emit_delta()
                    self.post(item)
                    continue
                source = getattr(item, "source", "user")
                self._announce(source)
                if type(item) is _Answered:
                    streamed[source] = item.message_id
                    self._stopped_streaming()
                    continue
                self._emit_delta()
                if isinstance(item, ToolCallRequestEvent):
                    self._stopped_streaming()
                    tools_started = time.monotonic()
                    pending_usage[source] = pending_usage.get(source, Usage()) + _usage(
                        item.models_usage
                    )
                    for call in item.content:
                        self.post(
                            ToolCall(
                                call_id=call.id,
                                agent=source,
                                tool=call.name,
                                arguments_json=call.arguments,
                                risk_level=team.risk.get(call.name, "LOW"),
                            )
                        )
                elif isinstance(item, ToolCallExecutionEvent):
                    took = time.monotonic() - tools_started
                    for res in item.content:
                        # A failed call no tool recorded never reached one (an unknown
                        # tool, arguments that are not a JSON object).
                        attempts = team.tool_attempts.get(res.call_id, 0 if res.is_error else 1)
                        screened = team.screened.pop(res.call_id, None)
                        if screened is not None and not screened.blocked:
                            self.post(_result_flagged(res.call_id, screened))
                        answered = _tool_result(source, res, attempts, took)
                        self.runner.stats.tool_result(
                            answered.tool, answered.error_kind if answered.is_error else None
                        )
                        self.post(answered)
                elif isinstance(item, TextMessage | ToolCallSummaryMessage) and source != "user":
                    usage = pending_usage.pop(source, Usage()) + _usage(item.models_usage)
                    role = "TOOL" if isinstance(item, ToolCallSummaryMessage) else "AGENT"
                    # Under the id of its deltas, when it was streamed.
                    message_id = streamed.pop(source, "") if role == "AGENT" else ""
                    # A single agent's message is the last of its turn: part of its end.
                    async with self.runner.endings.slot(urgent=team.plan is not None):
                        await self._complete_message(
                            team, message_id or item.id, source, role, item.content, usage
                        )
                    self._spoken += 1
                    self._announce_next()
        finally:
            if self._context is not None:  # no speaker was announced: said all the same
                context, self._context = self._context, None
                self.post(context, ending=True)
            self._stopped_streaming()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not pumping.done():
                pumping.cancel()
            with contextlib.suppress(BaseException):
                await pumping
        self._emit_delta()
        if self.meter.calls > self._calls_told:
            # Settled after the events stopped being read: a call cut short by a cancel is
            # billed as it stops, and its cost is reported as every call's is.
            self.post(self._cost_update())
        if self.stop is not None:
            outcome = TurnOutcome(stop_reason=self.stop[0], stop_detail=self.stop[1])
            if self.server_stopping:  # said as the reaper of another process says it
                return outcome, ErrorOccurred(
                    code=UNAVAILABLE_CODE,
                    reason="UNAVAILABLE",
                    message=f"{SERVER_STOPPED}; send the message again",
                    retryable=True,
                )
            return outcome, None
        if failure is not None:
            # AutoGen passes an agent's exception on as text: prefer the call's own error.
            cause = team.meter.failure or failure
            log.warning("turn %s: the team failed: %s", self.turn.id, cause)
            self.endpoint_failed = endpoint_failure(cause)
            self.outage = outage_failure(cause)
            error = error_event(cause)
            return TurnOutcome(stop_reason=_stop_reason(error), stop_detail=error.message), error
        stop_reason, detail = COMPLETED, ""
        if (
            result is not None
            and result.stop_reason
            and "Maximum number of turns" in (result.stop_reason)
        ):
            stop_reason, detail = MAX_TURNS, result.stop_reason
        async with self.runner.endings.slot():
            saved, cut = trim_team_state(
                await team.runnable.save_state(), buffer_tokens=team.history_tokens
            )
            state = state_packing.encode(saved)
        # The team in memory can serve the next turn when it holds what is saved.
        self._team_reusable = not cut
        return (
            TurnOutcome(stop_reason=stop_reason, stop_detail=detail, team_state_json=state),
            None,
        )

    def _task(self) -> str | list[BaseChatMessage]:
        if not self.missed:
            return self.turn.content
        return [*self.missed, TextMessage(content=self.turn.content, source="user")]

    def _emit_delta(self) -> None:
        taken = self._deltas.take()
        if taken is not None:
            if self.first_token_seconds is None:
                self.first_token_seconds = time.monotonic() - self.started
                self.runner.stats.first_token(self.first_token_seconds)
            # A delta's time is when the model generated its first token, so that a client
            # can tell how long the text took to reach it.
            self.post(*taken)

    async def _complete_message(
        self, team: BuiltTeam, message_id: str, agent: str, role: str, content: str, usage: Usage
    ) -> None:
        model = team.models.get(agent, "")
        cost = team.pricing.get(agent, _free)(usage.prompt_tokens, usage.completion_tokens)
        message = Message(
            tenant_id=self.tenant_id,
            conversation_id=self.conversation.id,
            id=message_id,
            turn_id=self.turn.id,
            role=role,
            source=agent,
            content=content,
            model=model,
            usage=usage,
            cost_usd=cost,
        )
        await self._store("its message", lambda: self.runner.store.add_message(message))
        self.message_count += 1
        self.last_message_id = message_id
        self.runner.stats.message(agent)
        self.post(
            MessageCompleted(
                message_id=message_id,
                agent=agent,
                role=role,
                content=content,
                model=model,
                usage=usage,
                cost_usd=money(cost),
            )
        )

    async def _store(self, what: str, write: Callable[[], Awaitable[_T]]) -> _T:
        """`write`, retried while PostgreSQL is unreachable (up to STORE_RETRY_SECONDS): a
        short outage must not cost the turn its answer. The writes are idempotent."""
        backoff = Backoff(STORE_RETRY_SECONDS)
        while True:
            try:
                return await write()
            except Unavailable as exc:
                if backoff.exhausted():
                    raise
                if backoff.worth_logging:
                    log.warning(
                        "turn %s: %s could not be stored yet, retrying: %s", self.turn.id, what, exc
                    )
                await backoff.wait()

    def _cost_update(self) -> CostUpdate:
        self._calls_told = self.meter.calls
        return CostUpdate(
            turn_usage=self.meter.usage,
            turn_cost_usd=money(self.meter.cost),
            conversation_cost_usd=money(self.conversation.cost_usd + self.meter.cost),
        )

    async def _finish(
        self, outcome: TurnOutcome, error: ErrorOccurred | None, team: BuiltTeam | None
    ) -> Turn | None:
        """Close the turn; returns the queued turn it promoted, to be started here."""
        outcome.usage = self.meter.usage
        outcome.cost_usd = self.meter.cost
        if self.server_stopping and not await self._log_reachable():
            # Its end could not reach the log before this process exits: ended here, the
            # turn would have no end its followers could hear. Left running, it is ended
            # by another process's sweep once Redis is back and its lease has expired.
            log.warning(
                "turn %s: the event log is unreachable; its end is left to another process",
                self.turn.id,
            )
            return None
        if error is not None:
            outcome.error = {
                "code": error.code,
                "reason": error.reason,
                "message": error.message,
                "retryable": error.retryable,
            }
            self.post(error, ending=True)
        runner = self.runner
        ended, next_turn = await self._store(
            "its end",
            lambda: runner.store.finish_turn(
                self.tenant_id, self.conversation.id, self.turn.id, outcome
            ),
        )
        if ended and team is not None and self._team_reusable and outcome.team_state_json:
            # Its state is what was just saved: kept for the next turn, before the client
            # hears that this one ended.
            runner.teams.keep(
                self.conversation.id, team, self.turn.id, len(outcome.team_state_json)
            )
            self.team_kept = True
        if ended:
            duration = time.monotonic() - self.started
            runner.stats.turn_ended(outcome.stop_reason, duration, outcome.usage, outcome.cost_usd)
            self._log_end(outcome, duration)
            if self.span is not None:
                self._describe_span(self.span, outcome)
            self.post(
                TurnCompleted(
                    stop_reason=outcome.stop_reason,
                    stop_detail=outcome.stop_detail,
                    usage=outcome.usage,
                    cost_usd=money(outcome.cost_usd),
                    message_count=self.message_count,
                    last_message_id=self.last_message_id,
                    duration=duration,
                ),
                ending=True,
            )
        await self._flush_until_logged()
        if next_turn is not None and runner.stopping:
            # Not started here: another server starts it (`TurnRunner.sweep`).
            next_turn = None
        if next_turn is not None:
            # Hand the lease straight to the promoted turn: no moment without an owner.
            await runner.leases.acquire(
                self.tenant_id, self.conversation.id, runner.holder(next_turn.id)
            )
        self.lease_released = True
        await runner.leases.release(self.tenant_id, self.conversation.id, self.holder)
        with contextlib.suppress(Exception):
            await runner.guards_for().turn_finished(
                TurnScope(self.principal, self.conversation.id, self.turn.id),
                outcome.cost_usd,
                # An operator stopping the server is no failure of the tenant's turns: the
                # breaker must not open for it.
                outcome.stop_reason == ERROR and not self.server_stopping,
                ordinary=outcome.stop_reason in (COMPLETED, MAX_TURNS),
                # A failing model endpoint counts on its own breaker: one caller's broken
                # endpoint must not shut the whole tenant out; nor must a store's outage.
                neutral=self.endpoint_failed or self.outage,
            )
        return next_turn

    def _describe_span(self, span: trace.Span, outcome: TurnOutcome) -> None:
        usage = outcome.usage
        span.set_attributes(
            {
                "convergio.stop_reason": outcome.stop_reason,
                "convergio.messages": self.message_count,
                "convergio.model_calls": usage.model_calls,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "convergio.cost_usd": float(outcome.cost_usd),
            }
        )
        if self.first_token_seconds is not None:
            span.set_attribute("convergio.first_token_ms", self.first_token_seconds * 1000)
        if outcome.stop_reason in (ERROR, TIMEOUT):
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.stop_detail[:500]))

    def _log_end(self, outcome: TurnOutcome, duration: float) -> None:
        log_turn_end(
            self.tenant_id,
            self.conversation.id,
            self.turn.id,
            outcome.stop_reason,
            outcome.stop_detail,
            duration=duration,
            first_token=self.first_token_seconds,
            messages=self.message_count,
            usage=outcome.usage,
            cost_usd=outcome.cost_usd,
        )

    async def _log_reachable(self) -> bool:
        """Whether what was posted is logged and the log answers, within a moment."""
        try:
            async with asyncio.timeout(2.0):
                self._resume_writing()
                await self.flush()
                await self.runner.events.live.last_sequence(self.tenant_id, self.conversation.id)
        except Exception:  # unreachable, or too slow to count on
            return False
        return True

    def _resume_writing(self) -> None:
        """Start the writer again for what an append that failed left in the outbox."""
        if self._outbox and (self._outbox_writer is None or self._outbox_writer.done()):
            self._outbox_empty.clear()
            self._outbox_writer = asyncio.create_task(
                self._write_outbox(), name=f"turn-events:{self.turn.id}"
            )

    async def _flush_until_logged(self) -> None:
        """Flush, retrying while the log is unreachable: a client follows the turn until
        its TurnCompleted, so the end must reach the log once Redis is back."""
        backoff = Backoff(self.runner.config.end_retry_seconds)
        while True:
            try:
                await self.flush()
                return
            except Exception as exc:
                if backoff.exhausted():
                    raise
                if backoff.worth_logging:
                    log.warning("turn %s: retrying its end: %s", self.turn.id, exc)
                await backoff.wait()
                self._resume_writing()


def log_turn_end(
    tenant_id: str,
    conversation_id: str,
    turn_id: str,
    stop_reason: str,
    stop_detail: str,
    *,
    duration: float | None,
    first_token: float | None,
    messages: int,
    usage: Usage,
    cost_usd: Decimal,
) -> None:
    """The one log line of a turn that ended (here, or ended here for a process that died,
    or dropped from the queue)."""
    failed = stop_reason in (ERROR, TIMEOUT)
    level = logging.WARNING if failed else logging.INFO
    if not turn_log.isEnabledFor(level):
        return
    extra: dict[str, Any] = {
        "tenant": tenant_id,
        "conversation": conversation_id,
        "turn": turn_id,
        "stop_reason": stop_reason,
        "duration_ms": None if duration is None else round(duration * 1000, 1),
        "first_token_ms": None if first_token is None else round(first_token * 1000, 1),
        "messages": messages,
        "model_calls": usage.model_calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": str(cost_usd),
    }
    if stop_detail:
        extra["detail"] = stop_detail[:500]
    turn_log.log(level, "turn", extra=extra)


_TOOL_ERROR = re.compile(r"error \((?P<kind>[A-Z_]+)\)")
_TOOL_ERROR_KINDS = frozenset(
    {"INVALID_ARGUMENTS", "TIMEOUT", "TRANSIENT", "PERMANENT", "DENIED", "UNKNOWN_TOOL", "BLOCKED"}
)


def _tool_result(agent: str, res: Any, attempts: int, seconds: float) -> ToolResult:
    """A ToolResult event from AutoGen's FunctionExecutionResult. The tool adapter and the
    participant agent word failures as "error (KIND): ..."; any other failing text (AutoGen's
    own, should it answer a call itself) is classified by what it says."""
    content = str(res.content)
    kind = "UNSPECIFIED"
    if res.is_error:
        match = _TOOL_ERROR.search(content)
        if match and match["kind"] in _TOOL_ERROR_KINDS:
            kind = match["kind"]
        elif "not found" in content.lower() or "unknown tool" in content.lower():
            kind = "UNKNOWN_TOOL"
        else:
            kind = "PERMANENT"
    return ToolResult(
        call_id=res.call_id,
        agent=agent,
        tool=res.name,
        content=content,
        is_error=bool(res.is_error),
        error_kind=kind,
        attempts=attempts,
        duration=seconds,
    )


def _stop_reason(error: ErrorOccurred) -> str:
    return BUDGET_EXHAUSTED if error.reason == "BUDGET_EXHAUSTED" else ERROR


_closing: set[asyncio.Future[None]] = set()  # teams of discarded turns being closed


def _single_speaker(agent: str) -> SpeakerSelected:
    return SpeakerSelected(
        agent=agent, round=1, policy="single", reason="single-agent conversation"
    )


def _budget_alert(alert: BudgetAlertInfo) -> BudgetAlert:
    return BudgetAlert(
        scope=alert.scope,
        subject=alert.subject,
        period=alert.period,
        threshold_percent=alert.threshold_percent,
        spent_usd=money(alert.spent_usd),
        limit_usd=money(alert.limit_usd),
    )


def _admission_events(admission: Admission | None, turn: Turn) -> list[EventBody]:
    if admission is None:
        return []
    out: list[EventBody] = [_budget_alert(a) for a in admission.alerts]
    if admission.flagged_input:
        findings = [
            ScreeningFinding(category=category_of(rule), rule=rule, detail="flagged, let through")
            for rule in admission.flagged_input
        ]
        out.append(InputFlagged(message_id=turn.user_message_id, call_id="", findings=findings))
    return out


def _result_flagged(call_id: str, screened: ScreenedResult) -> InputFlagged:
    """What screening found in a tool result it let through (redacted or marked)."""
    return InputFlagged(message_id="", call_id=call_id, findings=findings_of(screened))


class TurnRunner:
    """The turns this process runs."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        events: EventLog,
        leases: Leases,
        builder: TeamBuilder,
        guards: Callable[[], Guards],
        config: RunnerConfig,
        principal_of: Callable[[str, str], Principal],
    ) -> None:
        self.store = store
        self.events = events
        self.leases = leases
        self.builder = builder
        self.guards_for = guards
        self.config = config
        self.principal_of = principal_of
        self.owner = uuid.uuid4().hex[:12]
        self.endings = EndingGate(config.endings_at_once)
        self.teams = KeptTeams(config.teams_kept, config.team_idle_seconds, config.teams_kept_bytes)
        self.local: dict[str, TurnExecution] = {}
        self._starting = 0  # new turns between `reserve_start` and `end_start`
        self.refused_busy = 0  # new turns refused at `max_running_turns`
        self.stats = TurnStats()  # for the metrics
        self._renewer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Ends the turns of processes that died (set by the service, which owns the reaper).
        self.reap_dead: Callable[[], Awaitable[int]] | None = None
        # Cancels of turns that were not running here when asked: (reason, detail, until).
        self._early_cancels: dict[str, tuple[str, str, float]] = {}
        self.stopping = False  # shutting down: promoted turns are left to other servers

    def _watch_leases(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_leases(), name="turn-leases")

    async def _renew_leases(self) -> None:
        """Renew the leases of every local turn, all in one round trip, three times per
        lease period; a turn whose lease another process took is cancelled."""
        interval = self.config.lease_seconds / 3
        while self.local:
            await asyncio.sleep(interval)
            held = [e for e in self.local.values() if not e.lease_released]
            if not held:
                continue
            try:
                kept = await self.leases.renew_many(
                    [(e.tenant_id, e.conversation.id, e.holder) for e in held]
                )
            except Exception as exc:
                log.warning("lease renewal of %d turns failed: %s", len(held), exc)
                continue
            for execution, ok in zip(held, kept, strict=True):
                if not ok and not execution.lease_released:
                    # Redis lost or expired it (an outage), or another process took it:
                    # nothing the tenant's turns did, so neutral for its breaker.
                    execution.outage = True
                    execution.cancel(ERROR, "this server lost the turn's lease")

    def reserve_start(self) -> bool:
        """Count a new turn about to start here against `max_running_turns`: False when
        the process runs (or is starting) that many. Else call `end_start` once the turn
        runs, or did not start."""
        limit = self.config.max_running_turns
        if limit and len(self.local) + self._starting >= limit:
            self.refused_busy += 1
            return False
        self._starting += 1
        return True

    def end_start(self) -> None:
        self._starting -= 1

    def at_capacity(self) -> Unavailable:
        """What a turn refused by `reserve_start` is told: its client retries, here later or
        on another server."""
        return Unavailable(
            "this server runs as many turns at once as it may (CONVERGIO_MAX_RUNNING_TURNS="
            f"{self.config.max_running_turns}); retry in a moment, here or on another server "
            "(the SDK retries by itself)",
            reason="SERVER_BUSY",
            retry_after_seconds=1.0,
        )

    def holder(self, turn_id: str) -> str:
        """The holder of a conversation's run lease while this process runs turn `turn_id`."""
        return f"{self.owner}|{turn_id}"

    def prepare(
        self, principal: Principal, conversation: Conversation, turn: Turn
    ) -> TurnExecution:
        """Build the team of a turn that is being admitted, restore its state and start it,
        while the admission runs (see `admittance.py`). Pass the result to `start`, or
        `discard` it if the turn does not start now."""
        policy, features = self.builder.resolve(principal, conversation)
        if len(conversation.participants) == 1 and conversation.team.single_agent:
            policy = "single"
        execution = TurnExecution(self, principal, conversation, turn, policy, features)
        execution.prepare()
        return execution

    async def start(
        self,
        principal: Principal,
        conversation: Conversation,
        turn: Turn,
        admission: Admission | None = None,
        *,
        lease_held: bool = False,
        prepared: TurnExecution | None = None,
    ) -> int:
        """Start a turn that the store has just made RUNNING; returns its first sequence.
        The guards' warnings about it (`admission`) follow TurnStarted."""
        if not lease_held:
            holder = self.holder(turn.id)
            await self.leases.acquire(conversation.tenant_id, conversation.id, holder)
        execution = prepared or self.prepare(principal, conversation, turn)
        execution.turn = turn  # as admitted
        policy, features = execution.policy, execution.features
        started = TurnStarted(
            request_id=turn.request_id,
            user_message_id=turn.user_message_id,
            content=turn.content,
            participants=conversation.participants,
            speaker_policy=policy,
            max_turns=turn.options.max_turns,
            enabled_features=features,
            created_by=turn.created_by,
        )
        first: list[EventBody] = [started, *_admission_events(admission, turn)]
        if policy == "single":
            # Known now: logged with TurnStarted, so that the first token waits for one
            # append less.
            first.append(_single_speaker(conversation.participants[0]))
            execution.speaker_announced = True
        self.local[turn.id] = execution
        try:
            execution.begin(first)
        except BaseException:
            self.local.pop(turn.id, None)
            execution.discard()
            raise
        early = self._early_cancels.pop(turn.id, None)
        if early is not None and early[2] >= time.monotonic():
            execution.cancel(early[0], early[1])
        self._watch_leases()
        try:
            return await asyncio.shield(execution.first_logged)
        except Exception as exc:
            # Not logged: the turn ends at once (its end is logged once Redis is back).
            execution.cancel(ERROR, f"the turn's events could not be logged: {exc}")
            raise

    async def start_promoted(self, turn: Turn, *, lease_held: bool = False) -> bool:
        """Start a turn that the end of the previous one promoted to RUNNING, unless another
        process holds its conversation's lease or started it already (`Turn.started`):
        whether it started here."""
        holder = self.holder(turn.id)
        tenant, conversation_id = turn.tenant_id, turn.conversation_id
        if self.stopping:
            if lease_held:
                await self.leases.release(tenant, conversation_id, holder)
            return False
        if not lease_held and not await self.leases.acquire_if_free(
            tenant, conversation_id, holder
        ):
            return False
        try:
            conversation = await self.store.get(tenant, conversation_id)
            claimed = conversation is not None and await self.store.mark_started(
                tenant, conversation_id, turn.id
            )
        except BaseException:
            await self.leases.release(tenant, conversation_id, holder)
            raise
        if not claimed:
            await self.leases.release(tenant, conversation_id, holder)
            return False
        assert conversation is not None
        principal = self.principal_of(tenant, turn.created_by)
        await self.start(principal, conversation, turn, lease_held=True)
        return True

    async def sweep(self) -> int:
        """Start promoted turns that no server started (theirs stopped or died before it
        could); returns how many started here."""
        started = 0
        # The server that promoted a turn holds its conversation's lease until it has started
        # it: `start_promoted` leaves such turns alone.
        for turn in await self.store.unstarted_turns(SWEEP_BATCH):
            try:
                started += await self.start_promoted(turn)
            except Exception as exc:
                log.warning("promoted turn %s could not be started: %s", turn.id, exc)
        return started

    async def _sweep_now_and_then(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("looking for promoted turns nobody started failed: %s", exc)
            if self.reap_dead is not None:
                try:
                    await self.reap_dead()
                except Exception as exc:
                    log.warning("looking for turns of dead processes failed: %s", exc)
            await asyncio.sleep(self.config.lease_seconds)

    async def start_sweeping(self) -> None:
        """Look for promoted turns that nobody started, and for running turns whose process
        died, at once and then every lease period."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_now_and_then(), name="turn-sweeper")

    def cancel_local(self, turn_id: str, reason: str, detail: str) -> bool:
        """Cancel a turn of this process; whether it runs here. A turn that is not running
        here yet may be about to (promoted from the queue, between its claim and its start):
        the request is kept a few seconds and applied if it starts."""
        execution = self.local.get(turn_id)
        if execution is None:
            now = time.monotonic()
            for stale in [t for t, (_, _, until) in self._early_cancels.items() if until < now]:
                del self._early_cancels[stale]
            if len(self._early_cancels) < MAX_EARLY_CANCELS:
                self._early_cancels[turn_id] = (reason, detail, now + EARLY_CANCEL_SECONDS)
            return False
        execution.cancel(reason, detail)
        return True

    def drain(self) -> None:
        """The server begins to stop: its turns run on through the grace period, but the
        turns queued behind them are left to other processes (or the next start)."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def close(self) -> None:
        """Stop every local turn (the server is shutting down): they end with ERROR."""
        self.reap_dead = None  # (it refers back to the service: no cycle left behind)
        self.drain()
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
        executions = list(self.local.values())
        for execution in executions:
            execution.server_stopping = True
            execution.cancel(ERROR, SERVER_STOPPED)
        for execution in executions:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await execution.done.wait()
        if self._renewer is not None:
            await cancel_and_wait([self._renewer])
        await self.teams.close()
