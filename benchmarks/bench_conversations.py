"""Conversations: tokens delivered per second, token delivery latency (the model generates
a token -> the client receives it), time to first token and memory per stream, with the
offline model at zero delay and paced at 50 tokens/s per stream, for 1, 50 and 200
concurrent conversations.

Baselines measured in the same run: a bare grpc.aio server streaming the same number of
token-delta events of the same size to the same number of concurrent streams, which the
clients decode and time as they do the platform's (throughput and latency), and the offline
model driven directly through an AutoGen AssistantAgent in this
process (time to first token without the platform). Convergio (`convergio serve`) and the
bare server each run in a process of their own on uvloop, as a server runs in production;
the clients of both run in this process, on uvloop too. Memory is the server process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psutil
from convergio.conversation.v1 import events_pb2

from benchmarks.harness import BenchEnv, Result, percentile

AREA = "conversations"
PACE = 50.0  # tokens per second per stream in the paced runs
QUESTION = "Give me your view of next year's plan for the new product line."
# Answers of this many tokens at least in the scenario that measures streaming alone: the
# turn's fixed cost then weighs little next to its tokens.
LONG_ANSWER_TOKENS = 600
# The paced scenario that measures streaming between turns: answers this long (6 s at 50
# tokens/s), timed once every turn has started and before any has ended.
STEADY_ANSWER_TOKENS = 300
# Turns of the one conversation with the core team whose later turns' first token is timed.
LONG_TEAM_TURNS = 30
# The scenario of conversations that go on times the turn after this many.
CONTINUED_AFTER = 4
# Channels of one process to the same address share one connection unless each has a
# subchannel pool of its own (then it has its own connection, as a client process would).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


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
    server_cpu_seconds: float = 0.0  # of the server process, all its threads
    redis_cpu_seconds: float = 0.0  # of the Redis server the platform uses
    # With `steady`: each delta as (received at, latency ms), when each stream got its first
    # delta and its end, and the server's CPU seconds sampled as (at, seconds).
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    first_deltas: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def tokens_per_delta(self) -> float:
        return self.tokens / self.deltas if self.deltas else 0.0

    @property
    def bytes_per_delta(self) -> int:
        return round(self.delta_bytes / self.deltas) if self.deltas else 64


@dataclass
class RedisServer:
    """The Redis server of a run, when it runs on this machine (else pid None)."""

    pid: int | None
    version: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read_until(process: subprocess.Popen[str], marker: str) -> str:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise RuntimeError(f"server exited before printing {marker!r}: {''.join(seen)}")


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _redis_server(env: BenchEnv, data_dir: Path) -> RedisServer:
    """The Redis server that `convergio serve` uses, with its pid when it runs on
    this machine: the one of REDIS_URL, or the embedded one under `data_dir`."""
    if env.redis_url:
        import redis

        client = redis.Redis.from_url(env.redis_url)
        try:
            info = client.info("server")
        finally:
            client.close()
        pid: int | None = int(info["process_id"])
        try:  # a Redis on another machine: a local process of that pid is someone else
            if "redis" not in psutil.Process(pid).name():
                pid = None
        except psutil.Error:
            pid = None
        return RedisServer(pid, str(info["redis_version"]))
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "redis-server" in (process.info["name"] or "") and str(data_dir) in cmdline:
            version = subprocess.run(
                [process.exe(), "--version"], capture_output=True, text=True, check=False
            ).stdout
            found = next((w[2:] for w in version.split() if w.startswith("v=")), "")
            return RedisServer(process.pid, found)
    return RedisServer(None, "")


def _spawn(args: list[str], **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, **options)


@contextlib.asynccontextmanager
async def _convergio(
    env: BenchEnv, pace: float, answer_tokens: int = 0
) -> AsyncIterator[tuple[int, str, str, RedisServer]]:
    """`convergio serve` in a process of its own, as it runs in production, on the run's
    stores; yields its pid, address, an admin key of a new tenant with token streaming
    on, and the Redis server it uses."""
    from convergio import AsyncClient
    from convergio.flag.v1 import flag_pb2

    port = _free_port()
    data_dir = env.data_dir / f"serve-{port}"
    data_dir.mkdir(parents=True)
    settings = {
        "CONVERGIO_LISTEN": f"127.0.0.1:{port}",
        "CONVERGIO_DATA_DIR": str(data_dir),
        # A tenant of its own, so that the first start prints a new admin key for it.
        "CONVERGIO_DEV_TENANT": f"bench-{secrets.token_hex(4)}",
        "CONVERGIO_REDIS_PREFIX": f"cvgbench:{secrets.token_hex(4)}",
        "CONVERGIO_LOG_LEVEL": "WARNING",
        "CONVERGIO_OFFLINE_TOKENS_PER_SECOND": str(pace),
        "CONVERGIO_OFFLINE_MIN_ANSWER_TOKENS": str(answer_tokens),
        "CONVERGIO_DB_POOL_MAX": "20",
        # The benchmark measures streaming, not refusals.
        "CONVERGIO_RATE_LIMIT_TURNS_PER_MINUTE": "10000000",
        "CONVERGIO_RATE_LIMIT_CONVERSATIONS_PER_HOUR": "10000000",
        "CONVERGIO_COST_DEFAULT_TENANT_DAILY_USD": "",
        "CONVERGIO_COST_DEFAULT_TENANT_PER_TURN_USD": "",
        "CONVERGIO_COST_DEFAULT_CONVERSATION_TOTAL_USD": "",
    }
    if env.database_url:
        settings["DATABASE_URL"] = env.database_url
    if env.redis_url:
        settings["REDIS_URL"] = env.redis_url
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    with (data_dir / "serve.log").open("w") as log:
        process = _spawn(
            [str(Path(sys.executable).parent / "convergio"), "serve"],
            env={**environ, **settings},
            stderr=log,
        )
        try:
            banner = await asyncio.to_thread(_read_until, process, "grpcurl")
            key = next(w for w in banner.split() if w.startswith("cvg_"))
            address = f"127.0.0.1:{port}"
            async with AsyncClient(address, api_key=key) as client:
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
            yield process.pid, address, key, _redis_server(env, data_dir)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _turns(
    target: str,
    key: str,
    n: int,
    pid: int | None = None,
    redis_pid: int | None = None,
    *,
    steady: bool = False,
    earlier_turns: int = 0,
) -> Run:
    """One turn in each of n new single-agent conversations, all at once (with `pid` and
    `redis_pid`, the CPU time of the server and of Redis while they stream; with `steady`,
    what `_steady_window` needs; with `earlier_turns`, the conversations had that many
    turns before, untimed)."""
    from convergio import AsyncClient
    from convergio.conversation.v1 import conversation_pb2 as pb

    run = Run()
    # A connection per 50 streams, as several client processes would have.
    clients = [
        AsyncClient(target, api_key=key, options=OWN_CONNECTION) for _ in range(max(1, n // 50))
    ]
    try:
        ids = []
        for i in range(n):
            client = clients[i % len(clients)]
            created = await client.conversations.create_conversation(
                team=pb.Team(single_agent="amy")
            )
            ids.append((client, created.conversation.conversation_id))

        async def converse(client: Any, cid: str) -> None:
            for turn in range(earlier_turns):
                async for _ in client.conversations.send(cid, f"Turn {turn}. {QUESTION}"):
                    pass

        await asyncio.gather(*(converse(client, cid) for client, cid in ids))

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
                        if steady:
                            run.first_deltas.append(now)
                    generated = event.event_time.seconds + event.event_time.nanos / 1e9
                    run.latencies_ms.append((now - generated) * 1000)
                    if steady:
                        run.arrivals.append((now, run.latencies_ms[-1]))
                    run.deltas += 1
                    run.delta_bytes += event.ByteSize()
                elif event.HasField("turn_completed"):
                    run.tokens += event.turn_completed.usage.completion_tokens
                    if steady:
                        run.ends.append(now)

        async def sample_cpu(server: int) -> None:
            while True:
                run.cpu_samples.append((time.time(), _cpu_seconds(server)))
                await asyncio.sleep(0.1)

        cpu = _cpu_seconds(pid) if pid else 0.0
        redis_cpu = _cpu_seconds(redis_pid) if redis_pid else 0.0
        sampler = asyncio.create_task(sample_cpu(pid)) if steady and pid else None
        started = time.perf_counter()
        try:
            await asyncio.gather(*(one(client, cid) for client, cid in ids))
        finally:
            if sampler is not None:
                sampler.cancel()
        run.seconds = time.perf_counter() - started
        run.server_cpu_seconds = _cpu_seconds(pid) - cpu if pid else 0.0
        run.redis_cpu_seconds = _cpu_seconds(redis_pid) - redis_cpu if redis_pid else 0.0
    finally:
        for client in clients:
            await client.close()
    return run


@dataclass
class Window:
    """Streaming between turns: what arrived after every stream had its first delta and
    before any stream ended."""

    seconds: float
    latencies_ms: list[float]
    server_cpu_us_per_delta: float


def _steady_window(run: Run, margin: float = 0.25) -> Window | None:
    if not run.first_deltas or not run.ends:
        return None
    start, end = max(run.first_deltas) + margin, min(run.ends) - margin
    inside = [latency for at, latency in run.arrivals if start <= at <= end]
    samples = [(at, cpu) for at, cpu in run.cpu_samples if start <= at <= end]
    if end - start < 1.0 or len(samples) < 2 or not inside:
        return None  # the turns took too long to start: no window to time
    (first_at, first_cpu), (last_at, last_cpu) = samples[0], samples[-1]
    counted = sum(1 for at, _ in run.arrivals if first_at <= at <= last_at)
    return Window(
        seconds=end - start,
        latencies_ms=inside,
        server_cpu_us_per_delta=(last_cpu - first_cpu) / max(1, counted) * 1e6,
    )


# ------------------------------------------------------------------ bare grpc.aio


@contextlib.asynccontextmanager
async def _bare_server() -> AsyncIterator[tuple[int, str]]:
    process = _spawn([sys.executable, "-m", "benchmarks.bare_server"], stdin=subprocess.PIPE)
    try:
        banner = await asyncio.to_thread(_read_until, process, "listening on")
        yield process.pid, banner.split()[-1]
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()


async def _bare(target: str, pid: int, n: int, like: Run, interval: float) -> Run:
    """n bare streams, each of as many messages, of the same mean size, as each of the n
    streams of `like` delivered."""
    count, size = max(1, round(like.deltas / n)), like.bytes_per_delta
    run = Run()
    channels = [
        grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(max(1, n // 50))
    ]
    try:
        calls = [
            ch.unary_stream(
                "/bench.Bare/Stream",
                request_serializer=lambda b: b,
                response_deserializer=events_pb2.ConversationEvent.FromString,
            )
            for ch in channels
        ]

        async def one(i: int) -> None:
            # Read as the platform's clients read theirs: decoded, timed by event_time.
            async for event in calls[i % len(calls)](struct.pack("!IId", count, size, interval)):
                now = time.time()
                if event.HasField("token_delta"):
                    sent = event.event_time.seconds + event.event_time.nanos / 1e9
                    run.latencies_ms.append((now - sent) * 1000)
                run.events += 1

        cpu = _cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        run.seconds = time.perf_counter() - started
        run.server_cpu_seconds = _cpu_seconds(pid) - cpu
    finally:
        for ch in channels:
            await ch.close()
    return run


# ------------------------------------------------------- direct AutoGen baseline


async def _direct_ttft(samples: int, pace: float = 0.0) -> list[float]:
    """Time to first token of the offline model (at `pace` tokens/s, 0 = no delay) through
    an AssistantAgent, no platform."""
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
            OfflineChatCompletionClient(tokens_per_second=pace),
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


async def _first_token_ms(client: Any, cid: str, content: str) -> float | None:
    """Send one turn and read it to its end: ms from sending to its first token delta."""
    started = time.perf_counter()
    first: float | None = None
    async for event in client.conversations.send(conversation_id=cid, content=content):
        if first is None and event.HasField("token_delta"):
            first = (time.perf_counter() - started) * 1000
    return first


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
            first = await _first_token_ms(client, cid, QUESTION)
            if first is not None:
                out.append(first)
    return out


async def _long_team(target: str, key: str, turns: int) -> list[float]:
    """Time to first token of each turn of one conversation with the core team: what a
    longer history costs (the team's saved state restored, the context read)."""
    from convergio import AsyncClient
    from convergio.conversation.v1 import conversation_pb2 as pb

    out: list[float] = []
    async with AsyncClient(target, api_key=key) as client:
        cid = (
            await client.conversations.create_conversation(team=pb.Team(preset="core"))
        ).conversation.conversation_id
        for turn in range(turns):
            first = await _first_token_ms(client, cid, f"Turn {turn}. {QUESTION}")
            out.append(first if first is not None else float("nan"))
    return out


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def _idle_streams(pid: int, target: str, key: str, count: int) -> float:
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
        before = _rss(pid)
        for _ in range(count):
            streams.append(
                client.conversations.stream_events(conversation_id=cid, after_sequence=10**6)
            )
        await asyncio.sleep(1.5)
        after = _rss(pid)
        for stream in streams:
            stream.cancel()
    return (after - before) / count


async def _active_memory(pid: int, target: str, key: str, n: int) -> float:
    """Bytes of the server's resident memory per active paced conversation, at its peak."""
    before = _rss(pid)
    task = asyncio.ensure_future(_turns(target, key, n))
    peak = before
    while not task.done():
        await asyncio.sleep(0.25)
        peak = max(peak, _rss(pid))
    await task
    return (peak - before) / n


def _throughput(name: str, measured: Run, bare: Run, n: int, **extra: float) -> Result:
    """Tokens per second delivered in `n` streams, against the bare server's messages per
    second times the tokens per delta."""
    return Result(
        AREA,
        name,
        measured.tokens / measured.seconds,
        "tok/s",
        baseline=bare.events / bare.seconds * measured.tokens_per_delta,
        extra={
            "tokens_per_delta": measured.tokens_per_delta,
            "server_cpu_ms_per_turn": measured.server_cpu_seconds / n * 1000,
            "bare_messages_per_s": bare.events / bare.seconds,
            **extra,
        },
    )


async def run(env: BenchEnv) -> list[Result]:
    counts = (1, 10) if env.quick else (1, 50, 200)
    results: list[Result] = []
    runs: dict[tuple[float, int], Run] = {}
    redis_version = ""
    # Paced first: memory is measured before the big zero-delay runs grow the heap.
    for pace in (PACE, 0.0):
        async with _convergio(env, pace) as (pid, target, key, redis_server):
            redis_version = redis_server.version
            await _turns(target, key, 2)  # warm up: connections, caches, the roster
            if pace:
                active = await _active_memory(pid, target, key, counts[-1] if env.quick else 50)
                idle = await _idle_streams(pid, target, key, 50 if env.quick else 200)
            for n in counts:
                runs[(pace, n)] = await _turns(target, key, n, pid, redis_server.pid)
            if pace:
                paced_ttfts = await _ttft(target, key, 5 if env.quick else 10)
            else:
                ttfts = await _ttft(target, key, 20)
                team_ttfts = await _long_team(target, key, LONG_TEAM_TURNS)
    long_n = counts[-1] if env.quick else 50
    async with _convergio(env, 0.0, LONG_ANSWER_TOKENS) as (pid, target, key, _):
        await _turns(target, key, 2)
        long_run = await _turns(target, key, long_n, pid)
    async with _convergio(env, 0.0) as (pid, target, key, _):
        await _turns(target, key, 2)
        continued = await _turns(target, key, long_n, pid, earlier_turns=CONTINUED_AFTER)
    async with _convergio(env, PACE, STEADY_ANSWER_TOKENS) as (pid, target, key, _):
        await _turns(target, key, 2)
        steady_run = await _turns(target, key, counts[-1], pid, steady=True)
    steady = _steady_window(steady_run)
    direct = await _direct_ttft(20)
    direct_paced = await _direct_ttft(5 if env.quick else 10, PACE)

    async with _bare_server() as (bare_pid, bare_target):
        for (pace, n), measured in sorted(runs.items()):
            interval = measured.tokens_per_delta / PACE if pace else 0.0
            bare = await _bare(bare_target, bare_pid, n, measured, interval)
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
                        "delta_bytes": measured.bytes_per_delta,
                        "bare_messages_per_s": bare.events / bare.seconds,
                    },
                )
            )
            if n >= 50 and measured.deltas and bare.events:  # (CPU time ticks are coarse)
                # Where the time goes: the platform's whole work (the turn, the log, the
                # team) per delta it delivered, next to gRPC's own cost per message.
                results.append(
                    Result(
                        AREA,
                        f"server CPU per delivered delta, {n} streams, {label}",
                        measured.server_cpu_seconds / measured.deltas * 1e6,
                        "us",
                        baseline=bare.server_cpu_seconds / bare.events * 1e6,
                        extra={
                            "baseline": "bare server CPU per message",
                            "server_cpu_ms_per_turn": measured.server_cpu_seconds / n * 1000,
                        },
                    )
                )
            if n >= 50 and measured.deltas and measured.redis_cpu_seconds:
                # The log's share, paid by the Redis server (another core, or the same).
                results.append(
                    Result(
                        AREA,
                        f"Redis CPU per delivered delta, {n} streams, {label}",
                        measured.redis_cpu_seconds / measured.deltas * 1e6,
                        "us",
                        extra={
                            "redis_version": redis_version,
                            "redis_cpu_ms_per_turn": measured.redis_cpu_seconds / n * 1000,
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
        # Streaming alone: long answers at zero delay, where a delta carries more tokens.
        bare = await _bare(bare_target, bare_pid, long_n, long_run, 0.0)
        results.append(
            _throughput(
                f"tokens/s delivered, {long_n} streams, zero delay, "
                f"{LONG_ANSWER_TOKENS}-token answers",
                long_run,
                bare,
                long_n,
                server_cpu_us_per_token=long_run.server_cpu_seconds / max(1, long_run.tokens) * 1e6,
            )
        )
        # Conversations that go on: the turn after CONTINUED_AFTER earlier ones (each
        # conversation's team is kept in memory, or restored from its saved state).
        bare = await _bare(bare_target, bare_pid, long_n, continued, 0.0)
        results.append(
            _throughput(
                f"tokens/s delivered, {long_n} streams, zero delay, "
                f"turn {CONTINUED_AFTER + 1} of each conversation",
                continued,
                bare,
                long_n,
            )
        )
        if steady is not None:
            # The same streams between their turns' starts and ends: what the platform's
            # streaming alone costs, without the bursts of 200 admissions and 200 endings.
            n = counts[-1]
            interval = steady_run.tokens_per_delta / PACE
            bare = await _bare(bare_target, bare_pid, n, steady_run, interval)
            label = f"{n} streams, paced 50 tok/s, between turn starts and ends"
            for pct in (50, 99):
                results.append(
                    Result(
                        AREA,
                        f"token delivery p{pct}, {label}",
                        percentile(steady.latencies_ms, pct),
                        "ms",
                        baseline=percentile(bare.latencies_ms, pct),
                        extra={
                            "window_seconds": steady.seconds,
                            "deltas": len(steady.latencies_ms),
                        },
                    )
                )
            results.append(
                Result(
                    AREA,
                    f"server CPU per delivered delta, {label}",
                    steady.server_cpu_us_per_delta,
                    "us",
                    baseline=bare.server_cpu_seconds / max(1, bare.events) * 1e6,
                    extra={"baseline": "bare server CPU per message"},
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
            "time to first token added by the platform, p50, zero delay",
            ttft - direct_ttft,
            "ms",
            target="< 5 ms",
            ok=ttft - direct_ttft < 5,
        )
    )
    # The same at 50 tokens/s, where the model itself waits 20 ms for its first token.
    paced_ttft, direct_paced_ttft = statistics.median(paced_ttfts), statistics.median(direct_paced)
    results.append(
        Result(
            AREA,
            "time to first token p50, one turn at a time, paced 50 tok/s",
            paced_ttft,
            "ms",
            baseline=direct_paced_ttft,
            extra={"baseline": "AssistantAgent.run_stream in process, no platform, paced"},
        )
    )
    results.append(
        Result(
            AREA,
            "time to first token added by the platform, p50, paced 50 tok/s",
            paced_ttft - direct_paced_ttft,
            "ms",
            target="< 5 ms",
            ok=paced_ttft - direct_paced_ttft < 5,
        )
    )
    results.append(
        Result(
            AREA,
            f"time to first token p50, core team, turns {LONG_TEAM_TURNS - 4}-{LONG_TEAM_TURNS}",
            statistics.median(team_ttfts[-5:]),
            "ms",
            baseline=statistics.median(team_ttfts[:5]),
            extra={"baseline": "turns 1-5 of the same conversation", "all_ms": team_ttfts},
        )
    )
    results.append(
        Result(
            AREA,
            "server memory per active conversation (paced)",
            active / 1024,
            "KiB",
            target="< 5120 KiB",
            ok=active < 5 * 1024 * 1024,
        )
    )
    results.append(
        Result(
            AREA,
            "server memory per extra idle re-attached stream",
            idle / 1024,
            "KiB",
            target="< 100 KiB",
            ok=idle < 100 * 1024,
        )
    )
    return results
