"""A team's saved state, stored with each message once.

AutoGen saves every member's memory and every buffer of messages heard whole: in a team of
eight, the same message is saved up to ten times (the group's thread, the buffer of each
member that has not spoken since, and the memory of each that has). Packed, the state holds
each distinct message once, and in place of each list of messages `{"$refs": [indexes]}`;
unpacking gives back the same state. A state saved before packing existed (no marker) is
used as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

# The lists of dumped messages in AutoGen's saved states: a model context's memory, a
# member's buffer of messages heard, a group chat manager's thread.
_MESSAGE_LISTS = frozenset({"messages", "message_buffer", "message_thread"})
_MARKER = "convergio_packed"
_REFS = "$refs"
_VERSION = 1


def pack(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state with each distinct message of its message lists once."""
    messages: list[Any] = []
    index: dict[bytes, int] = {}

    def ref(message: Mapping[str, Any]) -> int:
        key = orjson.dumps(message, default=str, option=orjson.OPT_NON_STR_KEYS)
        found = index.get(key)
        if found is None:
            found = index[key] = len(messages)
            messages.append(message)
        return found

    def refs(item: Any) -> Any:
        if isinstance(item, list) and all(isinstance(m, Mapping) for m in item):
            return {_REFS: [ref(m) for m in item]}
        return walk(item)  # not a list of dumped messages: kept as it is

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                key: refs(item) if key in _MESSAGE_LISTS else walk(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    packed = walk(state)
    return {_MARKER: _VERSION, "messages": messages, "state": packed}


def unpack(stored: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state that `pack` was given (a state saved unpacked is returned as it is)."""
    if stored.get(_MARKER) != _VERSION:
        return stored
    messages: list[Any] = stored["messages"]

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: [messages[i] for i in item[_REFS]]
                if key in _MESSAGE_LISTS and isinstance(item, dict) and _REFS in item
                else walk(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    state: Mapping[str, Any] = walk(stored["state"])
    return state


def encode(state: Mapping[str, Any]) -> str:
    """The state packed, as JSON (what the state holds beyond JSON, such as datetimes, as
    text)."""
    packed = pack(state)
    try:
        return orjson.dumps(packed, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        # What orjson refuses and the standard encoder takes (integers beyond 64 bits).
        return json.dumps(packed, default=str)
