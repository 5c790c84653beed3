"""What the SDK asks for when it re-attaches to a conversation's events after a broken
stream (the server side of re-attaching is tested with the conversations)."""

from __future__ import annotations

from convergio import _runtime
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.conversations import _EventResumer

_SERVICE = "/convergio.conversation.v1.ConversationService/"


def _event(sequence: int, turn_id: str) -> pb.SendMessageResponse:
    return pb.SendMessageResponse(
        event=events_pb2.ConversationEvent(sequence=sequence, turn_id=turn_id)
    )


def test_a_send_re_attaches_to_its_turn_after_the_last_event_with_its_policy() -> None:
    send = _runtime.Method(
        _SERVICE + "SendMessage", pb.SendMessageRequest, pb.SendMessageResponse, idempotent=True
    )
    request = pb.SendMessageRequest(
        conversation_id="c1", content="Hi", on_disconnect=pb.DISCONNECT_POLICY_CANCEL
    )
    resumer = _EventResumer(send, request)
    # Before any event of the turn: the same request again (its request_id re-attaches).
    resumed = resumer.resume()
    assert resumed is not None and resumed[1] is request
    resumer.observe(_event(7, "t1"))
    resumer.observe(_event(0, ""))  # a heartbeat moves nothing
    resumer.observe(_event(8, "t1"))
    resumed = resumer.resume()
    assert resumed is not None
    method, again = resumed
    assert method.name.endswith("/StreamEvents")
    assert again == pb.StreamEventsRequest(
        conversation_id="c1",
        after_sequence=8,
        turn_id="t1",
        on_disconnect=pb.DISCONNECT_POLICY_CANCEL,
    )


def test_a_follow_re_attaches_with_what_it_asked_for() -> None:
    follow = _runtime.Method(
        _SERVICE + "StreamEvents", pb.StreamEventsRequest, pb.StreamEventsResponse, idempotent=True
    )
    request = pb.StreamEventsRequest(
        conversation_id="c1",
        after_sequence=3,
        turn_id="t1",
        mode=pb.STREAM_EVENTS_MODE_FOLLOW,
        on_disconnect=pb.DISCONNECT_POLICY_CANCEL,
    )
    resumer = _EventResumer(follow, request)
    resumer.observe(pb.StreamEventsResponse(event=events_pb2.ConversationEvent(sequence=5)))
    resumed = resumer.resume()
    assert resumed is not None
    assert resumed[1] == pb.StreamEventsRequest(
        conversation_id="c1",
        after_sequence=5,
        turn_id="t1",
        mode=pb.STREAM_EVENTS_MODE_FOLLOW,
        on_disconnect=pb.DISCONNECT_POLICY_CANCEL,
    )
