"""Conversations: create, read, list, delete; send a message (start or queue a turn);
follow a turn's or a conversation's events; cancel; turns and transcript."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convergio_server.domain.agents.roster import Roster
from convergio_server.domain.auth import Principal
from convergio_server.domain.conversations.model import (
    CANCELLED,
    CONTINUE,
    DEFAULT_MAX_TURNS,
    DEFAULT_TURN_TIMEOUT_SECONDS,
    DISCONNECTED,
    ENDED,
    ERROR,
    MAX_QUEUED_TURNS,
    QUEUED,
    Conversation,
    Message,
    TeamSpec,
    Turn,
    TurnOptions,
    TurnOutcome,
    money,
)
from convergio_server.domain.conversations.runner import (
    SERVER_STOPPED,
    Leases,
    TurnRunner,
    log_turn_end,
)
from convergio_server.domain.conversations.selection import policy_names
from convergio_server.domain.conversations.store import Admitted, ConversationStore
from convergio_server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    server_stopping,
)
from convergio_server.domain.events.log import EventLog, Subscription
from convergio_server.domain.events.model import (
    ErrorOccurred,
    Event,
    EventBody,
    TurnCompleted,
    TurnQueued,
    Usage,
)
from convergio_server.domain.guards import Admission, Guards, TurnScope
from convergio_server.domain.pagination import (
    Fits,
    decode_token,
    encode_token,
    keep_fitting,
    page_size,
)

log = logging.getLogger(__name__)

# How far past the durable log the numbering resumes for the end of a dead process's turn
# when Redis lost the counter: more token deltas than a turn streams between two durable
# events (the messages it completes), so that no number a client saw is handed out again.
LOST_NUMBERS_GAP = 1_000_000

MAX_CONTENT_BYTES = 32_768
MAX_DOCUMENTS = 16
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DOCUMENTS_TOTAL = 1024 * 1024
MAX_TITLE = 500
MAX_LABELS = 64
MAX_TEAM = 20
MAX_TURNS_LIMIT = 50
MAX_TURN_TIMEOUT_SECONDS = 3600.0
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}\Z")


def _too_large(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}",
        reason="PAYLOAD_TOO_LARGE",
        violations=[FieldViolation(field, description)],
    )


def check_title(title: str) -> None:
    if len(title) > MAX_TITLE:
        raise InvalidArgument.for_field("title", f"at most {MAX_TITLE} characters")


def check_labels(labels: dict[str, str], field: str = "labels") -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument.for_field(field, f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise InvalidArgument.for_field(
                f"{field}[{key[:64]}]",
                "keys are 1-63 characters of a-z, 0-9, '_', '.', '-' starting with a letter",
            )
        if len(value) > 256:
            raise InvalidArgument.for_field(f"{field}[{key}]", "values are at most 256 characters")


@dataclass
class ServiceConfig:
    heartbeat_seconds: float
    lease_seconds: float


@dataclass
class SendResult:
    """Where the caller's stream of a SendMessage starts: `subscription`, when set, has
    received the conversation's live events since before the turn's first one (pass it to
    `follow`, which closes it)."""

    conversation_id: str
    turn_id: str
    after_sequence: int
    attached: bool = False  # to a turn that an earlier call with this request_id started
    subscription: Subscription | None = None
    queued: bool = False  # the turn waits for the running one; it may start elsewhere
    # The turn's own policy (a repeated request keeps the first call's, whatever it asks).
    on_disconnect: str = CONTINUE


class ConversationService:
    def __init__(
        self,
        *,
        store: ConversationStore,
        events: EventLog,
        runner: TurnRunner,
        leases: Leases,
        roster: Roster,
        guards: Callable[[], Guards],
        publish_cancel: Callable[[str, str, str, str, str], Any],
        config: ServiceConfig,
        check_model: Callable[[dict[str, Any], str], None] = lambda selection, field: None,
    ) -> None:
        self.check_model = check_model
        self.draining = False  # the server is stopping
        self.store = store
        self.events = events
        self.runner = runner
        self.leases = leases
        self.roster = roster
        self.guards = guards
        self.publish_cancel = publish_cancel
        self.config = config
        runner.reap_dead = self.reap_dead_turns

    def drain(self) -> None:
        """The server begins to stop: streams that follow nothing running here end now
        (at their next look up, made at once) with UNAVAILABLE."""
        self.draining = True
        self.events.wake_readers()

    # ---------------------------------------------------------------- conversations

    def resolve_team(self, team: TeamSpec) -> tuple[TeamSpec, list[str]]:
        if team.single_agent:
            return team, [self.roster.get(team.single_agent).name]
        if team.agents:
            names = list(team.agents)
            if len(names) > MAX_TEAM:
                raise InvalidArgument.for_field(
                    "team.agents.names", f"at most {MAX_TEAM} agents, got {len(names)}"
                )
            if len(set(names)) != len(names):
                raise InvalidArgument.for_field("team.agents.names", "names must be distinct")
            return team, [a.name for a in self.roster.ordered(names)]
        preset_name = team.preset or "core"
        try:
            preset = self.roster.preset(preset_name)
        except NotFound as exc:
            raise InvalidArgument.for_field("team.preset", exc.message) from None
        return TeamSpec(preset=preset_name), [a.name for a in self.roster.ordered(preset.agents)]

    async def create(
        self,
        principal: Principal,
        *,
        title: str = "",
        labels: dict[str, str] | None = None,
        team: TeamSpec | None = None,
        model: dict[str, Any] | None = None,
        agent_models: dict[str, dict[str, Any]] | None = None,
        max_turns_per_message: int = 0,
        speaker_policy: str = "",
        turn_timeout_seconds: float | None = None,
    ) -> Conversation:
        labels = labels or {}
        agent_models = agent_models or {}
        check_title(title)
        check_labels(labels)
        if not 0 <= max_turns_per_message <= MAX_TURNS_LIMIT:
            raise InvalidArgument.for_field(
                "max_turns_per_message", f"must be 1 to {MAX_TURNS_LIMIT} (0 = default 6)"
            )
        if speaker_policy and speaker_policy not in policy_names():
            raise InvalidArgument.for_field(
                "speaker_policy", f"unknown policy; valid: {', '.join(policy_names())}"
            )
        timeout = DEFAULT_TURN_TIMEOUT_SECONDS if not turn_timeout_seconds else turn_timeout_seconds
        if not 0 < timeout <= MAX_TURN_TIMEOUT_SECONDS:
            raise InvalidArgument.for_field("turn_timeout", "must be positive and at most 1 hour")
        self.check_model(model or {}, "model")
        for name, selection in agent_models.items():
            self.check_model(selection, f"agent_models[{name}]")
        spec, participants = self.resolve_team(team or TeamSpec(preset="core"))
        for name in agent_models:
            if name not in participants:
                raise InvalidArgument.for_field(
                    f"agent_models[{name}]", "is not a participant of the team"
                )
        await self.guards().conversation_created(principal)
        conversation = Conversation(
            tenant_id=principal.tenant_id,
            id=str(uuid.uuid4()),
            title=title,
            team=spec,
            participants=participants,
            model=model or {},
            agent_models=agent_models,
            max_turns_per_message=max_turns_per_message or DEFAULT_MAX_TURNS,
            speaker_policy=speaker_policy,
            labels=labels,
            turn_timeout_seconds=timeout,
            created_by=principal.name,
        )
        created = await self.store.create(conversation)
        # Both in one Redis round trip; both only spare the first turn a lookup.
        await asyncio.gather(
            self._start_log(created), self.guards().conversation_stored(principal, created.id)
        )
        return created

    async def _start_log(self, conversation: Conversation) -> None:
        try:
            await self.events.start(conversation.tenant_id, conversation.id)
        except Exception as exc:  # an optimisation only: the first append seeds the counter
            log.warning("conversation %s: event counter not set: %s", conversation.id, exc)

    async def _find(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self.store.get(principal.tenant_id, conversation_id)
        if conversation is None:
            raise _no_conversation(conversation_id)
        return conversation

    async def exists(self, principal: Principal, conversation_id: str) -> bool:
        return await self.store.get(principal.tenant_id, conversation_id) is not None

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self._find(principal, conversation_id)
        conversation.last_sequence = await self.events.last_sequence(
            principal.tenant_id, conversation_id
        )
        return conversation

    async def list_conversations(
        self,
        principal: Principal,
        *,
        status: str,
        labels: dict[str, str],
        size: int,
        token: str,
        fits: Fits | None = None,
    ) -> tuple[list[Conversation], str]:
        """A page of conversations and the token of the next. `fits`, given the page,
        says how many of its first conversations fit in one answer (at least one is
        kept); the page ends there (the same for turns and messages)."""
        check_labels(labels)
        filters = {"status": status, "labels": labels}
        cursor = decode_token(token, filters)
        limit = page_size(size)
        after = None
        if cursor is not None:
            after = (datetime.fromisoformat(cursor.after[0]), cursor.after[1])
        rows = await self.store.list_conversations(
            principal.tenant_id, status=status, labels=labels, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            row.last_sequence = await self.events.last_sequence(principal.tenant_id, row.id)
        rows, cut = keep_fitting(rows, fits)
        more = more or cut
        next_token = ""
        if more:
            last = rows[-1]
            assert last.update_time is not None
            next_token = encode_token([last.update_time.isoformat(), last.id], filters)
        return rows, next_token

    async def update(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        fields: list[str],
        title: str = "",
        labels: dict[str, str] | None = None,
    ) -> Conversation:
        """Change the conversation's `fields` ("title", "labels") to the values given."""
        if not fields:
            raise InvalidArgument.for_field(
                "update_mask", "is required: name the fields to change (title, labels)"
            )
        unknown = sorted(set(fields) - {"title", "labels"})
        if unknown:
            raise InvalidArgument.for_field(
                "update_mask", f"{unknown[0]!r} cannot be changed; only title and labels can"
            )
        if "title" in fields:
            check_title(title)
        labels = labels or {}
        if "labels" in fields:
            check_labels(labels)
        updated = await self.store.update(
            principal.tenant_id,
            conversation_id,
            title=title if "title" in fields else None,
            labels=labels if "labels" in fields else None,
        )
        if updated is None:
            raise _no_conversation(conversation_id)
        updated.last_sequence = await self.events.last_sequence(
            principal.tenant_id, conversation_id
        )
        return updated

    async def delete(self, principal: Principal, conversation_id: str, force: bool) -> None:
        await self._find(principal, conversation_id)
        # A turn whose process died stops only once its lease expires (then it is reaped).
        deadline = time.monotonic() + 2 * self.runner.config.lease_seconds + 5.0
        marked = False
        while True:
            # Only while no turn runs or waits: the end of a turn may have promoted a queued
            # one since (it is then stopped on the next round).
            if await self.store.delete(principal.tenant_id, conversation_id, idle_only=True):
                self.runner.teams.forget(conversation_id)  # its kept team, if here
                await self.events.live.delete(principal.tenant_id, conversation_id)
                return
            if not force:
                raise FailedPrecondition(
                    "a turn is running or queued; cancel it first or delete with force",
                    metadata={"conversation_id": conversation_id},
                )
            if not marked:  # no new turn from now on: senders cannot keep it alive
                await self.store.mark_deleting(principal.tenant_id, conversation_id)
                marked = True
            elif time.monotonic() > deadline:
                # Usable again, as it was: the caller may retry the delete.
                await self.store.mark_deleting(principal.tenant_id, conversation_id, False)
                raise FailedPrecondition(
                    "its running turn did not stop in time; retry the delete",
                    metadata={"conversation_id": conversation_id},
                )
            # (what PostgreSQL holds is all it needs: not the log's latest sequence)
            await self._stop_turns(principal, await self._find(principal, conversation_id))
            await self._reap_orphans(await self._find(principal, conversation_id))
            await asyncio.sleep(0.1)

    async def _stop_turns(self, principal: Principal, conversation: Conversation) -> None:
        for turn in await self.store.list_turns(
            principal.tenant_id, conversation.id, status=QUEUED, after=None, limit=100
        ):
            if not await self._end_queued(principal, turn, CANCELLED, "conversation deleted"):
                await self.cancel(principal, conversation.id, turn.id, "conversation deleted")
        if conversation.active_turn_id:
            await self.cancel(
                principal, conversation.id, conversation.active_turn_id, "conversation deleted"
            )

    # ------------------------------------------------------------------------ turns

    async def send(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        content: str,
        request_id: str = "",
        documents: list[dict[str, str]] | None = None,
        on_disconnect: str = CONTINUE,
        enqueue: bool = False,
        max_turns: int = 0,
    ) -> SendResult:
        content = content.strip()
        if not content:
            raise InvalidArgument.for_field("content", "is required (1 to 32,768 bytes)")
        if len(content.encode()) > MAX_CONTENT_BYTES:
            raise _too_large("content", f"at most {MAX_CONTENT_BYTES} bytes of UTF-8")
        documents = documents or []
        if len(documents) > MAX_DOCUMENTS:
            raise _too_large("documents", f"at most {MAX_DOCUMENTS} documents")
        total = 0
        for index, doc in enumerate(documents):
            size = len(doc.get("content", "").encode())
            total += size
            if size > MAX_DOCUMENT_BYTES:
                raise _too_large(f"documents[{index}].content", "at most 256 KiB")
            if not doc.get("content", "").strip():
                raise InvalidArgument.for_field(
                    f"documents[{index}].content", "is required (a document with text)"
                )
            if len(doc.get("title", "")) > 500:
                raise InvalidArgument.for_field(f"documents[{index}].title", "at most 500 chars")
            for name in ("document_id", "source"):
                if len(doc.get(name, "")) > 500:
                    raise InvalidArgument.for_field(
                        f"documents[{index}].{name}", "at most 500 chars"
                    )
        if total > MAX_DOCUMENTS_TOTAL:
            raise _too_large("documents", "at most 1 MiB in total")
        if not 0 <= max_turns <= MAX_TURNS_LIMIT:
            raise InvalidArgument.for_field("max_turns", f"must be 1 to {MAX_TURNS_LIMIT}")
        if len(request_id) > 128:
            raise InvalidArgument.for_field("request_id", "at most 128 characters")
        request_id = request_id or uuid.uuid4().hex
        # Listening before the turn's first event is appended: the caller's stream then
        # starts from the live events, without reading them back from Redis.
        subscription = self.events.subscribe(principal.tenant_id, conversation_id, local_turn=True)
        try:
            result = await self._send(
                principal,
                conversation_id,
                content=content,
                request_id=request_id,
                documents=documents,
                on_disconnect=on_disconnect,
                enqueue=enqueue,
                max_turns=max_turns,
            )
        except BaseException:
            subscription.close()
            raise
        if result.attached:  # an earlier turn of the same request: replayed from its start
            subscription.close()
        else:
            if result.queued:
                subscription.elsewhere()
            result.subscription = subscription
        return result

    async def _send(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        content: str,
        request_id: str,
        documents: list[dict[str, str]],
        on_disconnect: str,
        enqueue: bool,
        max_turns: int,
    ) -> SendResult:
        turn_id = str(uuid.uuid4())
        scope = TurnScope(principal, conversation_id, turn_id)
        holder = self.runner.holder(turn_id)
        # The conversation (with a turn of the same request_id), the guards and the run lease
        # at once: one round trip's time before the turn is admitted, not two. What a turn
        # that does not start took of them is given back (`_not_started`).
        gathered = asyncio.gather(
            self.store.get_for_request(principal.tenant_id, conversation_id, request_id),
            self.guards().admit_turn(scope, content, [d.get("content", "") for d in documents]),
            self.leases.acquire_if_free(principal.tenant_id, conversation_id, holder),
            return_exceptions=True,
        )
        try:
            read, guarded, leased = await asyncio.shield(gathered)
        except asyncio.CancelledError:  # the caller went away: give back once they answer
            self._in_background(self._not_started_later(scope, gathered, holder))
            raise
        try:
            if isinstance(read, BaseException):
                raise read
            conversation, earlier_id = read
            if conversation is None:
                raise _no_conversation(conversation_id)
            turn = Turn(
                tenant_id=principal.tenant_id,
                conversation_id=conversation_id,
                id=turn_id,
                request_id=request_id,
                status=QUEUED,
                content=content,
                options=TurnOptions(
                    max_turns=max_turns or conversation.max_turns_per_message,
                    on_disconnect=on_disconnect,
                    documents=documents,
                ),
                user_message_id=str(uuid.uuid4()),
                created_by=principal.name,
            )
            earlier = None
            if earlier_id is not None:
                earlier = await self.store.get_turn(
                    principal.tenant_id, conversation_id, earlier_id
                )
                if earlier is not None:
                    _check_same_message(earlier, turn)
            if earlier is None:
                if isinstance(guarded, BaseException):
                    raise guarded
                if isinstance(leased, BaseException):
                    raise leased
        except BaseException:
            await self._not_started(scope, guarded, leased, holder)
            raise
        if earlier is not None:  # a repeated request: its turn, not a second one
            await self._not_started(scope, guarded, leased, holder)
            return await self._attach(principal, earlier)
        assert not isinstance(guarded, BaseException) and not isinstance(leased, BaseException)
        if not self.runner.reserve_start():
            await self._not_started(scope, guarded, leased, holder)
            raise self.runner.at_capacity()
        try:
            return await self._start_new(scope, conversation, turn, guarded, leased, enqueue)
        finally:
            self.runner.end_start()

    async def _start_new(
        self,
        scope: TurnScope,
        conversation: Conversation,
        turn: Turn,
        admission: Admission,
        leased: bool,
        enqueue: bool,
    ) -> SendResult:
        """Admit a new turn: start it here, queue it, or refuse it (the conversation is
        busy)."""
        principal = scope.principal
        conversation_id, request_id = conversation.id, turn.request_id
        # The team is built and starts running while the turn is admitted (`admittance.py`);
        # stopped and dropped if the turn does not start now.
        prepared = self.runner.prepare(principal, conversation, turn) if leased is True else None
        try:
            admitted = await self._admit(turn, enqueue, held=leased)
            if admitted.busy and not admitted.queue_full and await self._reap_orphans(conversation):
                if prepared is not None:  # built before the reaper changed the conversation
                    prepared.discard()
                    prepared = None
                admitted = await self._admit(turn, enqueue)
        except BaseException as exc:
            if prepared is not None:
                prepared.discard()
            if isinstance(exc, NotFound):  # (deleted, or being deleted): no turn was added
                await self.guards().turn_not_started(scope, admission)
            raise
        if prepared is not None and (admitted.existing or admitted.busy or admitted.position):
            prepared.discard()
            prepared = None
        if admitted.existing or admitted.busy:
            # No turn of this call: its rate-limit slot and breaker probe are given back.
            await self.guards().turn_not_started(scope, admission)
        if admitted.existing:
            _check_same_message(admitted.turn, turn)
            return await self._attach(principal, admitted.turn)
        if admitted.busy:
            detail = (
                f"{MAX_QUEUED_TURNS} turns are already queued"
                if admitted.queue_full
                else "a turn is running; wait for its TurnCompleted, cancel it, "
                "or send with if_busy ENQUEUE"
            )
            raise FailedPrecondition(
                detail,
                metadata={
                    "conversation_id": conversation_id,
                    "active_turn_id": conversation.active_turn_id,
                },
            )
        turn = admitted.turn
        if admitted.position:
            queued = await self.events.append(
                principal.tenant_id,
                conversation_id,
                turn.id,
                TurnQueued(request_id=request_id, position=admitted.position),
            )
            return SendResult(
                conversation_id,
                turn.id,
                queued.sequence - 1,
                queued=True,
                on_disconnect=turn.options.on_disconnect,
            )
        first = await self.runner.start(
            principal,
            conversation,
            turn,
            admission,
            lease_held=admitted.lease_held,
            prepared=prepared,
        )
        return SendResult(
            conversation_id, turn.id, first - 1, on_disconnect=turn.options.on_disconnect
        )

    async def _not_started(
        self, scope: TurnScope, guarded: object, leased: object, holder: str
    ) -> None:
        """Give back what a turn that does not start took: its admission by the guards and
        the run lease."""
        if isinstance(guarded, Admission):
            await self.guards().turn_not_started(scope, guarded)
        if leased is True:
            try:
                await self.leases.release(scope.principal.tenant_id, scope.conversation_id, holder)
            except Exception:  # it expires
                log.warning("could not release the lease of a turn that did not start")

    async def _not_started_later(
        self, scope: TurnScope, gathered: asyncio.Future[tuple[Any, Any, Any]], holder: str
    ) -> None:
        _, guarded, leased = await gathered
        await self._not_started(scope, guarded, leased, holder)

    async def _admit(self, turn: Turn, enqueue: bool, held: bool | None = None) -> Admitted:
        """Admit the turn, holding its lease first in case it runs at once, so that a running
        turn never lacks an owner in Redis (the reaper relies on that). `held`: the caller
        has already tried to take the lease (None: take it here)."""
        holder = self.runner.holder(turn.id)
        if held is None:
            held = await self.leases.acquire_if_free(turn.tenant_id, turn.conversation_id, holder)
        try:
            admitted = await self.store.admit_turn(
                turn, enqueue=enqueue, max_queued=MAX_QUEUED_TURNS
            )
        except BaseException:
            if held:
                await self.leases.release(turn.tenant_id, turn.conversation_id, holder)
            raise
        if held and (admitted.existing or admitted.busy or admitted.position):
            await self.leases.release(turn.tenant_id, turn.conversation_id, holder)
        else:
            admitted.lease_held = held
        return admitted

    async def _attach(self, principal: Principal, turn: Turn) -> SendResult:
        """Re-attach to a turn from its first event (waiting a moment for a turn that the
        first call has admitted but not yet logged)."""
        deadline = time.monotonic() + 5.0
        while not turn.first_sequence and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            found = await self.store.get_turn(principal.tenant_id, turn.conversation_id, turn.id)
            if found is None:
                break
            turn = found
        return SendResult(
            turn.conversation_id,
            turn.id,
            max(0, turn.first_sequence - 1),
            attached=True,
            on_disconnect=turn.options.on_disconnect,
        )

    async def follow(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        after: int,
        turn_id: str = "",
        follow: bool = True,
        known: bool = False,
        subscription: Subscription | None = None,
    ) -> AsyncIterator[Event | None]:
        """Events after `after` (only `turn_id`'s when set; then ending after its
        TurnCompleted). Yields None as a heartbeat on an idle stream. `known`: the caller
        has just started or found the turn, no need to look it up. `subscription`: from
        `send`, see `EventLog.read`."""
        start = after
        # Whether the turn's TurnCompleted may come before `after`, unseen by the read below:
        # then the turn is looked up at each idle tick.
        end_unseen = False
        if known:
            pass
        elif turn_id:
            turn = await self.get_turn(principal, conversation_id, turn_id)
            if follow and _logged_end_at_or_before(turn, after):
                return
            if follow and 0 < turn.first_sequence <= after:
                # Read from its start, to see its TurnCompleted (and end) even when it comes
                # before `after`; what comes before `after` is not sent.
                start = turn.first_sequence - 1
            # (nothing of it logged yet: where it will begin is unknown)
            end_unseen = follow and turn.first_sequence == 0 and after > 0
        else:
            await self.get(principal, conversation_id)
        # Wake up at least once per lease period to notice a turn whose process died.
        heartbeat = self.config.heartbeat_seconds
        tick = idle_tick(heartbeat, self.config.lease_seconds)
        quiet_since, seen = time.monotonic(), after
        async for event in self.events.read(
            principal.tenant_id,
            conversation_id,
            start,
            follow=follow,
            heartbeat_seconds=tick if follow else None,
            subscription=subscription,
        ):
            if event is None:
                if self.draining and not (turn_id and turn_id in self.runner.local):
                    # Nothing of this stream runs here: it would only hold the stop for
                    # the whole grace period. The client follows on another server.
                    raise server_stopping()
                conversation = await self.store.get(principal.tenant_id, conversation_id)
                if conversation is None:  # deleted meanwhile: nothing more will come
                    raise NotFound(
                        f"conversation {conversation_id} was deleted",
                        metadata={"conversation_id": conversation_id},
                    )
                await self._reap_orphans(conversation)
                if end_unseen and await self._ended_before(
                    principal.tenant_id, conversation_id, turn_id, seen
                ):
                    return  # its TurnCompleted came before `after`: it will not pass here
                # (half a tick of slack: a wake-up a little early still sends it on time)
                if time.monotonic() - quiet_since >= heartbeat - tick / 2:
                    quiet_since = time.monotonic()
                    yield None
                continue
            quiet_since = time.monotonic()
            seen = max(seen, event.sequence)
            if turn_id and event.turn_id != turn_id:
                continue
            if event.sequence > after:
                yield event
            if turn_id and follow and isinstance(event.body, TurnCompleted):
                return

    async def _ended_before(
        self, tenant_id: str, conversation_id: str, turn_id: str, seen: int
    ) -> bool:
        """Whether the turn followed has ended with its TurnCompleted at or before `seen`
        (an end not logged yet is still to come)."""
        turn = await self.store.get_turn(tenant_id, conversation_id, turn_id)
        return turn is not None and _logged_end_at_or_before(turn, seen)

    async def cancel(
        self,
        principal: Principal,
        conversation_id: str,
        turn_id: str,
        reason: str,
        *,
        stop_reason: str = CANCELLED,
        wait_seconds: float = 2.0,
    ) -> Turn:
        conversation = await self._find(principal, conversation_id)
        if not turn_id:
            turn_id = conversation.active_turn_id
            if not turn_id:
                raise FailedPrecondition(
                    "no turn is running or queued; pass the turn_id to cancel a given turn",
                    metadata={"conversation_id": conversation_id},
                )
        turn = await self.get_turn(principal, conversation_id, turn_id)
        if turn.status == ENDED:
            return turn
        detail = reason or ("the client disconnected" if stop_reason == DISCONNECTED else "")
        if turn.status == QUEUED and await self._end_queued(principal, turn, stop_reason, detail):
            return await self.get_turn(principal, conversation_id, turn_id)
        # Running, or promoted from the queue a moment ago (and maybe not started yet: the
        # process starting it applies the cancel when it does).
        if not self.runner.cancel_local(turn_id, stop_reason, detail):
            holder = await self.leases.holder(principal.tenant_id, conversation_id)
            if holder is None:
                await self._reap_orphans(conversation)
                # (a promoted turn that nobody had started may have started here meanwhile)
                self.runner.cancel_local(turn_id, stop_reason, detail)
            else:
                await self.publish_cancel(
                    principal.tenant_id, conversation_id, turn_id, stop_reason, detail
                )
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            turn = await self.get_turn(principal, conversation_id, turn_id)
            if turn.status == ENDED:
                break
            await asyncio.sleep(0.02)
        return turn

    async def _end_queued(self, principal: Principal, turn: Turn, stop: str, detail: str) -> bool:
        """End a turn that is still queued; False if it is not (promoted meanwhile)."""
        ended = await self.store.end_queued(
            principal.tenant_id,
            turn.conversation_id,
            turn.id,
            TurnOutcome(stop_reason=stop, stop_detail=detail),
        )
        if ended:
            self.runner.stats.turn_ended(stop, None)
            _log_ended_here(turn, stop, detail)
            await self.events.append(
                principal.tenant_id,
                turn.conversation_id,
                turn.id,
                TurnCompleted(
                    stop_reason=stop,
                    stop_detail=detail,
                    usage=Usage(),
                    cost_usd=money(turn.cost_usd),
                    message_count=0,
                    last_message_id="",
                    duration=0.0,
                ),
            )
        return ended

    async def reap_dead_turns(self) -> int:
        """End the running turns whose process died (their lease expired), found by the
        runner's sweep rather than when their conversation is next used: their clients learn
        how they ended, and the turns queued behind them start; and log the ends that never
        reached the log (`log_missing_ends`). Returns how many turns it did either for."""
        reaped = 0
        # A turn younger than a lease cannot have lost its lease yet.
        for conversation in await self.store.long_running(self.runner.config.lease_seconds, 100):
            try:
                reaped += await self._reap_orphans(conversation)
            except Unavailable as exc:  # a store is down: the next sweep tries again
                log.warning("could not end the turns of dead processes: %s", exc)
                break
            except Exception as exc:
                log.warning("could not end the running turn of %s: %s", conversation.id, exc)
        return reaped + await self.log_missing_ends()

    async def _reap_orphans(self, conversation: Conversation) -> bool:
        """End the running turn of a process that died (its lease expired) with an Error
        and a TurnCompleted; returns whether one was ended. A promoted turn that its process
        did not start is started here instead."""
        if not conversation.active_turn_id or conversation.active_turn_id in self.runner.local:
            return False
        holder = await self.leases.holder(conversation.tenant_id, conversation.id)
        if holder is not None:
            return False
        turn = await self.store.get_turn(
            conversation.tenant_id, conversation.id, conversation.active_turn_id
        )
        if turn is None or turn.status == ENDED:
            return False
        if not turn.started:
            await self.runner.start_promoted(turn)
            return False
        message = SERVER_STOPPED
        error = ErrorOccurred(code=14, reason="UNAVAILABLE", message=message, retryable=True)
        ended, next_turn = await self.store.finish_turn(
            conversation.tenant_id,
            conversation.id,
            turn.id,
            TurnOutcome(
                stop_reason=ERROR,
                stop_detail=message,
                error={"code": 14, "reason": "UNAVAILABLE", "message": message, "retryable": True},
            ),
        )
        if not ended:
            return False
        self.runner.stats.turn_ended(ERROR, None)
        _log_ended_here(turn, ERROR, message)
        await self._log_end(turn, ERROR, message, error)
        if next_turn is not None:
            await self.runner.start_promoted(next_turn)
        return True

    async def log_missing_ends(self) -> int:
        """Log the end of turns that ended in PostgreSQL but whose end never reached the log
        (the process ending them stopped or died while Redis was out of reach, after its
        retries): their followers hear how they ended. Returns how many were logged."""
        logged = 0
        # Past the time their own process retries its end, and its lease.
        waited = self.runner.config.end_retry_seconds + self.runner.config.lease_seconds
        for turn in await self.store.unlogged_ends(waited, 100):
            holder = f"{self.runner.owner}:end:{turn.id}"
            try:
                # The conversation's lease, so that one process logs it, and not under a
                # turn running there now (the next sweep does).
                if not await self.leases.acquire_if_free(
                    turn.tenant_id, turn.conversation_id, holder
                ):
                    continue
                try:
                    error = None
                    if turn.error:
                        error = ErrorOccurred(
                            code=int(turn.error.get("code", 14)),
                            reason=str(turn.error.get("reason", "UNAVAILABLE")),
                            message=str(turn.error.get("message", "")),
                            retryable=bool(turn.error.get("retryable", False)),
                        )
                    await self._log_end(turn, turn.stop_reason, turn.stop_detail, error)
                finally:
                    await self.leases.release(turn.tenant_id, turn.conversation_id, holder)
            except Unavailable as exc:  # a store is down: the next sweep tries again
                log.warning("could not log the ends of turns: %s", exc)
                break
            except Exception as exc:  # this one only (its log refuses it): not the others
                log.warning("could not log the end of turn %s: %s", turn.id, exc)
                continue
            logged += 1
        return logged

    async def _log_end(
        self, turn: Turn, stop_reason: str, stop_detail: str, error: ErrorOccurred | None
    ) -> None:
        """Append a turn's Error, if any, and its TurnCompleted, in one append."""
        items: list[tuple[EventBody, datetime | None]] = []
        if error is not None:
            items.append((error, None))
        completed = TurnCompleted(
            stop_reason=stop_reason,
            stop_detail=stop_detail,
            usage=turn.usage,
            cost_usd=money(turn.cost_usd),
            message_count=turn.message_count,
            last_message_id="",
            duration=0.0,
        )
        items.append((completed, None))
        # Its process is gone: if Redis lost the counter too, the numbers of its token
        # deltas are known only to the clients that saw them.
        await self.events.append_many(
            turn.tenant_id, turn.conversation_id, turn.id, items, gap_if_lost=LOST_NUMBERS_GAP
        )

    async def get_turn(self, principal: Principal, conversation_id: str, turn_id: str) -> Turn:
        turn = await self.store.get_turn(principal.tenant_id, conversation_id, turn_id)
        if turn is None:
            await self.get(principal, conversation_id)  # NOT_FOUND names the conversation first
            raise NotFound(
                f"turn {turn_id} does not exist in conversation {conversation_id}",
                metadata={"turn_id": turn_id},
            )
        await self._latest([turn])
        return turn

    async def _latest(self, turns: Sequence[Turn]) -> None:
        """The turns' (of one conversation) latest sequences: the live log knows them before
        PostgreSQL does."""
        if not turns:
            return
        try:
            live = await self.events.live.turn_last_sequences(
                turns[0].tenant_id, turns[0].conversation_id, [t.id for t in turns]
            )
        except Unavailable:  # Redis is down: PostgreSQL's answer, which may lag
            return
        for turn, latest in zip(turns, live, strict=True):
            if latest is not None and latest > turn.last_sequence:
                turn.last_sequence = latest

    async def list_turns(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        status: str,
        size: int,
        token: str,
        fits: Fits | None = None,
    ) -> tuple[list[Turn], str]:
        await self.get(principal, conversation_id)
        filters = {"conversation": conversation_id, "status": status}
        cursor = decode_token(token, filters)
        limit = page_size(size)
        after = None
        if cursor is not None:
            after = (datetime.fromisoformat(cursor.after[0]), cursor.after[1])
        rows = await self.store.list_turns(
            principal.tenant_id, conversation_id, status=status, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        await self._latest(rows)
        rows, cut = keep_fitting(rows, fits)
        next_token = ""
        if more or cut:
            last = rows[-1]
            assert last.create_time is not None
            next_token = encode_token([last.create_time.isoformat(), last.id], filters)
        return rows, next_token

    async def list_messages(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        turn_id: str,
        size: int,
        token: str,
        fits: Fits | None = None,
    ) -> tuple[list[Message], str]:
        if turn_id:
            await self.get_turn(principal, conversation_id, turn_id)
        else:
            await self.get(principal, conversation_id)
        filters = {"conversation": conversation_id, "turn": turn_id}
        cursor = decode_token(token, filters)
        limit = page_size(size)
        after = int(cursor.after[0]) if cursor is not None else None
        rows = await self.store.list_messages(
            principal.tenant_id, conversation_id, turn_id=turn_id, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        messages, cut = keep_fitting([m for _, m in rows], fits)
        next_token = ""
        if more or cut:
            next_token = encode_token([rows[len(messages) - 1][0]], filters)
        return messages, next_token

    def cancel_on_disconnect(
        self, principal: Principal, conversation_id: str, turn_id: str
    ) -> None:
        """The stream of a turn whose disconnect policy is CANCEL broke (its SendMessage, or
        a StreamEvents that re-attached to it with that policy)."""

        async def run() -> None:
            try:
                await self.cancel(principal, conversation_id, turn_id, "", stop_reason=DISCONNECTED)
            except Exception:  # the turn may already be gone; nothing to report to
                pass

        self._in_background(run())

    @staticmethod
    def _in_background(work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        _BACKGROUND.add(task)  # a reference, so that the task is not collected midway
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()


def idle_tick(heartbeat: float, lease: float) -> float:
    """How often an idle stream wakes: at least once per lease period (to notice a turn
    whose process died), and a whole number of times per heartbeat, so that heartbeats go
    out on time (with a 10 s lease, a 15 s heartbeat used to go out every 20 s)."""
    if heartbeat <= lease:
        return heartbeat
    return heartbeat / math.ceil(heartbeat / lease)


def _log_ended_here(turn: Turn, stop_reason: str, stop_detail: str) -> None:
    """The log line of a turn ended outside its own run: queued, or its process died."""
    since = turn.start_time or turn.create_time
    log_turn_end(
        turn.tenant_id,
        turn.conversation_id,
        turn.id,
        stop_reason,
        stop_detail,
        duration=None if since is None else (datetime.now(UTC) - since).total_seconds(),
        first_token=None,
        messages=turn.message_count,
        usage=turn.usage,
        cost_usd=turn.cost_usd,
    )


def _logged_end_at_or_before(turn: Turn, sequence: int) -> bool:
    return turn.status == ENDED and turn.end_logged and 0 < turn.last_sequence <= sequence


def _check_same_message(earlier: Turn, turn: Turn) -> None:
    """A repeated request_id re-attaches to its turn only when it repeats the same message
    (a retry); reused for another message, it would silently drop that message."""
    if (earlier.content, earlier.options.documents) != (turn.content, turn.options.documents):
        raise InvalidArgument.for_field(
            "request_id",
            f"was already used for a different message (turn {earlier.id}); use a new request_id",
        )


def _no_conversation(conversation_id: str) -> NotFound:
    return NotFound(
        f"conversation {conversation_id} does not exist",
        metadata={"conversation_id": conversation_id},
    )
