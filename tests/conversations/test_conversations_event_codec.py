"""Events as the log stores them: a token delta, written out by hand on the hot path, is
the same JSON as the generic encoder makes, and decodes to the same event, whatever its
text holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from convergio_server.domain.events.model import TokenDelta, decode, encode

TEXTS = [
    "plain words ",
    'a "quoted" word, a back\\slash and a / slash',
    "new\nline\ttab\r\x00\x1f control",
    "accents: café, naïve; CJK: 計画; emoji: 🚀",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_delta_is_the_json_the_generic_encoder_makes(text: str) -> None:
    at = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    body = TokenDelta("m-1", "amy", text)
    raw = encode("conv-1", "turn-1", 42, at, body)
    assert (
        raw
        == json.dumps(
            {
                "c": "conv-1",
                "t": "turn-1",
                "s": 42,
                "ts": int(at.timestamp()) * 1_000_000 + at.microsecond,
                "k": "token_delta",
                "d": {"message_id": "m-1", "agent": "amy", "text": text},
            },
            separators=(",", ":"),
        ).encode()
    )
    event = decode(raw)
    assert event.body == body and event.sequence == 42 and event.event_time == at
    assert (event.conversation_id, event.turn_id) == ("conv-1", "turn-1")
