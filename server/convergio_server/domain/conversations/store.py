"""What the conversation domain needs from storage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from convergio_server.domain.conversations.model import (
    Conversation,
    Memory,
    Message,
    Turn,
    TurnOutcome,
)


@dataclass
class Admitted:
    """The result of `ConversationStore.admit_turn`."""

    turn: Turn
    existing: bool  # the request_id was seen before: this is the first call's turn
    busy: bool = False  # a turn is active and the request did not ask to queue
    queue_full: bool = False
    position: int = 0  # 0 = runs now, else its place in the queue
    lease_held: bool = False  # the caller already holds the run lease for it


class ConversationStore(Protocol):
    async def create(self, conversation: Conversation) -> Conversation: ...

    async def get(self, tenant_id: str, conversation_id: str) -> Conversation | None: ...

    async def list_conversations(
        self,
        tenant_id: str,
        *,
        status: str,
        labels: dict[str, str],
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[Conversation]: ...

    async def update(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        title: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Conversation | None:
        """Set the fields given (None = unchanged); None if there is no such conversation."""
        ...

    async def delete(
        self, tenant_id: str, conversation_id: str, *, idle_only: bool = False
    ) -> bool:
        """Whether it was deleted; with `idle_only`, not while a turn runs or waits."""
        ...

    async def mark_deleting(
        self, tenant_id: str, conversation_id: str, deleting: bool = True
    ) -> None:
        """From now on the conversation takes no new turn (admitting one is NotFound), or
        (`deleting` False) takes them again."""
        ...

    async def end_queued(
        self, tenant_id: str, conversation_id: str, turn_id: str, outcome: TurnOutcome
    ) -> bool:
        """End a turn that is still QUEUED (a promoted one is left alone): whether it did."""
        ...

    async def admit_turn(self, turn: Turn, *, enqueue: bool, max_queued: int) -> Admitted:
        """Insert the turn RUNNING (conversation idle; its message enters the transcript) or
        QUEUED (busy and `enqueue`), or return the existing turn of its request_id; atomic
        per conversation."""
        ...

    async def get_for_request(
        self, tenant_id: str, conversation_id: str, request_id: str
    ) -> tuple[Conversation | None, str | None]:
        """The conversation and the id of its turn of `request_id`, if it has one, in one
        round trip (on the way of every SendMessage)."""
        ...

    async def add_message(self, message: Message) -> None: ...

    async def finish_turn(
        self, tenant_id: str, conversation_id: str, turn_id: str, outcome: TurnOutcome
    ) -> tuple[bool, Turn | None]:
        """End the turn (if not ended yet: returns whether this call ended it), save the team
        state, add usage to the conversation, and promote the next queued turn (returned,
        already RUNNING) or leave the conversation idle."""
        ...

    async def mark_started(self, tenant_id: str, conversation_id: str, turn_id: str) -> bool:
        """Claim a promoted turn that has not started (see `Turn.started`): True for the one
        caller that may start it."""
        ...

    async def unstarted_turns(self, limit: int) -> list[Turn]:
        """Promoted turns of every tenant that no server started yet, oldest first."""
        ...

    async def unlogged_ends(self, ended_before_seconds: float, limit: int) -> list[Turn]:
        """Turns of every tenant that ended more than so long ago (within a day) and whose
        TurnCompleted is not in the durable log, oldest first."""
        ...

    async def long_running(self, older_than_seconds: float, limit: int) -> list[Conversation]:
        """Conversations of every tenant whose running turn started more than so long ago,
        oldest first: where to look for turns whose process died."""
        ...

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None: ...

    async def list_turns(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        status: str,
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[Turn]: ...

    async def list_messages(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        turn_id: str,
        after: int | None,
        limit: int,
    ) -> list[tuple[int, Message]]: ...

    async def load_memory(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        limit: int,
        *,
        held_turn_id: str = "",
    ) -> Memory:
        """The saved team state and at most `limit` (the latest) messages of other turns
        written after it. With `held_turn_id` (the caller holds the state saved by that
        turn): when that is still the saved state, `held` and no state."""
        ...

    async def running_turns(self, tenant_id: str, conversation_id: str) -> list[Turn]: ...
