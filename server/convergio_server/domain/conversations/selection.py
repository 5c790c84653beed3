"""Speaker policies: who answers, in what order, within one turn of a group.

A policy sees the user's message and the participants and makes a plan: the agents that
reply, best first, each with its score. The team asks it for the next speaker through
AutoGen's `selector_func` hook, and `PlanComplete` ends the turn once the plan has been
spoken. Policies register by name (`register_policy`); "simple" is built in, and a
deployment may add others (e.g. "scoring").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autogen_agentchat.base import TerminatedException, TerminationCondition
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StopMessage
from pydantic import BaseModel

from convergio_server.domain.events.model import ScoreFactor, SpeakerCandidate, SpeakerSelected

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Participant:
    """What a policy knows about an agent."""

    name: str
    expertise: tuple[str, ...]
    priority: int
    description: str = ""


@dataclass
class Plan:
    speakers: list[str]
    candidates: list[SpeakerCandidate]
    reason: str
    policy: str
    seconds: float = 0.0
    spoken: int = 0
    selections: list[SpeakerSelected] = field(default_factory=list)
    # Told of each selection as it is made (the turn announces it without waiting for the
    # speaker's first words, which never come in pieces when tokens are not streamed).
    on_select: Callable[[], None] | None = None

    def next_selection(self) -> SpeakerSelected | None:
        """The selection of the next planned speaker (recorded), or None when spoken out."""
        if self.spoken >= len(self.speakers):
            return None
        agent = self.speakers[self.spoken]
        self.spoken += 1
        selection = SpeakerSelected(
            agent=agent,
            round=self.spoken,
            policy=self.policy,
            reason=self.reason if self.spoken == 1 else f"next in plan: {agent}",
            candidates=self.candidates,
            selection_duration=self.seconds if self.spoken == 1 else 0.0,
        )
        self.selections.append(selection)
        if self.on_select is not None:
            self.on_select()
        return selection


class SpeakerPolicy(Protocol):
    name: str

    def plan(self, content: str, participants: Sequence[Participant], max_turns: int) -> Plan: ...


def _words(text: str) -> set[str]:
    out: set[str] = set()
    for word in _WORD.findall(text.lower()):
        out.add(word)
        if len(word) > 4 and word.endswith("s"):
            out.add(word[:-1])
    return out


class SimplePolicy:
    """The agents whose expertise keywords appear in the message reply, best match first
    (at most three); when none matches, the highest-priority agent replies alone."""

    name = "simple"
    max_speakers = 3

    def plan(self, content: str, participants: Sequence[Participant], max_turns: int) -> Plan:
        started = time.perf_counter()
        words = _words(content)
        scored: list[tuple[float, int, str, list[str]]] = []
        for p in participants:
            hits = [k for k in p.expertise if _words(k) and _words(k) <= words]
            score = min(1.0, len(hits) / 3)
            scored.append((score, p.priority, p.name, hits))
        scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
        candidates = [
            SpeakerCandidate(
                agent=name,
                score=round(score, 4),
                factors=[ScoreFactor("expertise", round(score, 4), 1.0)],
            )
            for score, _, name, _ in scored
        ]
        matched = [s for s in scored if s[0] > 0][: self.max_speakers]
        if matched:
            speakers = [name for _, _, name, _ in matched]
            top = matched[0]
            reason = f"expertise match: {', '.join(top[3][:3])}"
        else:
            speakers = [scored[0][2]] if scored else []
            reason = "no expertise matched; highest priority"
        return Plan(
            speakers=speakers,
            candidates=candidates,
            reason=reason,
            policy=self.name,
            seconds=time.perf_counter() - started,
        )


_POLICIES: dict[str, Callable[[], SpeakerPolicy]] = {"simple": SimplePolicy}


def register_policy(name: str, factory: Callable[[], SpeakerPolicy]) -> None:
    _POLICIES[name] = factory


def policy_names() -> list[str]:
    return sorted(_POLICIES)


def get_policy(name: str) -> SpeakerPolicy:
    return _POLICIES.get(name, SimplePolicy)()


def agent_replies_since_user(
    messages: Sequence[BaseAgentEvent | BaseChatMessage],
) -> int:
    count = 0
    for message in reversed(messages):
        if isinstance(message, BaseChatMessage):
            if message.source == "user":
                break
            count += 1
    return count


class _PlanCompleteConfig(BaseModel):
    pass


class CurrentPlan:
    """The plan of the turn a team runs now (a team kept between turns runs one per turn)."""

    def __init__(self) -> None:
        self.plan = Plan(speakers=[], candidates=[], reason="", policy="")


class PlanComplete(TerminationCondition):
    """Ends the group's run once every planned speaker of the current plan has replied."""

    def __init__(self, current: CurrentPlan) -> None:
        self._current = current
        self._replies = 0
        self._terminated = False

    @property
    def terminated(self) -> bool:
        return self._terminated

    async def __call__(
        self, messages: Sequence[BaseAgentEvent | BaseChatMessage]
    ) -> StopMessage | None:
        if self._terminated:
            raise TerminatedException("the plan was already complete")
        for message in messages:
            if isinstance(message, BaseChatMessage):
                # Only replies to the turn's message count: a task that replays an earlier
                # (cancelled) turn's replies before the message must not complete the plan.
                self._replies = 0 if message.source == "user" else self._replies + 1
        if self._replies >= len(self._current.plan.speakers):
            self._terminated = True
            return StopMessage(content="plan complete", source="PlanComplete")
        return None

    async def reset(self) -> None:
        self._replies = 0
        self._terminated = False

    def _to_config(self) -> Any:
        return _PlanCompleteConfig()
