"""Conversations: tokens delivered per second, token delivery latency (the model generates
a token -> the client receives it), time to first token and memory per stream, with the
offline model at zero delay and paced at 50 tokens/s per stream, for 1, 50 and 200
concurrent conversations.

Baselines measured in the same run: a bare grpc.aio server streaming the same number of
messages of the same size to the same number of concurrent streams (throughput and
latency), and the offline model driven directly through an AutoGen AssistantAgent in this
process (time to first token without the platform). Server and clients share this process
and its event loop, for Convergio and for the baselines alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import psutil

from benchmarks.harness import BenchEnv, Result, percentile, running_convergio

AREA = "conversations"
PACE = 50.0  # tokens per second per stream in the paced runs
QUESTION = "Give me your view of next year's plan for the new product line."


@dataclass
class Run:
    """What the clients of one scenario saw."""

    tokens: int = 0
    deltas: int = 0
    delta_bytes: int = 0
    events: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)

    @property
    def tokens_per_delta(self) -> float:
        return self.tokens / self.deltas if self.deltas else 0.0


@contextlib.asynccontextmanager
async def _convergio(env: BenchEnv, pace: float) -> AsyncIterator[tuple[Any, str]]:
    """A Convergio server in this process and an admin key of the `bench` tenant with token
    streaming on."""
    from convergio import AsyncClient
    from convergio.flag.v1 import flag_pb2

    async with running_convergio(
        env,
        offline_tokens_per_second=pace,
        db_pool_max=20,
        # The benchmark measures streaming, not refusals.
        rate_limit_turns_per_minute=10_000_000,
        rate_limit_conversations_per_hour=10_000_000,
        cost_default_tenant_daily_usd="",
        cost_default_tenant_per_turn_usd="",
        cost_default_conversation_total_usd="",
    ) as server:
        _, key = await server.keys.create("bench", "bench", ["admin"])
        async with AsyncClient(server.address, api_key=key) as client:
            try:
                version = (await client.flags.get_flag(key="true_streaming")).flag.version
            except Exception:
                version = 0
            await client.flags.upsert_flag(
                flag=flag_pb2.Flag(
                    key="true_streaming", enabled=True, strategy=flag_pb2.FLAG_STRATEGY_ON
                ),
                expected_version=version,
            )
            for _ in range(200):
                if (await client.flags.evaluate_flag(key="true_streaming")).evaluation.value:
                    break
                await asyncio.sleep(0.05)
        yield server, key


async def _turns(target: str, key: str, n: int) -> Run:
    """One turn in each of n new single-agent conversations, all at once."""
    from convergio import AsyncClient
    from convergio.conversation.v1 import conversation_pb2 as pb

    run = Run()
    # Several channels, as several client processes would have.
    clients = [AsyncClient(target, api_key=key) for _ in range(max(1, n // 50))]
    try:
        ids = []
        for i in range(n):
            client = clients[i % len(clients)]
            created = await client.conversations.create_conversation(
                team=pb.Team(single_agent="amy")
            )
            ids.append((client, created.conversation.conversation_id))

        async def one(client: Any, cid: str) -> None:
            sent = time.perf_counter()
            first = True
            async for event in client.conversations.send(conversation_id=cid, content=QUESTION):
                now = time.time()
                run.events += 1
                if event.HasField("token_delta"):
                    if first:
                        run.ttft_ms.append((time.perf_counter() - sent) * 1000)
                        first = False
                    generated = event.event_time.seconds + event.event_time.nanos / 1e9
                    run.latencies_ms.append((now - generated) * 1000)
                    run.deltas += 1
                    run.delta_bytes += event.ByteSize()
                elif event.HasField("turn_completed"):
                    run.tokens += event.turn_completed.usage.completion_tokens

        started = time.perf_counter()
        await asyncio.gather(*(one(client, cid) for client, cid in ids))
        run.seconds = time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()
    return run


# ------------------------------------------------------------------ bare grpc.aio


async def _bare_handler(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size, interval = struct.unpack("!IId", request)
    start = time.monotonic()
    padding = b"x" * max(0, size - 8)
    for i in range(count):
        if interval:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield struct.pack("!d", time.time()) + padding


@contextlib.asynccontextmanager
async def _bare_server() -> AsyncIterator[str]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Bare",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                _bare_handler,
                request_deserializer=lambda b: b,
                response_serializer=lambda b: b,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0.2)


async def _bare(target: str, n: int, count: int, size: int, interval: float) -> Run:
    run = Run()
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, n // 50))]
    try:
        calls = [
            ch.unary_stream(
                "/bench.Bare/Stream",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            for ch in channels
        ]

        async def one(i: int) -> None:
            async for message in calls[i % len(calls)](struct.pack("!IId", count, size, interval)):
                sent = struct.unpack("!d", message[:8])[0]
                run.latencies_ms.append((time.time() - sent) * 1000)
                run.events += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        run.seconds = time.perf_counter() - started
    finally:
        for ch in channels:
            await ch.close()
    return run


# ------------------------------------------------------- direct AutoGen baseline


async def _direct_ttft(samples: int) -> list[float]:
    """Time to first token of the offline model through an AssistantAgent, no platform."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ModelClientStreamingChunkEvent
    from convergio_server.domain.agents.roster import Roster
    from convergio_server.domain.models.offline import OfflineChatCompletionClient

    spec = Roster.load().get("amy")
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        agent = AssistantAgent(
            "amy",
            OfflineChatCompletionClient(),
            system_message=spec.system_message,
            model_client_stream=True,
        )
        # Closed in this task when we stop at the first token (AutoGen's telemetry span
        # must not be closed by the garbage collector in another context).
        async with contextlib.aclosing(agent.run_stream(task=QUESTION)) as stream:
            async for item in stream:
                if isinstance(item, ModelClientStreamingChunkEvent):
                    out.append((time.perf_counter() - started) * 1000)
                    break
    return out


