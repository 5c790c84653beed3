"""Pages of list answers cut to the message limit: a page of large items (long agent
messages, many labels) ends early, with a next page token, instead of failing as an answer
over `max_message_bytes`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# What an answer keeps free of its items, for everything around them (page token, tags).
ENVELOPE_BYTES = 16 * 1024


def item_bytes(message: Message) -> int:
    """The message's size as an element of a repeated field: tag, length, message."""
    size = message.ByteSize()
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def fitting(items: Sequence[Message], budget: int) -> int:
    """How many of `items`, from the first, fit in `budget` bytes of a repeated field;
    at least one, so that a list always moves on."""
    total = 0
    for count, item in enumerate(items):
        total += item_bytes(item)
        if total > budget and count > 0:
            return count
    return len(items)


class FittingPage(Generic[T, M]):
    """The `fits` of a domain list call: converts the page's items to messages, in order,
    while they fit in one answer (the first always goes); `messages` holds them after.
    `shrink` makes an item that is over the budget on its own fit it (else such an item
    makes the answer too large)."""

    def __init__(
        self,
        convert: Callable[[T], M],
        max_message_bytes: int,
        shrink: Callable[[M, int], M] | None = None,
    ) -> None:
        self.convert = convert
        self.shrink = shrink
        self.budget = max_message_bytes - ENVELOPE_BYTES
        self.messages: list[M] = []

    def __call__(self, items: Sequence[T]) -> int:
        self.messages = []
        used = 0
        for item in items:
            message = self.convert(item)
            if self.shrink is not None:
                message = self.shrink(message, self.budget)
            used += item_bytes(message)
            if self.messages and used > self.budget:
                break
            self.messages.append(message)
        return len(self.messages)
