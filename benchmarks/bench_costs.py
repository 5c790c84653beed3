"""Cost guards: the overhead they add to a turn (rate-limit check, breaker check, budget
reservation and settlement, all atomic scripts in Redis) against a bare Redis PING round trip
measured in the same run, and ledger write throughput (batched) against one INSERT per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from benchmarks.harness import BenchEnv, Result, percentile, running_convergio

AREA = "costs"


def _convergio(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Any]:
    return running_convergio(
        env,
        # The benchmark measures the checks, not refusals.
        rate_limit_turns_per_minute=10_000_000,
        cost_default_tenant_daily_usd="1000000",
        cost_default_tenant_per_turn_usd="",
        cost_default_conversation_total_usd="",
    )


async def _timed(n: int, step: Callable[[int], Awaitable[None]]) -> list[float]:
    for i in range(min(200, n)):  # warm up: connections, script cache, budget cache
        await step(i)
    samples: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        await step(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _entry(tenant: str, i: int) -> Any:
    from convergio_server.domain.costs.ledger import LedgerEntry
    from convergio_server.domain.costs.prices import ModelPrice

    return LedgerEntry(
        entry_id=str(uuid.uuid4()), tenant_id=tenant, time=datetime.now(UTC), principal="bench",
        conversation_id="c", turn_id=f"t{i}", execution_id="", step_id="", agent="amy",
        provider="openai", model="gpt-4o-mini", call_kind="AGENT_REPLY", prompt_tokens=812,
        completion_tokens=240, cached_tokens=0, cost_usd=Decimal("0.0002658"),
        price_source="TABLE", price=ModelPrice(Decimal("0.15"), Decimal("0.60"), Decimal("0.075")),
        latency_ms=840, outcome="OK",
    )  # fmt: skip


async def run(env: BenchEnv) -> list[Result]:
    from convergio_server.domain.auth import Principal, Role
    from convergio_server.domain.costs.breaker import TENANT
    from convergio_server.domain.costs.enforcement import CostGuards
    from convergio_server.domain.costs.ledger import LedgerWriter
    from convergio_server.domain.guards import CallInfo, TurnScope
    from convergio_server.storage.costs import PgCostStore

    n = 300 if env.quick else 3000
    results: list[Result] = []
    async with _convergio(env) as server:
        await server.keys.create("bench", "bench", ["operator"])
        guards: CostGuards = server.context.components["guards"]
        redis = server.infra.redis
        principal = Principal("bench", "bench", frozenset({Role.MEMBER}), "k")
        conversation = str(uuid.uuid4())

        def scope(i: int) -> TurnScope:
            return TurnScope(principal, conversation, f"turn-{i}")

        async def ping(i: int) -> None:
            await redis.ping()

        async def rate(i: int) -> None:
            await guards.limits.take("bench", "bench", guards.limits.turns)

        async def breaker(i: int) -> None:
            await guards.breakers.admit("bench", TENANT)

        reservations: list[Any] = []

        async def reserve(i: int) -> None:
            reservations.append(await guards.budgets.reserve(scope(i), Decimal("0.01")))

        async def settle(i: int) -> None:
            await guards.budgets.settle(reservations.pop(), Decimal("0.004"))

        async def turn(i: int) -> None:
            # What one turn with one model call pays: admission (screening, budget check,
            # rate limit, tenant breaker) and the call's provider breaker check, reservation,
            # settlement, breaker feedback and ledger entry.
            s = scope(i)
            await guards.admit_turn(s, "What drove the Q3 margin and what should we change?")
            call = CallInfo(s, "amy", "openai", "gpt-4o-mini", "agent_reply", 1024)
            ticket = await guards.begin_call(call, 800, 1024)
            await guards.end_call(ticket, "AGENT_REPLY", 800, 240, 0, "OK", None)

        baseline = await _timed(n, ping)
        base50, base99 = percentile(baseline, 50), percentile(baseline, 99)
        results.append(Result(AREA, "redis PING round trip p50 (baseline)", base50, "ms"))
        for name, step in (
            ("rate-limit check", rate),
            ("breaker check", breaker),
            ("budget reservation", reserve),
        ):
            samples = await _timed(n, step)
            results.append(
                Result(AREA, f"{name} p50", percentile(samples, 50), "ms", baseline=base50)
            )
        # Settle what was reserved above (the warm-up reserved 200 more).
        samples = await _timed(min(n, len(reservations) - 200), settle)
        results.append(Result(AREA, "budget settlement p50", percentile(samples, 50), "ms", base50))
        samples = await _timed(n, turn)
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        results.append(
            Result(AREA, "guard overhead per turn p50", p50, "ms", base50, "< 1 ms", p50 < 1.0)
        )
        results.append(Result(AREA, "guard overhead per turn p99", p99, "ms", base99))

        store = PgCostStore(server.infra.pool)
        count = 2000 if env.quick else 20000
        single = 200 if env.quick else 1000
        started = time.perf_counter()
        for i in range(single):
            await store.insert_entries([_entry("bench", i)])
        one_by_one = single / (time.perf_counter() - started)
        writer = LedgerWriter(store, flush_interval=0.5, batch_size=500)
        started = time.perf_counter()
        for i in range(count):
            writer.add(_entry("bench", i))
        queued = time.perf_counter() - started
        await writer.close()
        batched = count / (time.perf_counter() - started)
        results.append(
            Result(AREA, "ledger rows written/s, one INSERT per row", one_by_one, "rows/s")
        )
        results.append(
            Result(AREA, "ledger rows written/s, batched (500)", batched, "rows/s", one_by_one)
        )
        results.append(
            Result(AREA, "ledger add() on the streaming path", queued / count * 1e6, "us/entry")
        )
    return results


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    async def _main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for r in await run(BenchEnv(data_dir=Path(tmp))):
                print(f"{r.name:<48} {r.value:>12.3f} {r.unit:<9} ratio={r.ratio}")

    asyncio.run(_main())
