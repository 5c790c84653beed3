"""Conversation helpers on top of the generated facade: `send()` yields the events of a
turn, `follow()` those of a conversation (or of a turn someone else sent), and both survive
a broken connection.

    async for event in client.conversations.send(conversation_id=cid, content="Hi"):
        if event.HasField("token_delta"):
            print(event.token_delta.text, end="")

When the stream breaks with UNAVAILABLE after events were delivered, the client
re-attaches with StreamEvents(after_sequence = last sequence seen, turn_id) and goes on
where it stopped: no event twice, none missing. It keeps trying for the client's
`RetryPolicy.resume_window_seconds` from the break, so that a server restart is outlasted.
Before any event, SendMessage is simply retried with the same request_id, which the server
turns into a re-attach as well.

Both return a stream (`AsyncEventStream` / `EventStream`): leaving the loop early does not
end the call by itself; `cancel()` does, and so does leaving an `async with` / `with` block:

    async with client.conversations.send(conversation_id=cid, content="Hi") as events:
        async for event in events:
            break  # the call ends here (a turn sent with on_disconnect=CANCEL stops)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from google.protobuf.message import Message

from convergio import _runtime
from convergio._services import AsyncConversationService, ConversationService
from convergio.conversation.v1 import conversation_pb2 as _pb
from convergio.conversation.v1 import events_pb2 as _events_pb2

__all__ = ["AsyncConversations", "AsyncEventStream", "Conversations", "EventStream"]

_SERVICE = "/convergio.conversation.v1.ConversationService/"

# StreamEvents answered as SendMessageResponse: both responses are `{ConversationEvent
# event = 1}`, so the wire format is the same and a re-attached SendMessage stream keeps
# its response type.
_STREAM_EVENTS_AS_SEND = _runtime.Method(
    _SERVICE + "StreamEvents", _pb.StreamEventsRequest, _pb.SendMessageResponse, idempotent=True
)
_STREAM_EVENTS = _runtime.Method(
    _SERVICE + "StreamEvents", _pb.StreamEventsRequest, _pb.StreamEventsResponse, idempotent=True
)


class _EventResumer:
    """Remembers the last sequence and the turn seen on a SendMessage or StreamEvents
    stream, and continues it with StreamEvents after that sequence."""

    def __init__(self, method: _runtime.Method[Any, Any], request: Message) -> None:
        self.send = method.name.endswith("/SendMessage")
        self.request = request
        self.conversation_id: str = getattr(request, "conversation_id", "")
        self.turn_id: str = getattr(request, "turn_id", "")
        self.last: int = 0 if self.send else getattr(request, "after_sequence", 0)

    def observe(self, response: Message) -> None:
        event: _events_pb2.ConversationEvent = getattr(response, "event")  # noqa: B009
        if event.sequence > 0:  # heartbeats have 0
            self.last = event.sequence
            if self.send and not self.turn_id:
                self.turn_id = event.turn_id

    def resume(self) -> _runtime.Resumption | None:
        # The re-attached stream keeps the disconnect policy the turn was sent with (or the
        # one the followed stream asked for): CANCEL still holds if the caller goes away.
        on_disconnect: Any = getattr(self.request, "on_disconnect", 0)
        if self.send:
            if not self.turn_id:  # only heartbeats so far: the same request re-attaches
                return _runtime.Method(
                    _SERVICE + "SendMessage",
                    _pb.SendMessageRequest,
                    _pb.SendMessageResponse,
                    idempotent=True,
                ), self.request
            return _STREAM_EVENTS_AS_SEND, _pb.StreamEventsRequest(
                conversation_id=self.conversation_id,
                after_sequence=self.last,
                turn_id=self.turn_id,
                on_disconnect=on_disconnect,
            )
        mode: Any = getattr(self.request, "mode", 0)
        return _STREAM_EVENTS, _pb.StreamEventsRequest(
            conversation_id=self.conversation_id,
            after_sequence=self.last,
            turn_id=self.turn_id,
            mode=mode,
            on_disconnect=on_disconnect,
        )


_runtime.register_resumer(_SERVICE + "SendMessage", _EventResumer)
_runtime.register_resumer(_SERVICE + "StreamEvents", _EventResumer)


class AsyncConversations(AsyncConversationService):
    """The conversation facade of `AsyncClient`, with `send`."""

    def send(
        self,
        conversation_id: str,
        content: str,
        *,
        request_id: str | None = None,
        documents: Sequence[_pb.InputDocument] | None = None,
        on_disconnect: _pb.DisconnectPolicy.ValueType | None = None,
        if_busy: _pb.BusyPolicy.ValueType | None = None,
        max_turns: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> AsyncEventStream:
        """Send a message and yield the turn's events up to its TurnCompleted (heartbeats
        left out), re-attaching after a broken connection. Leaving the loop early leaves
        the call open: use the stream as an async context manager, or `cancel()` it."""
        stream = self.send_message(
            conversation_id=conversation_id,
            content=content,
            request_id=request_id,
            documents=documents,
            on_disconnect=on_disconnect,
            if_busy=if_busy,
            max_turns=max_turns,
            timeout=timeout,
            metadata=metadata,
        )
        return AsyncEventStream(stream)

    def follow(
        self,
        conversation_id: str,
        *,
        after_sequence: int = 0,
        turn_id: str | None = None,
        replay: bool = False,
        on_disconnect: _pb.DisconnectPolicy.ValueType = _pb.DISCONNECT_POLICY_UNSPECIFIED,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> AsyncEventStream:
        """Yield the conversation's events after `after_sequence` (heartbeats left out):
        those logged, then new ones as they happen, until the stream is cancelled (or its
        `async with` block left). With `turn_id`, only that turn's, ending after its
        TurnCompleted; with `replay`, only what is logged now. `on_disconnect` CANCEL (with
        `turn_id`): that turn is cancelled if this stream breaks before it ends, as for a
        turn sent with it (to re-attach to a turn one sent so). Re-attaches after a broken
        connection, as `send` does."""
        request = _follow_request(conversation_id, after_sequence, turn_id, replay, on_disconnect)
        return AsyncEventStream(self.stream_events(request, timeout=timeout, metadata=metadata))


class Conversations(ConversationService):
    """The conversation facade of `Client`, with `send`."""

    def send(
        self,
        conversation_id: str,
        content: str,
        *,
        request_id: str | None = None,
        documents: Sequence[_pb.InputDocument] | None = None,
        on_disconnect: _pb.DisconnectPolicy.ValueType | None = None,
        if_busy: _pb.BusyPolicy.ValueType | None = None,
        max_turns: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> EventStream:
        """Send a message and yield the turn's events; see `AsyncConversations.send`."""
        stream = self.send_message(
            conversation_id=conversation_id,
            content=content,
            request_id=request_id,
            documents=documents,
            on_disconnect=on_disconnect,
            if_busy=if_busy,
            max_turns=max_turns,
            timeout=timeout,
            metadata=metadata,
        )
        return EventStream(stream)

    def follow(
        self,
        conversation_id: str,
        *,
        after_sequence: int = 0,
        turn_id: str | None = None,
        replay: bool = False,
        on_disconnect: _pb.DisconnectPolicy.ValueType = _pb.DISCONNECT_POLICY_UNSPECIFIED,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> EventStream:
        """Yield the conversation's events; see `AsyncConversations.follow`."""
        request = _follow_request(conversation_id, after_sequence, turn_id, replay, on_disconnect)
        return EventStream(self.stream_events(request, timeout=timeout, metadata=metadata))


def _follow_request(
    conversation_id: str,
    after_sequence: int,
    turn_id: str | None,
    replay: bool,
    on_disconnect: _pb.DisconnectPolicy.ValueType,
) -> _pb.StreamEventsRequest:
    return _pb.StreamEventsRequest(
        conversation_id=conversation_id,
        after_sequence=after_sequence,
        turn_id=turn_id or "",
        mode=_pb.STREAM_EVENTS_MODE_REPLAY if replay else _pb.STREAM_EVENTS_MODE_FOLLOW,
        on_disconnect=on_disconnect,
    )


class AsyncEventStream(_runtime.AsyncCancelOnExit, AsyncIterator[_events_pb2.ConversationEvent]):
    """The events of `AsyncConversations.send` or `follow`, heartbeats left out.

    As the SDK's other streams: `cancel()` (or `aclose()`) ends the call, and so does
    leaving an `async with` block. Leaving an `async for` loop with `break` does not:
    the call stays open (a turn sent with on_disconnect=CANCEL goes on) until one of
    those, and iterating again goes on where the loop stopped.
    """

    def __init__(self, stream: _runtime.AsyncStream[Any]) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> _events_pb2.ConversationEvent:
        while True:
            response = await self._stream.__anext__()
            if not response.event.HasField("heartbeat"):
                event: _events_pb2.ConversationEvent = response.event
                return event

    def cancel(self) -> None:
        """End the call; iteration stops without an error."""
        self._stream.cancel()


class EventStream(_runtime.CancelOnExit, Iterator[_events_pb2.ConversationEvent]):
    """The events of `Conversations.send` or `follow`, heartbeats left out; the
    synchronous `AsyncEventStream`: `cancel()` / `close()`, or a `with` block, end the
    call, leaving a `for` loop does not."""

    def __init__(self, stream: _runtime.Stream[Any]) -> None:
        self._stream = stream

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> _events_pb2.ConversationEvent:
        while True:
            response = next(self._stream)
            if not response.event.HasField("heartbeat"):
                event: _events_pb2.ConversationEvent = response.event
                return event

    def cancel(self) -> None:
        """End the call; iteration stops without an error."""
        self._stream.cancel()
