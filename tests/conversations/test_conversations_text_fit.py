"""Events and listed messages cut to the message limit: they fit, say that they were cut,
and keep whole characters; what fits is left alone."""

from __future__ import annotations

from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.api.text_fit import MARGIN_BYTES, fit_event, fit_message, surely_fits

LIMIT = 256 * 1024


def test_an_event_over_the_limit_is_cut_to_fit_with_a_note() -> None:
    text = "é" * 200_000  # 400,000 bytes of two-byte characters
    event = events_pb2.ConversationEvent(conversation_id="c", turn_id="t", sequence=7)
    event.message_completed.message_id = "m"
    event.message_completed.content = text
    fitted = fit_event(event, LIMIT)
    content = fitted.message_completed.content
    assert fitted.ByteSize() <= LIMIT
    assert content.startswith("é" * 1000)
    assert content.endswith("the transcript keeps the whole text]")
    assert "400,000 bytes" in content
    assert set(content.split("\n[cut")[0]) == {"é"}  # no character split in two
    assert fitted.sequence == 7 and fitted.message_completed.message_id == "m"


def test_what_fits_is_left_alone() -> None:
    event = events_pb2.ConversationEvent(sequence=1)
    event.token_delta.text = "hello"
    assert fit_event(event, LIMIT).token_delta.text == "hello"
    message = pb.Message(message_id="m", content="x" * 1000)
    assert fit_message(message, LIMIT).content == "x" * 1000


def test_a_listed_message_over_its_page_budget_is_cut() -> None:
    message = pb.Message(message_id="m", content="x" * 300_000)
    fitted = fit_message(message, LIMIT)
    assert fitted.ByteSize() <= LIMIT
    assert "[cut: 300,000 bytes" in fitted.content


def test_a_delta_said_to_fit_without_measuring_does_fit() -> None:
    # The server skips measuring token deltas that `surely_fits`: the worst case (four-byte
    # characters, long names) must still fit, and a delta that could not is measured.
    longest = next(n for n in range(LIMIT, 0, -1) if surely_fits("😀" * n, LIMIT))
    event = events_pb2.ConversationEvent(conversation_id="c" * 36, turn_id="t" * 36)
    event.sequence = 2**62
    event.event_time.GetCurrentTime()
    event.token_delta.message_id = "m" * 36
    event.token_delta.agent = "a" * 64
    event.token_delta.text = "😀" * longest
    assert event.ByteSize() <= LIMIT - MARGIN_BYTES
    assert not surely_fits("😀" * (longest + 1), LIMIT)
    assert not surely_fits("x" * LIMIT, LIMIT)
