"""What a team remembers of its conversation, bounded: an agent's model context that shows
the model the newest messages within a token budget (and keeps little more in its saved
state), and the trimming of a group chat's saved message thread and members' buffers.

Without a bound every model call carries the whole conversation: prompts, cost and the
saved team state grow with each turn until the model's context window refuses the call,
and then every later turn of the conversation fails the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import FunctionExecutionResultMessage, LLMMessage

from convergio_server.domain.models.text import count_message_tokens, count_text_tokens

# Saved state keeps up to this many times the budget of earlier turns' messages, so that
# trimming happens now and then rather than on every message.
_SLACK = 2
# Entries of a group chat's message thread kept in its saved state, 100-200 (the speaker
# policies look only at the running turn's; AutoGen's model-based selection reads the
# latest). Cut now and then rather than at every turn, so that a team kept in memory
# between turns mostly holds what its saved state holds (see `kept_teams.py`).
THREAD_ENTRIES = 100


class RecentHistory(ChatCompletionContext):
    """An agent's memory: the model sees the running turn's messages whole, and before
    them the newest earlier messages that fit in `budget` tokens. Its saved state holds
    at most about twice the budget of earlier messages, with their token counts."""

    def __init__(
        self,
        budget: int,
        count: Callable[[Sequence[LLMMessage]], int] = count_message_tokens,
    ) -> None:
        super().__init__()
        self.budget = max(1, budget)
        self._count = count
        self._sizes: list[int] = []
        self._turn_start = 0  # the running turn's first message

    async def add_message(self, message: LLMMessage) -> None:
        self._messages.append(message)
        self._sizes.append(self._count([message]))

    async def get_messages(self) -> list[LLMMessage]:
        start = self._turn_start
        room = self.budget
        while start > 0 and self._sizes[start - 1] <= room:
            start -= 1
            room -= self._sizes[start]
        # A tool's result without the call that asked for it is refused by model APIs.
        while start < len(self._messages) and isinstance(
            self._messages[start], FunctionExecutionResultMessage
        ):
            start += 1
        return self._messages[start:]

    async def clear(self) -> None:
        await super().clear()
        self._sizes, self._turn_start = [], 0

    async def save_state(self) -> Mapping[str, Any]:
        # The messages of the turn that just ran are earlier ones for the next turn.
        self._trim(len(self._messages))
        state = dict(await super().save_state())
        state["token_counts"] = list(self._sizes)
        return state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await super().load_state(state)
        sizes = state.get("token_counts")
        if isinstance(sizes, list) and len(sizes) == len(self._messages):
            self._sizes = [int(size) for size in sizes]
        else:  # saved before counts were kept
            self._sizes = [self._count([message]) for message in self._messages]
        self._turn_start = len(self._messages)
        self._trim(self._turn_start)

    def _trim(self, turn_start: int) -> None:
        """Forget the oldest messages before `turn_start` once they are well over the
        budget, down to the budget."""
        earlier = sum(self._sizes[:turn_start])
        drop = 0
        if earlier > _SLACK * self.budget:
            while drop < turn_start and earlier > self.budget:
                earlier -= self._sizes[drop]
                drop += 1
            while drop < turn_start and isinstance(
                self._messages[drop], FunctionExecutionResultMessage
            ):
                earlier -= self._sizes[drop]
                drop += 1
            del self._messages[:drop]
            del self._sizes[:drop]
        self._turn_start = turn_start - drop


def trim_team_state(
    state: Mapping[str, Any], entries: int = THREAD_ENTRIES, buffer_tokens: int = 0
) -> tuple[Mapping[str, Any], bool]:
    """A team's saved state with each group chat manager's message thread, and each
    member's buffer of messages heard since it last spoke (which grows for as long as the
    policy does not pick it), cut to their latest `entries` once they hold twice as many;
    a buffer also to its newest messages within `buffer_tokens` (0 = no such bound). A
    member hears its buffer as part of the turn it next speaks in, which its memory shows
    whole: without this bound, a member picked rarely would carry everything it missed into
    that turn. Also says whether anything was cut (the team in memory then holds more than
    its saved state)."""
    agents = state.get("agent_states")
    if not isinstance(agents, Mapping):
        return state, False
    trimmed: dict[str, Any] = {}
    cut_any = False
    for name, agent in agents.items():
        if isinstance(agent, Mapping):
            for key in ("message_thread", "message_buffer"):
                kept = agent.get(key)
                if not isinstance(kept, list):
                    continue
                cut = kept[-entries:] if len(kept) > _SLACK * entries else kept
                if key == "message_buffer" and buffer_tokens > 0:
                    cut = _newest_within(cut, buffer_tokens)
                if len(cut) < len(kept):
                    agent = {**agent, key: cut}
                    cut_any = True
        trimmed[name] = agent
    return {**state, "agent_states": trimmed}, cut_any


def _newest_within(messages: list[Any], tokens: int) -> list[Any]:
    """The newest of these dumped messages whose contents fit in `tokens`."""
    start = len(messages)
    while start > 0:
        message = messages[start - 1]
        content = message.get("content", "") if isinstance(message, Mapping) else message
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        size = count_text_tokens(text)
        if size > tokens:
            break
        tokens -= size
        start -= 1
    return messages[start:]
