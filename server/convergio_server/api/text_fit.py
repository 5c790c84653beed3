"""Texts cut to the message limit. A model may answer hundreds of KiB (a caller may allow
up to a million output tokens) while an operator may set `max_message_bytes` as low as
256 KiB: an event or a listed message larger than that could not be sent at all, and a
client re-attaching or paging would meet it again, forever. Its text is cut to fit instead,
with a note that says so; the transcript keeps the whole text."""

from __future__ import annotations

from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2

# What a message keeps free around the text it carries (the response around the event,
# the page around the message, the note).
MARGIN_BYTES = 1024
# The text field of each event kind that can grow with what a model writes.
_EVENT_TEXT = {
    "token_delta": "text",
    "message_completed": "content",
    "tool_call": "arguments_json",
    "tool_result": "content",
    "turn_started": "content",
}


def _cut(text: str, over: int) -> str:
    data = text.encode()
    note = (
        f"\n[cut: {len(data):,} bytes of text in all, over this server's message limit "
        "(max_message_bytes); the transcript keeps the whole text]"
    )
    keep = max(0, len(data) - over - len(note.encode()))
    return data[:keep].decode(errors="ignore") + note


def surely_fits(text: str, max_message_bytes: int) -> bool:
    """Whether an event whose only long field is `text` fits without measuring it (a token
    delta, nearly always: measuring costs a serialization of its own)."""
    return len(text) * 4 + MARGIN_BYTES * 4 <= max_message_bytes


def fit_event(
    event: events_pb2.ConversationEvent, max_message_bytes: int
) -> events_pb2.ConversationEvent:
    """The event, its text cut when it would not fit in one message."""
    over = event.ByteSize() - (max_message_bytes - MARGIN_BYTES)
    if over <= 0:
        return event
    kind = event.WhichOneof("kind")
    field = _EVENT_TEXT.get(kind or "")
    if field is not None:
        body = getattr(event, str(kind))
        setattr(body, field, _cut(getattr(body, field), over))
    return event


def fit_message(message: pb.Message, budget: int) -> pb.Message:
    """The message, its content cut when it alone is over `budget` bytes (of a page)."""
    over = message.ByteSize() - (budget - MARGIN_BYTES)
    if over > 0:
        message.content = _cut(message.content, over)
    return message