async def _ttft(target: str, key: str, samples: int) -> list[float]:
    """Time to first token of turns sent one after the other on one open channel."""
    from convergio import AsyncClient
    from convergio.conversation.v1 import conversation_pb2 as pb

    out: list[float] = []
    async with AsyncClient(target, api_key=key) as client:
        for _ in range(samples):
            cid = (
                await client.conversations.create_conversation(team=pb.Team(single_agent="amy"))
            ).conversation.conversation_id
            started = time.perf_counter()
            async for event in client.conversations.send(conversation_id=cid, content=QUESTION):
                if event.HasField("token_delta") and len(out) < samples:
                    out.append((time.perf_counter() - started) * 1000)
                    started = float("inf")
    return [t for t in out if t >= 0]


def _rss() -> int:
    gc.collect()
    return int(psutil.Process(os.getpid()).memory_info().rss)


async def _idle_streams(target: str, key: str, count: int) -> float:
    """Bytes of resident memory per extra StreamEvents stream re-attached to an idle
    conversation."""
    from convergio import AsyncClient
    from convergio.conversation.v1 import conversation_pb2 as pb

    async with AsyncClient(target, api_key=key) as client:
        cid = (
            await client.conversations.create_conversation(team=pb.Team(single_agent="amy"))
        ).conversation.conversation_id
        async for _ in client.conversations.send(conversation_id=cid, content="Hello"):
            pass
        # A first follower so that the per-conversation reader exists; then measure more.
        streams = [client.conversations.stream_events(conversation_id=cid, after_sequence=10**6)]
        await asyncio.sleep(0.5)
        before = _rss()
        for _ in range(count):
            streams.append(
                client.conversations.stream_events(conversation_id=cid, after_sequence=10**6)
            )
        await asyncio.sleep(1.5)
        after = _rss()
        for stream in streams:
            stream.cancel()
    return (after - before) / count


