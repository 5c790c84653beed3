"""Expiry of the budget counters in the real Redis: a total's counter lives as long as it is
used (each reservation renews its time to live), so that an active tenant's or conversation's
total is never seeded again from the ledger; a day's or month's counter keeps the expiry it got
when it was created; the record of a counter's alerts expires with the counter."""

from __future__ import annotations

from decimal import Decimal

from convergio_server.domain.costs.budgets import Applied, Reservation
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.money import to_nanos
from convergio_server.domain.costs.ports import BudgetLimits
from convergio_server.domain.costs.prices import call_cost
from convergio_server.domain.guards import CallInfo

from tests.costs.costs_support import new_scope
from tests.support.server import RunningServer

# What is left of a counter's life in this test: far below any counter's time to live.
NEARLY_EXPIRED_MS = 60_000
DAY_S = 86_400


def by_period(reservation: Reservation) -> dict[str, list[Applied]]:
    out: dict[str, list[Applied]] = {}
    for a in reservation.applied:
        out.setdefault(a.period, []).append(a)
    return out


async def age(server: RunningServer, applied: list[Applied]) -> None:
    """As if the counters had lived almost their whole time to live."""
    for a in applied:
        assert await server.infra.redis.pexpire(a.counter.key, NEARLY_EXPIRED_MS)


async def pttls(server: RunningServer, applied: list[Applied]) -> dict[str, int]:
    return {f"{a.scope}:{a.period}": await server.infra.redis.pttl(a.counter.key) for a in applied}


async def test_a_total_counter_in_use_gets_its_expiry_renewed_and_a_period_counter_does_not(
    guards: CostGuards, server: RunningServer, tenant: str
) -> None:
    scope = new_scope(tenant)
    budgets = guards.budgets
    await budgets.ensure_seeded(tenant)
    first = await budgets.reserve(scope, Decimal("0.001"))
    await budgets.settle(first, Decimal("0.001"))
    periods = by_period(first)
    totals, dated = periods["TOTAL"], periods["DAILY"] + periods["MONTHLY"]
    assert {a.scope for a in totals} == {"TENANT", "USER", "CONVERSATION"}
    assert all(a.counter.sliding for a in totals) and not any(a.counter.sliding for a in dated)
    await age(server, totals + dated)

    # A model call (the script that checks the provider breaker and reserves in one go).
    call = CallInfo(scope, "amy", "openai", "gpt-4o-mini", "agent_reply", max_output_tokens=16)
    ticket = await guards.begin_call(call, prompt_tokens=10, max_output=16)
    assert ticket.reservation is not None
    assert [a.counter.key for a in ticket.reservation.applied] == [
        a.counter.key for a in first.applied
    ]
    await guards.end_call(ticket, "AGENT_REPLY", 10, 4, 0, "OK", None)
    for name, ttl in (await pttls(server, totals)).items():
        assert ttl > 34 * DAY_S * 1000, name  # renewed to the total's 35 days
    for name, ttl in (await pttls(server, dated)).items():
        assert 0 < ttl <= NEARLY_EXPIRED_MS, name  # still the expiry it was created with

    # A reservation on its own (the budgets' script) renews the totals too.
    await age(server, totals)
    again = await budgets.reserve(scope, Decimal("0.001"))
    await budgets.settle(again, Decimal("0"))
    for name, ttl in (await pttls(server, totals)).items():
        assert ttl > 34 * DAY_S * 1000, name
    for name, ttl in (await pttls(server, dated)).items():
        assert 0 < ttl <= NEARLY_EXPIRED_MS, name
    # The totals hold what Redis counted, the first settlement included, which the ledger
    # never saw: none of them was seeded again from the ledger.
    counted = to_nanos(Decimal("0.001") + call_cost(ticket.quote.price, 10, 4))
    assert await budgets.counters.read([a.counter.key for a in totals]) == [counted] * 3


async def test_a_totals_alert_is_recorded_for_as_long_as_the_total_is_counted(
    guards: CostGuards, server: RunningServer, tenant: str
) -> None:
    """A total in use keeps its counter; the record that its thresholds alerted lives as long,
    so that a total still past a threshold does not alert again some weeks later."""
    scope = new_scope(tenant)
    budgets = guards.budgets
    await budgets.ensure_seeded(tenant)
    limits = BudgetLimits("CONVERSATION", scope.conversation_id, None, None, Decimal("0.40"), None)
    await budgets.store.upsert(tenant, limits, "test")
    await budgets.changed(tenant)
    redis = server.infra.redis

    async def spend(amount: str) -> list[tuple[str, int]]:
        reservation = await budgets.reserve(scope, Decimal(amount))
        alerts, _ = await budgets.settle(reservation, Decimal(amount))
        return [(a.period, a.threshold_percent) for a in alerts if a.scope == "CONVERSATION"]

    assert await spend("0.30") == [("TOTAL", 70)]  # 75%
    reservation = await budgets.reserve(scope, Decimal("0"))
    await budgets.settle(reservation, Decimal("0"))
    total = next(
        a for a in reservation.applied if a.scope == "CONVERSATION" and a.period == "TOTAL"
    )
    record = total.counter.alerts_key
    assert await redis.pttl(total.counter.key) > 34 * DAY_S * 1000
    assert await redis.pttl(record) > 34 * DAY_S * 1000

    # Nearly 35 days later, the total having been used all along: its counter is still there
    # and so is the record, renewed with it by every settled call.
    await redis.pexpire(record, NEARLY_EXPIRED_MS)
    assert await spend("0.004") == []
    assert await redis.pttl(record) > 34 * DAY_S * 1000
    budgets._alerted.clear()  # as another process, which asks Redis
    assert await spend("0.004") == []
    assert await spend("0.04") == [("TOTAL", 85)]  # 87%

    # A day's record ends with the day's counter.
    daily = next(
        a for a in reservation.applied if a.scope == "CONVERSATION" and a.period == "DAILY"
    )
    await redis.pexpire(daily.counter.key, NEARLY_EXPIRED_MS)
    daily_only = BudgetLimits(
        "CONVERSATION", scope.conversation_id, Decimal("0.40"), None, None, None
    )
    await budgets.store.upsert(tenant, daily_only, "test")
    await budgets.changed(tenant)
    assert await spend("0.004") == [("DAILY", 70), ("DAILY", 85)]  # 88%
    assert 0 < await redis.pttl(daily.counter.alerts_key) <= NEARLY_EXPIRED_MS
