"""Redis losing the budget counters while model calls are in flight (a restart without
persistence, a failover), against the real Redis and PostgreSQL: a settlement never creates a
counter, so the next reservation seeds it from the ledger instead of counting on from a clamped
0 that never expires; a reservation Redis lost is not taken back from counters seeded since;
and every call is counted once, by the counters or by the ledger they are seeded from."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from convergio_server.domain.costs.budgets import Applied, Reservation
from convergio_server.domain.costs.enforcement import CallTicket, CostGuards
from convergio_server.domain.costs.ledger import LedgerWriter
from convergio_server.domain.costs.money import to_nanos
from convergio_server.domain.costs.prices import call_cost
from convergio_server.domain.guards import CallInfo, TurnScope
from convergio_server.storage.costs import PgCostStore

from tests.costs.costs_support import ledger_entry, new_scope
from tests.support.server import RunningServer

PROMPT, MAX_OUTPUT, COMPLETION = 1_000, 4_096, 200
BEFORE = Decimal("0.300")  # what the conversation cost before these tests' calls
DAY_S = 86_400


def store_of(guards: CostGuards) -> PgCostStore:
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    return store


async def lose_redis_data(server: RunningServer, tenant: str) -> None:
    """What a Redis restarted without persistence shows of the tenant: nothing."""
    keys = [
        k
        async for k in server.infra.redis.scan_iter(
            match=f"{server.settings.redis_prefix}:cost:{tenant}:*"
        )
    ]
    assert keys
    await server.infra.redis.delete(*keys)


async def begin(guards: CostGuards, scope: TurnScope) -> CallTicket:
    call = CallInfo(scope, "amy", "openai", "gpt-4o-mini", "agent_reply")
    ticket = await guards.begin_call(call, prompt_tokens=PROMPT, max_output=MAX_OUTPUT)
    assert ticket.reservation is not None
    return ticket


async def end(guards: CostGuards, ticket: CallTicket) -> Decimal:
    """Ends the call as one that answered COMPLETION tokens; returns what it cost."""
    await guards.end_call(ticket, "AGENT_REPLY", PROMPT, COMPLETION, 0, "OK", None)
    return call_cost(ticket.quote.price, PROMPT, COMPLETION)


def seeded(reservation: Reservation) -> list[Applied]:
    """The counters seeded from the ledger when missing: every period of every budget."""
    return [a for a in reservation.applied if a.counter.seed]


async def ledger_spent(guards: CostGuards, tenant: str, applied: list[Applied]) -> list[int]:
    """What the ledger says each counter's scope, subject and period cost, in nano-dollars."""
    await guards.ledger.flush()
    spans = []
    for a in applied:
        since = None
        if a.period == "DAILY":
            since = datetime.strptime(a.period_id, "%Y-%m-%d").replace(tzinfo=UTC)
        elif a.period == "MONTHLY":
            since = datetime.strptime(a.period_id, "%Y-%m").replace(tzinfo=UTC)
        spans.append((a.scope, a.subject, since))
    return [to_nanos(v) for v in await store_of(guards).ledger_spent(tenant, spans)]


async def counters(guards: CostGuards, applied: list[Applied]) -> list[int]:
    return await guards.budgets.counters.read([a.counter.key for a in applied])


async def test_a_settlement_after_redis_lost_the_counters_leaves_them_to_the_ledger(
    guards: CostGuards, server: RunningServer, tenant: str
) -> None:
    scope = new_scope(tenant)
    await store_of(guards).insert_entries(
        [ledger_entry(tenant, BEFORE, conversation_id=scope.conversation_id)]
    )
    ticket = await begin(guards, scope)
    assert ticket.reservation is not None
    applied = seeded(ticket.reservation)
    assert {a.period for a in applied} == {"DAILY", "MONTHLY", "TOTAL"}
    assert len(applied) == 9  # tenant, user and conversation

    await lose_redis_data(server, tenant)  # while the model answers
    await end(guards, ticket)
    redis = server.infra.redis
    for a in applied:  # not recreated from the settlement's delta alone
        assert not await redis.exists(a.counter.key), a.quota_subject

    # The next call seeds every counter from the ledger, which has both calls: the one
    # before and the one whose settlement found the counters gone.
    second = await begin(guards, scope)
    assert second.reservation is not None
    reserved = second.reservation.amount_nanos
    expected = [spent + reserved for spent in await ledger_spent(guards, tenant, applied)]
    assert await counters(guards, applied) == expected
    assert expected[-1] > to_nanos(BEFORE) + reserved  # the conversation's total
    for a in applied:
        assert await redis.pttl(a.counter.key) > 0, a.quota_subject

    # And once that call is settled, the counters are exactly what the ledger says.
    await end(guards, second)
    assert await counters(guards, applied) == await ledger_spent(guards, tenant, applied)


