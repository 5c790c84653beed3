"""Circuit breakers and rate limits shared by two server processes on the same Redis prefix:
transitions, the single half-open probe, cost spikes, sliding windows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from convergio_server.domain.costs.breaker import TENANT
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ratelimits import Limit
from convergio_server.domain.errors import QuotaExceeded, Unavailable

from tests.costs.costs_support import member, new_scope
from tests.support.server import RunningServer, running_server, server_settings

COOL_DOWN = 0.5


@pytest.fixture(scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Two servers on the same database and Redis prefix, with a short breaker cool-down."""

    def settings(name: str) -> object:
        return server_settings(
            tmp_path_factory.mktemp(name), pg_dsn, redis_url, redis_prefix,
            breaker_cool_down_seconds=COOL_DOWN, rate_limit_turns_per_minute=3,
            rate_limit_conversations_per_hour=4,
        )  # fmt: skip

    async with (
        running_server(settings("a")) as a,  # type: ignore[arg-type]
        running_server(settings("b")) as b,  # type: ignore[arg-type]
    ):
        yield a, b


def guards_of(server: RunningServer) -> CostGuards:
    found = server.server.context.components["guards"]
    assert isinstance(found, CostGuards)
    return found


async def test_tenant_breaker_opens_half_opens_and_closes_across_processes(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    for i in range(5):  # consecutive failures, reported by either process
        state = await (a if i % 2 else b).breakers.get(tenant, TENANT)
        assert state.state == "CLOSED"
        await (a if i % 2 else b).turn_finished(new_scope(tenant), Decimal(0), failed=True)
    seen_by_b = await b.breakers.get(tenant, TENANT)
    assert (seen_by_b.state, seen_by_b.open_cause) == ("OPEN", "FAILURES")
    assert seen_by_b.consecutive_failures == 5 and seen_by_b.next_probe_time is not None
    with pytest.raises(Unavailable) as refused:
        await a.admit_turn(new_scope(tenant), "hello")
    assert refused.value.reason == "CIRCUIT_OPEN"
    assert refused.value.retry_after_seconds is not None
    assert 0 < refused.value.retry_after_seconds <= COOL_DOWN

    await asyncio.sleep(COOL_DOWN + 0.1)
    for probe in range(3):
        probe_scope = new_scope(tenant, f"prober{probe}")
        await (a if probe % 2 else b).admit_turn(probe_scope, "probe")  # one probe goes ...
        with pytest.raises(Unavailable):  # ... and no other turn while it runs
            await (b if probe % 2 else a).admit_turn(new_scope(tenant, f"other{probe}"), "no")
        assert (await a.breakers.get(tenant, TENANT)).state == "HALF_OPEN"
        await a.turn_finished(probe_scope, Decimal(0), failed=False)
    closed = await b.breakers.get(tenant, TENANT)
    assert (closed.state, closed.consecutive_failures) == ("CLOSED", 0)
    await a.admit_turn(new_scope(tenant, "later"), "back to normal")


async def test_a_failed_probe_opens_the_breaker_again(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    await a.breakers.trip(tenant, TENANT, "BUDGET_BREACH", "test breach")
    assert (await b.breakers.get(tenant, TENANT)).open_cause == "BUDGET_BREACH"
    await asyncio.sleep(COOL_DOWN + 0.1)
    probe = new_scope(tenant)
    await b.admit_turn(probe, "probe")
    await b.turn_finished(probe, Decimal(0), failed=True)
    reopened = await a.breakers.get(tenant, TENANT)
    assert (reopened.state, reopened.open_cause) == ("OPEN", "FAILURES")
    await a.breakers.reset(tenant, TENANT)
    assert (await b.breakers.get(tenant, TENANT)).state == "CLOSED"


async def test_a_turn_failed_by_its_model_endpoint_counts_neither_way(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    for _ in range(4):
        await a.turn_finished(new_scope(tenant), Decimal(0), failed=True)
    await b.turn_finished(new_scope(tenant), Decimal(0), failed=True, neutral=True)
    # Not a fifth failure, and no success resetting the four.
    counted = await a.breakers.get(tenant, TENANT)
    assert (counted.state, counted.consecutive_failures) == ("CLOSED", 4)

    await a.breakers.trip(tenant, TENANT, "FAILURES", "test")
    await asyncio.sleep(COOL_DOWN + 0.1)
    probe = new_scope(tenant)
    await b.admit_turn(probe, "probe")
    await b.turn_finished(probe, Decimal(0), failed=True, neutral=True)
    # The probe said nothing: still half-open, and the next turn may probe at once.
    assert (await a.breakers.get(tenant, TENANT)).state == "HALF_OPEN"
    second = new_scope(tenant)
    await a.admit_turn(second, "another probe")
    await a.turn_finished(second, Decimal(0), failed=True)
    assert (await b.breakers.get(tenant, TENANT)).state == "OPEN"
    await a.breakers.reset(tenant, TENANT)


async def test_a_turn_admitted_as_the_probe_that_does_not_start_frees_the_probe(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    await a.breakers.trip(tenant, TENANT, "FAILURES", "test")
    await asyncio.sleep(COOL_DOWN + 0.1)
    # Admitted as the half-open probe while its conversation was read, which was missing.
    missing = new_scope(tenant)
    admission = await b.admit_turn(missing, "probe")
    assert admission.probe
    await b.turn_not_started(missing, admission)
    # The next turn may probe at once: nothing holds the probe until it expires.
    second = new_scope(tenant)
    assert (await a.admit_turn(second, "the real probe")).probe
    await a.turn_finished(second, Decimal(0), failed=True)
    assert (await b.breakers.get(tenant, TENANT)).state == "OPEN"
    await a.breakers.reset(tenant, TENANT)


async def test_repeated_cost_spikes_open_the_tenant_breaker(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    for _ in range(5):
        await a.turn_finished(new_scope(tenant), Decimal("0.01"), failed=False)
    state = await b.breakers.get(tenant, TENANT)
    assert (state.state, state.cost_spikes, state.moving_average_usd) == (
        "CLOSED", 0, Decimal("0.01"),
    )  # fmt: skip
    # Each over 3x the moving average of the costs before it.
    for i, cost in enumerate(("0.10", "0.50", "2.00", "8.00", "30.00")):
        assert (await a.breakers.get(tenant, TENANT)).state == "CLOSED"
        await (a if i % 2 else b).turn_finished(new_scope(tenant), Decimal(cost), failed=False)
    opened = await a.breakers.get(tenant, TENANT)
    assert (opened.state, opened.open_cause, opened.cost_spikes) == ("OPEN", "COST_SPIKES", 5)


async def test_a_sustained_jump_in_cost_opens_the_tenant_breaker(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    # The same high cost, turn after turn: measured against the ordinary turns before the
    # jump, not against an average the jump itself raises.
    a = guards_of(pair[0])
    for _ in range(10):
        await a.turn_finished(new_scope(tenant), Decimal("0.00045"), failed=False)
    for _ in range(5):
        assert (await a.breakers.get(tenant, TENANT)).state == "CLOSED"
        await a.turn_finished(new_scope(tenant), Decimal("0.02025"), failed=False)
    opened = await a.breakers.get(tenant, TENANT)
    assert (opened.state, opened.open_cause, opened.cost_spikes) == ("OPEN", "COST_SPIKES", 5)
    assert opened.moving_average_usd == Decimal("0.00045")


async def test_ordinary_cost_variation_is_not_a_spike(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a = guards_of(pair[0])
    for cost in ("0.01", "0.02", "0.015", "0.03", "0.01", "0.025", "0.04", "0.02", "0.05"):
        await a.turn_finished(new_scope(tenant), Decimal(cost), failed=False)
    state = await a.breakers.get(tenant, TENANT)
    assert (state.state, state.cost_spikes) == ("CLOSED", 0)


async def test_turn_rate_limit_is_shared_by_both_processes(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    for i in range(3):
        await (a if i % 2 else b).admit_turn(new_scope(tenant, "erin"), "hi")
    with pytest.raises(QuotaExceeded) as refused:
        await a.admit_turn(new_scope(tenant, "erin"), "one too many")
    err = refused.value
    assert err.reason == "RATE_LIMITED"
    assert err.violations[0].subject == "rate:turns_per_minute"
    assert err.retry_after_seconds is not None and 0 < err.retry_after_seconds <= 60
    await b.admit_turn(new_scope(tenant, "frank"), "another user is not limited")
    status = {s.limit.kind: s for s in await b.limits.status(tenant, "erin")}
    assert (status["TURNS_PER_MINUTE"].used, status["TURNS_PER_MINUTE"].remaining) == (3, 0)
    assert status["TURNS_PER_MINUTE"].reset_time is not None
    assert status["CONVERSATIONS_PER_HOUR"].used == 0  # turns are not conversations


async def test_conversations_are_counted_when_created(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])
    for i in range(4):
        await (a if i % 2 else b).conversation_created(member(tenant, "gina"))
    with pytest.raises(QuotaExceeded) as refused:
        await a.conversation_created(member(tenant, "gina"))
    assert refused.value.violations[0].subject == "rate:conversations_per_hour"
    assert refused.value.retry_after_seconds is not None
    assert refused.value.retry_after_seconds > 60  # an hour's window


async def test_the_window_slides(guards: CostGuards, tenant: str) -> None:
    limit = Limit("TURNS_PER_MINUTE", 2, 1)  # a one-second window
    await guards.limits.take(tenant, "hank", limit)
    await asyncio.sleep(0.5)
    await guards.limits.take(tenant, "hank", limit)
    with pytest.raises(QuotaExceeded) as refused:
        await guards.limits.take(tenant, "hank", limit)
    assert refused.value.retry_after_seconds is not None
    assert refused.value.retry_after_seconds <= 1.0
    await asyncio.sleep(refused.value.retry_after_seconds + 0.05)
    await guards.limits.take(tenant, "hank", limit)  # the first call left the window
    with pytest.raises(QuotaExceeded):  # the second is still in it
        await guards.limits.take(tenant, "hank", limit)


async def test_one_hundred_concurrent_takes_admit_exactly_the_limit(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    a, b = guards_of(pair[0]), guards_of(pair[1])

    async def take(i: int) -> bool:
        try:
            await (a if i % 2 else b).conversation_created(member(tenant, "ivan"))
            return True
        except QuotaExceeded:
            return False

    assert sum(await asyncio.gather(*(take(i) for i in range(100)))) == 4


async def test_turns_stopped_early_do_not_lower_the_average_cost(
    pair: tuple[RunningServer, RunningServer], tenant: str
) -> None:
    # Turns refused by a budget or cancelled cost little or nothing: counted, they pulled the
    # average down until ordinary turns looked like spikes.
    a = guards_of(pair[0])
    for _ in range(6):
        await a.turn_finished(new_scope(tenant), Decimal("0.03"), failed=False)
    for _ in range(4):
        await a.turn_finished(new_scope(tenant), Decimal(0), failed=False, ordinary=False)
    for _ in range(5):
        await a.turn_finished(new_scope(tenant), Decimal("0.035"), failed=False)
    state = await a.breakers.get(tenant, TENANT)
    assert (state.state, state.cost_spikes) == ("CLOSED", 0)
    assert state.moving_average_usd == Decimal("0.0325")
