"""A team's saved state is stored with each message once, and comes back the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from convergio_server.domain.conversations.state_packing import encode, pack, unpack


def message(text: str, source: str = "user") -> dict[str, Any]:
    return {"type": "TextMessage", "source": source, "content": text, "metadata": {}}


def team_state() -> dict[str, Any]:
    """The shape of a SelectorGroupChat's saved state: a thread, buffers, memories."""
    hello, plan, done = message("hello"), message("a plan", "amy"), message("done", "luca")
    return {
        "type": "TeamState",
        "agent_states": {
            "SelectorGroupChatManager": {"message_thread": [hello, plan, done], "turn": 3},
            "amy": {
                "message_buffer": [done],
                "agent_state": {
                    "llm_context": {
                        "messages": [
                            {"type": "UserMessage", "content": "hello", "source": "user"},
                            {"type": "AssistantMessage", "content": "a plan", "source": "amy"},
                        ],
                        "token_counts": [2, 3],
                    }
                },
            },
            "luca": {"message_buffer": [hello, plan, done], "agent_state": {}},
            "wanda": {"message_buffer": [hello, plan, done], "agent_state": {}},
        },
    }


def test_packing_keeps_each_message_once_and_unpacking_gives_the_state_back() -> None:
    state = team_state()
    packed = pack(state)
    assert unpack(packed) == state
    texts = [m["content"] for m in packed["messages"]]
    # Three distinct thread messages, two memory messages ("hello" said by the user is a
    # TextMessage in the thread and a UserMessage in a memory: not the same).
    assert sorted(texts) == ["a plan", "a plan", "done", "hello", "hello"]
    manager = packed["state"]["agent_states"]["SelectorGroupChatManager"]
    assert manager == {"message_thread": {"$refs": [0, 1, 2]}, "turn": 3}
    assert packed["state"]["agent_states"]["wanda"]["message_buffer"] == {"$refs": [0, 1, 2]}
    assert len(json.dumps(packed)) < len(json.dumps(state))


def test_a_state_saved_before_packing_is_used_as_it_is() -> None:
    state = team_state()
    assert unpack(state) == state
    assert unpack({"llm_context": {"messages": [], "token_counts": []}}) == {
        "llm_context": {"messages": [], "token_counts": []}
    }


def test_the_encoded_state_is_json_with_datetimes_as_text() -> None:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    state = {"agent_states": {"amy": {"message_buffer": [{**message("hi"), "created_at": at}]}}}
    decoded = unpack(json.loads(encode(state)))
    buffered = decoded["agent_states"]["amy"]["message_buffer"][0]
    assert datetime.fromisoformat(buffered["created_at"]) == at
    assert buffered["content"] == "hi"


def test_lists_that_hold_something_other_than_messages_are_kept() -> None:
    state = {"messages": ["plain", 7, None], "other": [message("x"), message("x")]}
    packed = pack(state)
    assert packed["messages"] == []  # nothing in a message list was a dumped message
    assert packed["state"] == state
    assert unpack(packed) == state
    assert unpack(pack({"messages": [], "message_buffer": 3})) == {
        "messages": [],
        "message_buffer": 3,
    }


def test_a_state_orjson_refuses_is_still_encoded() -> None:
    state = {"agent_states": {"amy": {"counter": 2**70, "message_buffer": [message("hi")]}}}
    assert unpack(json.loads(encode(state))) == state