async def test_a_reservation_redis_lost_is_not_taken_from_counters_seeded_since(
    guards: CostGuards, server: RunningServer, tenant: str
) -> None:
    """Another call seeds the counters again before the first one settles: the first one's
    reservation is not in them, and its cost is not in the ledger they were seeded from yet."""
    scope = new_scope(tenant)
    await store_of(guards).insert_entries(
        [ledger_entry(tenant, BEFORE, conversation_id=scope.conversation_id)]
    )
    first = await begin(guards, scope)
    assert first.reservation is not None
    applied = seeded(first.reservation)
    await lose_redis_data(server, tenant)
    other = await begin(guards, new_scope(tenant, conversation_id=scope.conversation_id))
    await end(guards, first)
    await end(guards, other)
    # Counted once each: neither under nor over what the ledger says.
    assert await counters(guards, applied) == await ledger_spent(guards, tenant, applied)


async def test_a_counter_left_without_expiry_is_seeded_again_from_the_ledger(
    guards: CostGuards, server: RunningServer, tenant: str
) -> None:
    """A settlement of an older version recreated lost counters from its delta alone (clamped
    to 0) and without expiry; the next reservation replaces such a counter by the ledger's
    figure, with an expiry."""
    scope = new_scope(tenant)
    await store_of(guards).insert_entries(
        [ledger_entry(tenant, BEFORE, conversation_id=scope.conversation_id)]
    )
    ticket = await begin(guards, scope)
    assert ticket.reservation is not None
    applied = seeded(ticket.reservation)
    await end(guards, ticket)
    await guards.ledger.flush()  # the counters were left so long ago that the ledger has all
    redis = server.infra.redis
    for a in applied:
        await redis.set(a.counter.key, 0)  # what the older settlement left: 0, no expiry
    second = await begin(guards, scope)
    assert second.reservation is not None
    reserved = second.reservation.amount_nanos
    expected = [spent + reserved for spent in await ledger_spent(guards, tenant, applied)]
    assert await counters(guards, applied) == expected
    for a in applied:
        ttl = await redis.ttl(a.counter.key)
        assert ttl > (0 if a.period != "TOTAL" else 34 * DAY_S), a.quota_subject


async def test_a_seed_finds_the_calls_settled_without_counters_in_the_ledger(
    server: RunningServer, tenant: str
) -> None:
    """Entries wait for their batch, except one whose call no counter counted: a seed writes
    that one (and what is queued before it) first, and leaves an ordinary queue alone."""
    store = PgCostStore(server.infra.pool)
    writer = LedgerWriter(store, flush_interval=3600, batch_size=1000)

    async def written() -> Decimal:
        return (await store.ledger_spent(tenant, [("TENANT", "", None)]))[0]

    try:
        writer.add(ledger_entry(tenant, Decimal("0.001")))
        await writer.write_uncounted()
        assert await written() == 0 and writer.pending == 1
        writer.add(ledger_entry(tenant, Decimal("0.002")), uncounted=True)
        await writer.write_uncounted()
        assert await written() == Decimal("0.003") and writer.pending == 0
        writer.add(ledger_entry(tenant, Decimal("0.004")))
        await writer.write_uncounted()
        assert await written() == Decimal("0.003") and writer.pending == 1
    finally:
        await writer.close()
