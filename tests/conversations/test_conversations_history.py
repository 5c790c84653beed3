"""An agent's memory of a long conversation stays within its token budget: the running
turn whole, then the newest earlier messages that fit; the saved team state stays small."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    UserMessage,
)
from convergio import AsyncClient
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio_server.domain.conversations.history import RecentHistory, trim_team_state
from convergio_server.domain.conversations.state_packing import unpack
from convergio_server.domain.models.text import count_text_tokens

from tests.conversations.conftest import TENANT, collect, member_key, new_conversation
from tests.support.server import RunningServer, running_server, server_settings

BUDGET = 400


def said(text: str, source: str = "user") -> UserMessage:
    return UserMessage(content=text, source=source)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def tokens(message: LLMMessage) -> int:
    # One token per word here (the tags are words), plus no framing: easy to reason about.
    content = message.content
    return len(content.split()) if isinstance(content, str) else 2 * len(content)


def counted(messages: object) -> int:
    assert isinstance(messages, list)
    return sum(tokens(m) for m in messages)


async def test_the_model_sees_the_running_turn_whole_and_the_newest_earlier_messages() -> None:
    history = RecentHistory(10, counted)
    earlier = [said(words(4, f"old{i}-")) for i in range(5)]
    for message in earlier:
        await history.add_message(message)
    await history.load_state(await history.save_state())  # the next turn
    running: list[LLMMessage] = [
        said(words(8, "now-")),
        AssistantMessage(content=words(6, "ans-"), source="amy"),
    ]
    for now in running:
        await history.add_message(now)
    # 14 tokens of this turn, over the budget: all of them go; before them the newest
    # earlier messages that fit in 10 tokens (two of five).
    assert await history.get_messages() == [earlier[3], earlier[4], *running]


async def test_a_tool_result_is_never_shown_without_its_call() -> None:
    history = RecentHistory(6, counted)
    calls = [FunctionCall(id=f"c{i}", name="calc", arguments="{}") for i in range(3)]
    call = AssistantMessage(content=calls, source="amy")  # 6 tokens
    result = FunctionExecutionResultMessage(  # 2 tokens
        content=[FunctionExecutionResult(content="42", call_id="c1", name="calc")]
    )
    for message in (said(words(3, "q")), call, result):
        await history.add_message(message)
    await history.load_state(await history.save_state())
    await history.add_message(said("next"))
    # The result fits in the budget, the call that asked for it does not: neither goes.
    view = await history.get_messages()
    assert view == [said("next")]


async def test_saved_state_keeps_about_the_budget_and_its_counts() -> None:
    history = RecentHistory(10, counted)
    for i in range(30):
        await history.add_message(said(words(3, f"m{i}-")))
        state = await history.save_state()  # a turn per message
        await history.load_state(state)
        kept = state["messages"]
        assert sum(state["token_counts"]) <= 2 * 10 + 3
        assert len(kept) == len(state["token_counts"])
    # The newest messages survive, oldest first.
    assert [m["content"] for m in kept][-1] == words(3, "m29-")
    # A state saved without counts (older servers) is counted again.
    fresh = RecentHistory(10, counted)
    await fresh.load_state({"messages": state["messages"]})
    assert await fresh.get_messages() == await history.get_messages()


def test_a_groups_saved_thread_and_buffers_keep_their_latest_entries() -> None:
    thread = [{"type": "TextMessage", "content": str(i)} for i in range(250)]
    state: dict[str, Any] = {
        "type": "TeamState",
        "agent_states": {
            "amy": {"type": "ChatAgentContainerState", "agent_state": {}, "message_buffer": []},
            "ali": {"type": "ChatAgentContainerState", "message_buffer": thread},
            "SelectorGroupChatManager": {"message_thread": thread, "current_turn": 3},
        },
    }
    trimmed, cut = trim_team_state(state, 100)
    assert cut
    manager = trimmed["agent_states"]["SelectorGroupChatManager"]
    assert [m["content"] for m in manager["message_thread"]] == [str(i) for i in range(150, 250)]
    assert manager["current_turn"] == 3
    heard = trimmed["agent_states"]["ali"]["message_buffer"]
    assert [m["content"] for m in heard] == [str(i) for i in range(150, 250)]
    assert trimmed["agent_states"]["amy"] == state["agent_states"]["amy"]
    assert len(thread) == 250  # the state saved is not changed in place
    single: dict[str, Any] = {"llm_context": {"messages": []}}
    assert trim_team_state(single) == (single, False)


def test_a_thread_is_cut_only_once_it_holds_twice_its_entries() -> None:
    # Cut now and then, not at every turn: a team kept in memory holds what is saved.
    thread = [{"type": "TextMessage", "content": str(i)} for i in range(200)]
    state: dict[str, Any] = {"agent_states": {"manager": {"message_thread": thread}}}
    kept, cut = trim_team_state(state, 100)
    assert not cut
    assert kept["agent_states"]["manager"]["message_thread"] == thread
    state["agent_states"]["manager"]["message_thread"] = [*thread, {"content": "200"}]
    kept, cut = trim_team_state(state, 100)
    assert cut
    assert len(kept["agent_states"]["manager"]["message_thread"]) == 100


def test_a_members_buffer_keeps_its_newest_messages_within_the_budget() -> None:
    # A member the policy has not picked for a while: what it heard meanwhile.
    heard = [{"type": "TextMessage", "content": words(30, f"m{i}x")} for i in range(20)]
    state: dict[str, Any] = {"agent_states": {"xavier": {"message_buffer": heard}}}
    trimmed, cut = trim_team_state(state, 100, buffer_tokens=100)
    kept = trimmed["agent_states"]["xavier"]["message_buffer"]
    assert cut
    assert kept == heard[-len(kept) :]
    assert len(kept) == 3  # messages of 30 one-token words: three fit in 100 tokens
    untouched, cut = trim_team_state(state, 100)
    assert untouched["agent_states"]["xavier"]["message_buffer"] == heard
    assert not cut


@pytest.fixture(scope="module")
async def small_memory(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    server: RunningServer,
) -> AsyncIterator[RunningServer]:
    """A server on the same stores whose agents remember BUDGET tokens of earlier turns."""
    settings = server_settings(
        tmp_path_factory.mktemp("history-data"),
        pg_dsn,
        redis_url,
        redis_prefix,
        history_max_tokens=BUDGET,
    )
    async with running_server(settings) as running:
        yield running


async def test_a_long_conversation_keeps_its_prompts_and_state_bounded(
    small_memory: RunningServer,
) -> None:
    async with AsyncClient(small_memory.target, api_key=await member_key(small_memory)) as client:
        cid = await new_conversation(client, agent="amy")
        prompts = []
        for i in range(8):
            events = await collect(
                client.conversations.send(
                    conversation_id=cid,
                    content=f"Note {i} for the plan: " + words(60, f"n{i}x"),
                )
            )
            done = next(e.turn_completed for e in events if e.HasField("turn_completed"))
            prompts.append(done.usage.prompt_tokens)
        # The code word of the turn before is still in mind.
        events = await collect(
            client.conversations.send(
                conversation_id=cid,
                content="The warehouse code word is kestrel. Remember it.",
            )
        )
        events = await collect(
            client.conversations.send(
                conversation_id=cid, content="Which warehouse code word did I give you?"
            )
        )
        answer = next(e.message_completed for e in events if e.HasField("message_completed"))
        assert "kestrel" in answer.content
        state = await small_memory.infra.pool.fetchval(
            "SELECT state::text FROM team_states WHERE tenant_id = $1 AND conversation_id = $2",
            TENANT,
            cid,
        )
    # Each turn adds well over 100 tokens of history: unbounded, the eighth prompt would
    # carry about 900 more than the first. It carries at most the budget more.
    assert prompts[3] > prompts[0]
    assert prompts[-1] <= prompts[0] + BUDGET + 20
    assert max(prompts[4:]) - min(prompts[4:]) < 200
    saved = unpack(json.loads(state))["llm_context"]
    assert sum(saved["token_counts"]) <= 2 * BUDGET + 200
    assert len(saved["messages"]) < 18


async def test_a_groups_saved_state_stays_within_the_budget(small_memory: RunningServer) -> None:
    async with AsyncClient(small_memory.target, api_key=await member_key(small_memory)) as client:
        created = await client.conversations.create_conversation(team=pb.Team(preset="core"))
        cid = created.conversation.conversation_id
        for i in range(3):
            await collect(
                client.conversations.send(
                    conversation_id=cid,
                    content=f"Budget review {i}: what does the ROI of 10000 returning 12000 mean "
                    "for our marketing plan and the security of the supplier portal? "
                    + words(40, f"r{i}x"),
                )
            )
        stored = json.loads(
            await small_memory.infra.pool.fetchval(
                "SELECT state::text FROM team_states WHERE tenant_id = $1 AND conversation_id = $2",
                TENANT,
                cid,
            )
        )
    state = unpack(stored)
    # Stored with each message once, though members' memories and buffers share them.
    unique = {json.dumps(m, sort_keys=True) for m in stored["messages"]}
    assert len(unique) == len(stored["messages"])
    assert len(json.dumps(stored)) < 0.75 * len(json.dumps(state))
    members = {
        name: agent for name, agent in state["agent_states"].items() if "message_buffer" in agent
    }
    assert len(members) == 8  # the core team
    for name, member in members.items():
        memory = member["agent_state"]["llm_context"]
        assert len(memory["token_counts"]) == len(memory["messages"]), name
        assert sum(memory["token_counts"]) <= 2 * BUDGET + 300, name
        heard = sum(count_text_tokens(str(m.get("content", ""))) for m in member["message_buffer"])
        assert heard <= BUDGET, name
    # Some members were not picked in every turn: their buffers hold what they heard.
    assert any(member["message_buffer"] for member in members.values())
