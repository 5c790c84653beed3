"""The turns' metrics an operator scrapes: how turns ended and how long they took, how soon
their first token came, the agents' messages, the model calls' tokens, and the tool results,
each matching what the clients were told; and the log line of each turn."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from convergio import AsyncClient
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    member_key,
    new_conversation,
    wait_streaming,
)
from tests.support.server import running_server, scrape_metrics, server_settings


def _sample(text: str, name: str, labels: str = "") -> float:
    """A sample's value (0 when absent: a counter not counted yet)."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    rows = [row for row in text.splitlines() if row.startswith(prefix)]
    return float(rows[0].split()[-1]) if rows else 0.0


def _grown(before: str, after: str, name: str, labels: str = "") -> float:
    # The metrics sum every runner of this process (other tests' servers too): compare.
    return _sample(after, name, labels) - _sample(before, name, labels)


def _grown_by(before: str, after: str, name: str, label: str) -> dict[str, float]:
    """How much a counter's samples grew, summed by the value of one of their labels."""

    def by(text: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for row in text.splitlines():
            if row.startswith(name + "{"):
                labels, value = row[len(name) + 1 :].rsplit("} ", 1)
                match = re.search(rf'(?:^|,){label}="([^"]*)"', labels)
                if match:
                    totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(value)
        return totals

    earlier, later = by(before), by(after)
    grown = {key: value - earlier.get(key, 0.0) for key, value in later.items()}
    return {key: value for key, value in grown.items() if value}


async def test_an_operator_sees_how_turns_went(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    settings = server_settings(
        tmp_path, pg_dsn, redis_url, redis_prefix, metrics=True, offline_tokens_per_second=60.0
    )
    address = settings.metrics_listen
    async with running_server(settings) as running:
        async with AsyncClient(running.target, api_key=await member_key(running)) as client:
            await wait_streaming(client)
            before = await asyncio.to_thread(scrape_metrics, address)
            # One turn completes, with a tool call.
            answered = await collect(
                client.conversations.send(await new_conversation(client), FINANCE_QUESTION)
            )
            # One is cancelled after its first token, and the one queued behind it too.
            cid = await new_conversation(client)
            cancelled_stream = client.conversations.send(cid, "Tell me about the plan.")
            cancelled = [await cancelled_stream.__anext__()]
            while not cancelled[-1].HasField("token_delta"):
                cancelled.append(await cancelled_stream.__anext__())
            queued = client.conversations.send(
                cid, "And the risks?", if_busy=pb.BUSY_POLICY_ENQUEUE
            )
            waiting = await queued.__anext__()
            assert waiting.HasField("turn_queued")
            await client.conversations.cancel_turn(conversation_id=cid, turn_id=waiting.turn_id)
            await client.conversations.cancel_turn(conversation_id=cid)
            cancelled += await collect(cancelled_stream)
            await collect(queued)
            after = await asyncio.to_thread(scrape_metrics, address)

    stops = [answered[-1].turn_completed, cancelled[-1].turn_completed]
    assert [s.stop_reason for s in stops] == [
        events_pb2.STOP_REASON_COMPLETED,
        events_pb2.STOP_REASON_CANCELLED,
    ]
    assert _grown(before, after, "convergio_turns_total", 'stop_reason="COMPLETED"') == 1
    assert _grown(before, after, "convergio_turns_total", 'stop_reason="CANCELLED"') == 2
    # The queued turn never ran: it has no duration and no first token.
    assert _grown(before, after, "convergio_turn_duration_seconds_count") == 2
    assert _grown(before, after, "convergio_turn_first_token_seconds_count") == 2
    # Both first tokens came within 30 s of their turn's admission.
    assert _grown(before, after, "convergio_turn_first_token_seconds_bucket", 'le="30.0"') == 2
    assert _grown(before, after, "convergio_model_tokens_total", 'kind="completion"') == sum(
        s.usage.completion_tokens for s in stops
    )
    assert _grown(before, after, "convergio_model_tokens_total", 'kind="prompt"') == sum(
        s.usage.prompt_tokens for s in stops
    )
    assert _grown(before, after, "convergio_model_calls_total") == sum(
        s.usage.model_calls for s in stops
    )
    messages = Counter(
        e.message_completed.agent for e in answered + cancelled if e.HasField("message_completed")
    )
    assert messages
    for agent, count in messages.items():
        assert _grown(before, after, "convergio_agent_messages_total", f'agent="{agent}"') == count
    tools = Counter(e.tool_result.tool for e in answered if e.HasField("tool_result"))
    assert tools
    for tool, count in tools.items():
        labels = f'result="ok",tool="{tool}"'
        assert _grown(before, after, "convergio_tool_results_total", labels) == count
    # The same calls by model: how they ended, how long they took, what they cost.
    by_outcome = _grown_by(before, after, "convergio_model_requests_total", "outcome")
    assert by_outcome["OK"] >= 1 and by_outcome["CANCELLED"] == 1  # the call cut short
    assert sum(by_outcome.values()) == sum(s.usage.model_calls for s in stops)
    assert sum(_grown_by(before, after, "convergio_model_requests_total", "model").values()) == (
        sum(by_outcome.values())
    )
    durations = _grown_by(before, after, "convergio_model_request_duration_seconds_count", "model")
    assert sum(durations.values()) == sum(by_outcome.values())
    assert re.search(r'^convergio_model_cost_usd_total\{[^}]*provider="offline"', after, re.M)
    costs = _grown_by(before, after, "convergio_model_cost_usd_total", "provider")
    assert sum(costs.values()) == pytest.approx(
        _grown(before, after, "convergio_turn_cost_usd_total")
    )


async def test_each_turn_that_ends_is_one_log_line(
    conv: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="convergio.turns")
    cid = await new_conversation(conv)
    events = await collect(conv.conversations.send(cid, FINANCE_QUESTION))
    ended = events[-1].turn_completed
    (record,) = [r for r in caplog.records if getattr(r, "turn", None) == events[-1].turn_id]
    assert record.name == "convergio.turns" and record.levelno == logging.INFO
    fields = record.__dict__
    assert fields["conversation"] == cid
    assert fields["stop_reason"] == "COMPLETED"
    assert fields["messages"] == ended.message_count
    assert fields["model_calls"] == ended.usage.model_calls
    assert fields["prompt_tokens"] == ended.usage.prompt_tokens
    assert fields["completion_tokens"] == ended.usage.completion_tokens
    assert 0 < fields["first_token_ms"] <= fields["duration_ms"]