async def _active_memory(target: str, key: str, n: int) -> float:
    """Bytes of resident memory per active paced conversation, sampled mid-turn."""
    before = _rss()
    task = asyncio.ensure_future(_turns(target, key, n))
    peak = before
    while not task.done():
        await asyncio.sleep(0.25)
        peak = max(peak, _rss())
    await task
    return (peak - before) / n


async def run(env: BenchEnv) -> list[Result]:
    counts = (1, 10) if env.quick else (1, 50, 200)
    results: list[Result] = []
    runs: dict[tuple[float, int], Run] = {}
    # Paced first: memory is measured before the big zero-delay runs grow the heap.
    for pace in (PACE, 0.0):
        async with _convergio(env, pace) as (server, key):
            target = server.address
            await _turns(target, key, 2)  # warm up: connections, caches, the roster
            if pace:
                active = await _active_memory(target, key, counts[-1] if env.quick else 50)
                idle = await _idle_streams(target, key, 50 if env.quick else 200)
            for n in counts:
                runs[(pace, n)] = await _turns(target, key, n)
            if not pace:
                ttfts = await _ttft(target, key, 20)
    direct = await _direct_ttft(20)

    async with _bare_server() as bare_target:
        for (pace, n), measured in sorted(runs.items()):
            per_stream = max(1, round(measured.deltas / n))
            size = round(measured.delta_bytes / measured.deltas) if measured.deltas else 64
            interval = measured.tokens_per_delta / PACE if pace else 0.0
            bare = await _bare(bare_target, n, per_stream, size, interval)
            label = "paced 50 tok/s" if pace else "zero delay"
            tokens_per_s = measured.tokens / measured.seconds
            bare_tokens_per_s = bare.events / bare.seconds * measured.tokens_per_delta
            throughput_target = ""
            ok: bool | None = None
            if not pace and n == 50:
                throughput_target = ">= 0.5 x bare msgs/s x tokens/delta"
                ok = tokens_per_s >= 0.5 * bare_tokens_per_s
            results.append(
                Result(
                    AREA,
                    f"tokens/s delivered, {n} streams, {label}",
                    tokens_per_s,
                    "tok/s",
                    baseline=bare_tokens_per_s,
                    target=throughput_target,
                    ok=ok,
                    extra={
                        "tokens_per_delta": measured.tokens_per_delta,
                        "deltas": measured.deltas,
                        "delta_bytes": size,
                        "bare_messages_per_s": bare.events / bare.seconds,
                    },
                )
            )
            for pct in (50, 99):
                latency_target, latency_ok = "", None
                if pace and n == counts[-1] and pct == 99:
                    latency_target = "< 20 ms"
                    latency_ok = percentile(measured.latencies_ms, 99) < 20
                results.append(
                    Result(
                        AREA,
                        f"token delivery p{pct}, {n} streams, {label}",
                        percentile(measured.latencies_ms, pct),
                        "ms",
                        baseline=percentile(bare.latencies_ms, pct),
                        target=latency_target,
                        ok=latency_ok,
                    )
                )
    ttft = statistics.median(ttfts)
    direct_ttft = statistics.median(direct)
    results.append(
        Result(
            AREA,
            "time to first token p50, one turn at a time, zero delay",
            ttft,
            "ms",
            baseline=direct_ttft,
            extra={"baseline": "AssistantAgent.run_stream in process, no platform"},
        )
    )
    results.append(
        Result(
            AREA,
            "time to first token added by the platform, p50",
            ttft - direct_ttft,
            "ms",
            target="< 5 ms",
            ok=ttft - direct_ttft < 5,
        )
    )
    results.append(
        Result(
            AREA,
            "memory per active conversation (paced, server+client)",
            active / 1024,
            "KiB",
            target="< 5120 KiB",
            ok=active < 5 * 1024 * 1024,
        )
    )
    results.append(
        Result(
            AREA,
            "memory per extra idle re-attached stream",
            idle / 1024,
            "KiB",
            target="< 100 KiB",
            ok=idle < 100 * 1024,
        )
    )
    return results
