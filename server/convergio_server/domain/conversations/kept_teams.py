"""Teams kept in memory between the turns of their conversations.

Restoring a team from its saved state decodes and validates every message it remembers
(a growing share of a long conversation's turn), so the process that ran a turn keeps its
team for the next one. A kept team is used only when the state saved after its turn is
still the conversation's latest (no other process ran a turn that saved one since) and it
holds exactly what that saved state holds; otherwise the next turn builds a team and
restores the saved state, as it always can. Kept teams are bounded in number, in the
memory they are estimated to hold and in idle time; the oldest go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Closable(Protocol):
    closers: list[Callable[[], Awaitable[None]]]


# How a turn got its team (`KeptTeams.turns`): the one kept from the conversation's last
# turn; a new one because the kept one missed a turn run elsewhere, or the turn needed
# another make; a new one because none was kept (a first turn, a team dropped or never
# kept, a turn on another process before).
REUSED, STALE, ANOTHER_MAKE, NONE_KEPT = "reused", "stale", "another_make", "none_kept"
TEAM_ORIGINS = (REUSED, STALE, ANOTHER_MAKE, NONE_KEPT)

# A team in memory holds about this many times the bytes of its saved state's JSON (the
# core team of eight after 40 turns: 0.6 MB of JSON, about 5.6 MB of the process's memory;
# AutoGen keeps each message in objects per agent where the saved state holds it once).
MEMORY_PER_STATE_BYTE = 10


@dataclass
class KeptTeam:
    team: Any  # the runner's BuiltTeam
    state_turn_id: str  # the turn whose saved state the team holds
    until: float  # monotonic time after which it is dropped
    weight: int = 0  # the memory it is estimated to hold, in bytes


async def close_team(team: Closable) -> None:
    """Close a team's model clients (their connections)."""
    for closer in team.closers:
        with contextlib.suppress(Exception):
            await closer()


class KeptTeams:
    """A process's kept teams, by conversation, oldest first."""

    def __init__(self, size: int, idle_seconds: float, memory_bytes: int = 1 << 62) -> None:
        self.size = size
        self.idle_seconds = idle_seconds
        self.memory_bytes = memory_bytes
        self.weight = 0  # of the kept teams, together
        self.turns = dict.fromkeys(TEAM_ORIGINS, 0)
        self.dropped = 0  # kept teams dropped unused (idle, oldest beyond the bounds)
        self._teams: OrderedDict[str, KeptTeam] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None  # drops the idle ones when due

    def __len__(self) -> int:
        return len(self._teams)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._teams

    def take(self, conversation_id: str) -> KeptTeam | None:
        """The team kept for the conversation, which is no longer kept (a turn runs it)."""
        kept = self._pop(conversation_id)
        if kept is not None and kept.until < time.monotonic():
            self.dropped += 1
            self.close_later(kept.team)
            return None
        return kept

    def forget(self, conversation_id: str) -> None:
        """Drop the conversation's kept team (the conversation is gone)."""
        kept = self._pop(conversation_id)
        if kept is not None:
            self.close_later(kept.team)

    def keep(
        self, conversation_id: str, team: Closable, state_turn_id: str, state_bytes: int = 0
    ) -> None:
        """Keep `team`, which holds the state that turn `state_turn_id` saved (`state_bytes`
        of JSON)."""
        weight = state_bytes * MEMORY_PER_STATE_BYTE
        if self.size <= 0 or weight > self.memory_bytes:
            self.close_later(team)
            return
        old = self._pop(conversation_id)
        if old is not None:
            self.close_later(old.team)
        now = time.monotonic()
        self._teams[conversation_id] = KeptTeam(
            team, state_turn_id, now + self.idle_seconds, weight
        )
        self.weight += weight
        while len(self._teams) > self.size or self.weight > self.memory_bytes:
            self.close_later(self._pop_oldest().team)
        self._drop_idle()

    def _pop(self, conversation_id: str) -> KeptTeam | None:
        kept = self._teams.pop(conversation_id, None)
        if kept is not None:
            self.weight -= kept.weight
        return kept

    def _pop_oldest(self) -> KeptTeam:
        kept = self._teams.popitem(last=False)[1]
        self.weight -= kept.weight
        self.dropped += 1
        return kept

    def count(self, how: str) -> None:
        """Count how a turn got its team (REUSED, STALE, ANOTHER_MAKE or NONE_KEPT)."""
        self.turns[how] += 1

    def _expire(self) -> None:
        self._timer = None
        self._drop_idle()

    def _drop_idle(self) -> None:
        """Drop the teams idle for too long; come back when the next one is due."""
        now = time.monotonic()
        # Kept in the order they were kept, with one idle time: the expired ones lead.
        while self._teams:
            first = next(iter(self._teams.values()))
            if first.until >= now:
                if self._timer is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_at(loop.time() + first.until - now, self._expire)
                return
            self.close_later(self._pop_oldest().team)

    def close_later(self, team: Closable) -> None:
        if not team.closers:
            return
        closing = asyncio.ensure_future(close_team(team))
        self._closing.add(closing)  # a reference, so that the task is not collected midway
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Drop every kept team and wait until their clients are closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._teams:
            self.close_later(self._pop_oldest().team)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
