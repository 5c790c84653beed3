"""The pipelined Redis connection of the hot paths (`storage.redis_pipe`): client CPU per
command when 1 and 100 callers share it at once, against redis-py's asyncio client (a pool of
connections) on the same Redis in the same run. Commands issued in the same turn of the event
loop go out in one write: with many callers, that is most of the saving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.harness import BenchEnv, Result, running_convergio

AREA = "redis"
VALUE = b"x" * 120  # about a token delta's entry


async def _cpu_per_command(total: int, callers: int, get: Callable[[], Awaitable[object]]) -> float:
    """Client CPU microseconds per command, `callers` commands at a time."""
    for _ in range(50):  # warm up: connections, pools
        await asyncio.gather(*(get() for _ in range(callers)))
    started = time.process_time()
    for _ in range(total // callers):
        await asyncio.gather(*(get() for _ in range(callers)))
    return (time.process_time() - started) / total * 1e6


async def run(env: BenchEnv) -> list[Result]:
    import redis.asyncio as aioredis
    from convergio_server.storage.redis_pipe import PipelinedRedis

    total = 2_000 if env.quick else 20_000
    results: list[Result] = []
    async with running_convergio(env) as server:
        url = server.infra.redis_url
        key = f"{server.settings.redis_prefix}:bench:pipe"
        pipe = PipelinedRedis(url)
        plain = aioredis.Redis.from_url(url, max_connections=100)
        try:
            await pipe.set(key, VALUE)
            for callers in (1, 100):
                ours = await _cpu_per_command(total, callers, lambda: pipe.get(key))
                theirs = await _cpu_per_command(total, callers, lambda: plain.get(key))
                results.append(
                    Result(
                        AREA,
                        f"client CPU per GET, {callers} caller{'s' if callers > 1 else ''} at once",
                        ours,
                        "us",
                        baseline=theirs,
                        extra={"baseline": "redis-py asyncio client, pooled"},
                    )
                )
        finally:
            await pipe.execute("DEL", key)
            await pipe.aclose()
            await plain.aclose()
    return results
