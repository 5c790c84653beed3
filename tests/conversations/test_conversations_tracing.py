"""Traces an operator's collector receives: a caller's trace goes on through its
SendMessage call, the turn it started and the turn's model and tool calls, with what each
did; a call without a sampled trace is sampled at the configured ratio (0 here: not at
all)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from convergio import AsyncClient
from convergio.conversation.v1 import events_pb2
from convergio_server.config import Settings
from opentelemetry.sdk.trace import TracerProvider

from tests.conversations.conftest import FINANCE_QUESTION, collect, member_key, new_conversation
from tests.platform.procs import free_port
from tests.support.otlp_collector import otlp_collector
from tests.support.server import running_server, server_settings

SEND = "convergio.conversation.v1.ConversationService/SendMessage"
SERVER, CLIENT = 2, 3  # OTLP span kinds


async def test_a_turn_is_traced_under_the_callers_trace(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_collector() as collector:
        settings = server_settings(
            tmp_path,
            pg_dsn,
            redis_url,
            redis_prefix,
            traces_endpoint=collector.url,
            traces_sample_ratio=0.0,
        )
        async with running_server(settings) as running:
            async with AsyncClient(running.target, api_key=await member_key(running)) as client:
                cid = await new_conversation(client)
                traced = await collect(
                    client.conversations.send(
                        cid,
                        FINANCE_QUESTION,
                        metadata=[("traceparent", f"00-{trace_id}-{caller_span}-01")],
                    )
                )
                untraced = await collect(client.conversations.send(cid, "And the risks?"))
                # A caller that traces with OpenTelemetry: the SDK sends its current span.
                caller = TracerProvider().get_tracer("caller")
                with caller.start_as_current_span("caller's work") as work:
                    await collect(client.conversations.send(cid, "And next year?"))
        # The server sent what it still held as it stopped.
        spans = list(collector.spans)

    done = traced[-1].turn_completed
    work_trace = format(work.get_span_context().trace_id, "032x")
    (joined,) = [s for s in spans if s.name == SEND and s.trace_id == work_trace]
    assert joined.parent_span_id == format(work.get_span_context().span_id, "016x")
    assert any(s.name == "turn" and s.parent_span_id == joined.span_id for s in spans)
    spans = [s for s in spans if s.trace_id == trace_id]
    (call,) = [s for s in spans if s.name == SEND]
    assert (call.trace_id, call.parent_span_id, call.kind) == (trace_id, caller_span, SERVER)
    assert call.attributes["rpc.system"] == "grpc"
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert call.resource["service.name"] == "convergio"
    (turn,) = [s for s in spans if s.name == "turn"]
    assert (turn.trace_id, turn.parent_span_id) == (trace_id, call.span_id)
    assert turn.attributes["convergio.turn_id"] == traced[-1].turn_id
    assert turn.attributes["convergio.conversation_id"] == cid
    assert turn.attributes["convergio.stop_reason"] == "COMPLETED"
    assert turn.attributes["gen_ai.usage.output_tokens"] == done.usage.completion_tokens
    assert turn.attributes["gen_ai.usage.input_tokens"] == done.usage.prompt_tokens
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == done.usage.model_calls == 2  # the tool-choosing call and the answer
    for chat in chats:
        assert (chat.trace_id, chat.parent_span_id, chat.kind) == (trace_id, turn.span_id, CLIENT)
        assert chat.attributes["gen_ai.system"] == "offline"
        assert chat.attributes["convergio.agent"] == "amy"
        assert chat.attributes["convergio.outcome"] == "OK"
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == (
        done.usage.completion_tokens
    )
    tools = [e.tool_result for e in traced if e.HasField("tool_result")]
    assert tools
    executed = [s for s in spans if s.name.startswith("execute_tool ")]
    assert [s.attributes["gen_ai.tool.name"] for s in executed] == [t.tool for t in tools]
    for span in executed:
        assert (span.trace_id, span.parent_span_id) == (trace_id, turn.span_id)
        assert span.attributes["convergio.attempts"] == 1
    # The second turn came without a trace, at a sample ratio of 0: no span of it.
    assert untraced[-1].HasField("turn_completed")
    assert {s.trace_id for s in collector.spans} == {trace_id, work_trace}


def test_a_traces_endpoint_that_is_no_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an OTLP/HTTP URL"):
        Settings.model_validate({"data_dir": tmp_path, "traces_endpoint": "collector:4318"})


async def test_a_collector_that_is_down_costs_the_calls_nothing(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    settings = server_settings(
        tmp_path,
        pg_dsn,
        redis_url,
        redis_prefix,
        traces_endpoint=f"http://127.0.0.1:{free_port()}/v1/traces",  # nothing listens
        connect_timeout_seconds=1.0,
    )
    async with running_server(settings) as running:
        async with AsyncClient(running.target, api_key=await member_key(running)) as client:
            cid = await new_conversation(client)
            events = await collect(client.conversations.send(cid, FINANCE_QUESTION))
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
