"""Budgets against the real Redis and PostgreSQL: reservation under concurrency, alerts at 70%
and 85%, refusal at 100% with a QuotaFailure naming the budget, the per-turn cap, defaults."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ports import BudgetLimits
from convergio_server.domain.errors import QuotaExceeded
from convergio_server.storage.costs import PgCostStore

from tests.costs.costs_support import ledger_entry, new_scope
from tests.support.server import RunningServer


async def set_budget(guards: CostGuards, tenant: str, budget: BudgetLimits) -> None:
    await guards.budgets.ensure_seeded(tenant)
    await guards.budgets.store.upsert(tenant, budget, "test")
    await guards.budgets.changed(tenant)


def tenant_daily(limit: str, per_turn: str | None = None) -> BudgetLimits:
    return BudgetLimits(
        "TENANT", "", Decimal(limit), None, None, Decimal(per_turn) if per_turn else None
    )


async def test_fifty_concurrent_reservations_against_room_for_ten(
    guards: CostGuards, tenant: str
) -> None:
    await set_budget(guards, tenant, tenant_daily("1.00"))
    scopes = [new_scope(tenant, user=f"u{i}") for i in range(50)]

    async def attempt(i: int) -> bool:
        try:
            await guards.budgets.reserve(scopes[i], Decimal("0.10"))
            return True
        except QuotaExceeded as exc:
            assert exc.reason == "BUDGET_EXHAUSTED"
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert sum(results) == 10
    spent = await guards.budgets.spent(tenant, tenant_daily("1.00"), "")
    assert spent["today"] == Decimal("1.00")
    assert spent["reserved"] == Decimal("1.00")


async def test_settling_frees_what_was_not_used_and_alerts_at_70_and_85(
    guards: CostGuards, tenant: str
) -> None:
    await set_budget(guards, tenant, tenant_daily("1.00"))
    scope = new_scope(tenant)

    async def spend(reserve: str, actual: str) -> list[tuple[str, int]]:
        reservation = await guards.budgets.reserve(scope, Decimal(reserve))
        alerts, breached = await guards.budgets.settle(reservation, Decimal(actual))
        assert breached == []
        return [(a.scope, a.threshold_percent) for a in alerts if a.scope == "TENANT"]

    assert await spend("0.90", "0.50") == []  # 50%: the unused 0.40 is released
    assert await spend("0.30", "0.25") == [("TENANT", 70)]  # 75%
    assert await spend("0.20", "0.10") == [("TENANT", 85)]  # 85%
    assert await spend("0.05", "0.05") == []  # 90%: each threshold alerts once
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(scope, Decimal("0.20"))  # 0.90 + 0.20 > 1.00
    violation = refused.value.violations[0]
    assert violation.subject == "budget:tenant::daily"
    assert "0.900000" in violation.description
    assert await spend("0.10", "0.10") == [("TENANT", 100)]  # exactly the limit
    spent = await guards.budgets.spent(tenant, tenant_daily("1.00"), "")
    assert spent == {
        "today": Decimal("1.00"),
        "month": Decimal("1.00"),
        "total": Decimal("1.00"),
        "reserved": Decimal(0),
    }
    recorded = await guards.budgets.store.list_alerts(tenant)  # type: ignore[attr-defined]
    tenant_alerts = [(r["scope"], r["period"], r["threshold_percent"]) for r in recorded]
    assert ("TENANT", "DAILY", 70) in tenant_alerts and ("TENANT", "DAILY", 85) in tenant_alerts
    assert ("TENANT", "DAILY", 100) in tenant_alerts


async def test_a_changed_limit_alerts_again_at_its_own_thresholds(
    guards: CostGuards, tenant: str
) -> None:
    await set_budget(guards, tenant, tenant_daily("1.00"))
    scope = new_scope(tenant)

    async def spend(amount: str) -> list[int]:
        reservation = await guards.budgets.reserve(scope, Decimal(amount))
        alerts, _ = await guards.budgets.settle(reservation, Decimal(amount))
        return [a.threshold_percent for a in alerts if a.scope == "TENANT"]

    assert await spend("0.75") == [70]
    await set_budget(guards, tenant, tenant_daily("2.00"))  # raised: 37.5% now
    assert await spend("0.70") == [70]  # 72.5% of the new limit
    assert await spend("0.10") == []


async def test_an_exhausted_budget_refuses_new_turns_with_quota_failure(
    guards: CostGuards, tenant: str
) -> None:
    await set_budget(guards, tenant, tenant_daily("0.20"))
    scope = new_scope(tenant)
    await guards.admit_turn(scope, "hello")
    reservation = await guards.budgets.reserve(scope, Decimal("0.20"))
    await guards.budgets.settle(reservation, Decimal("0.20"))
    with pytest.raises(QuotaExceeded) as refused:
        await guards.admit_turn(new_scope(tenant), "hello again")
    assert refused.value.reason == "BUDGET_EXHAUSTED"
    assert refused.value.violations[0].subject == "budget:tenant::daily"
    # Raising the limit takes effect for the next turn, in every process (version bump).
    await set_budget(guards, tenant, tenant_daily("0.50"))
    await guards.admit_turn(new_scope(tenant), "and again")


async def test_user_and_conversation_budgets_and_scope_defaults(
    guards: CostGuards, tenant: str
) -> None:
    await set_budget(guards, tenant, tenant_daily("100"))
    await set_budget(guards, tenant, BudgetLimits("USER", "", Decimal("1.00"), None, None, None))
    await set_budget(guards, tenant, BudgetLimits("USER", "bob", Decimal("0.30"), None, None, None))
    bob, carol = new_scope(tenant, "bob"), new_scope(tenant, "carol")
    await guards.budgets.reserve(bob, Decimal("0.30"))
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(bob, Decimal("0.01"))
    assert refused.value.violations[0].subject == "budget:user:bob:daily"
    await guards.budgets.reserve(carol, Decimal("0.90"))  # the user default: 1.00 each
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(carol, Decimal("0.20"))
    assert refused.value.violations[0].subject == "budget:user:carol:daily"
    # The conversation default of a new tenant: 5.00 over the conversation's life.
    dave = new_scope(tenant, "dave")
    await set_budget(guards, tenant, BudgetLimits("USER", "dave", None, None, None, None))
    await guards.budgets.reserve(dave, Decimal("5.00"))
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(dave, Decimal("0.01"))
    assert (
        refused.value.violations[0].subject == f"budget:conversation:{dave.conversation_id}:total"
    )


async def test_per_turn_cap(guards: CostGuards, tenant: str) -> None:
    await set_budget(guards, tenant, tenant_daily("10", per_turn="0.30"))
    scope = new_scope(tenant)
    first = await guards.budgets.reserve(scope, Decimal("0.20"))
    await guards.budgets.settle(first, Decimal("0.20"))
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(scope, Decimal("0.20"))
    assert refused.value.violations[0].subject == "budget:tenant::per_turn"
    # The next turn of the same conversation starts with a fresh cap.
    next_turn = new_scope(tenant, conversation_id=scope.conversation_id)
    await guards.budgets.reserve(next_turn, Decimal("0.20"))


async def test_a_new_tenant_starts_with_the_original_limits(
    guards: CostGuards, tenant: str
) -> None:
    await guards.budgets.ensure_seeded(tenant)
    store = guards.budgets.store
    assert await store.get(tenant, "TENANT", "") == BudgetLimits(
        "TENANT", "", Decimal("50.00"), None, None, Decimal("0.50"),
        update_time=(await store.get(tenant, "TENANT", "")).update_time,  # type: ignore[union-attr]
        updated_by="default",
    )  # fmt: skip
    conversation = await store.get(tenant, "CONVERSATION", "")
    assert conversation is not None and conversation.total == Decimal("5.00")
    # A deleted default stays deleted: seeding happens once per tenant.
    assert await store.delete(tenant, "CONVERSATION", "")
    guards.budgets._seeded.discard(tenant)
    await guards.budgets.ensure_seeded(tenant)
    assert await store.get(tenant, "CONVERSATION", "") is None


async def test_counters_lost_by_redis_are_seeded_again_from_the_ledger(
    guards: CostGuards, tenant: str, server: RunningServer
) -> None:
    await set_budget(guards, tenant, tenant_daily("0.010"))
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    spent_before = ledger_entry(tenant, Decimal("0.008"))
    await store.insert_entries([spent_before])
    # No counter exists yet (as after Redis lost its data): the ledger's 0.008 counts.
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(new_scope(tenant), Decimal("0.005"))
    assert "0.008000" in refused.value.violations[0].description
    reservation = await guards.budgets.reserve(new_scope(tenant), Decimal("0.001"))
    await guards.budgets.settle(reservation, Decimal("0.001"))
    await store.insert_entries([ledger_entry(tenant, Decimal("0.001"))])
    # Redis loses everything of the tenant; the ledger still knows 0.009 was spent today.
    keys = [
        k
        async for k in server.infra.redis.scan_iter(
            match=f"{server.settings.redis_prefix}:cost:{tenant}:spent:*"
        )
    ]
    assert keys
    await server.infra.redis.delete(*keys)
    with pytest.raises(QuotaExceeded):
        await guards.budgets.reserve(new_scope(tenant), Decimal("0.002"))
    await guards.budgets.reserve(new_scope(tenant), Decimal("0.001"))


async def test_every_missing_counter_is_seeded_with_its_own_period_and_subject(
    guards: CostGuards, tenant: str
) -> None:
    """The first call of a new conversation finds none of its counters (and a new tenant
    none of its own): each gets what the ledger says of its scope, subject and period."""
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    conversation = str(uuid.uuid4())
    now = datetime.now(UTC)
    last_month = now.replace(day=1) - timedelta(days=3)
    await store.insert_entries(
        [
            ledger_entry(tenant, Decimal("0.001"), conversation_id=conversation),
            ledger_entry(tenant, Decimal("0.004"), conversation_id=conversation, at=last_month),
            ledger_entry(tenant, Decimal("0.020"), principal="bob"),
        ]
    )
    scope = new_scope(tenant, user="alice", conversation_id=conversation)
    reservation = await guards.budgets.reserve(scope, Decimal("0.0005"))
    await guards.budgets.settle(reservation, Decimal("0"))
    conv = await guards.budgets.spent(
        tenant, BudgetLimits("CONVERSATION", conversation, None, None, None, None), conversation
    )
    assert (conv["today"], conv["month"], conv["total"]) == (
        Decimal("0.001"), Decimal("0.001"), Decimal("0.005")
    )  # fmt: skip
    user = await guards.budgets.spent(
        tenant, BudgetLimits("USER", "alice", None, None, None, None), "alice"
    )
    assert (user["today"], user["total"]) == (Decimal("0.001"), Decimal("0.005"))
    whole = await guards.budgets.spent(tenant, tenant_daily("1.00"), "")
    assert (whole["today"], whole["month"], whole["total"]) == (
        Decimal("0.021"), Decimal("0.021"), Decimal("0.025")
    )  # fmt: skip


async def test_a_limit_set_after_redis_lost_its_counters_counts_what_the_ledger_knows(
    guards: CostGuards, tenant: str, server: RunningServer
) -> None:
    # Only a daily limit: the month's counter counts too, without a limit of its own.
    await set_budget(guards, tenant, tenant_daily("1.00"))
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    await store.insert_entries([ledger_entry(tenant, Decimal("0.600"))])
    keys = [
        k
        async for k in server.infra.redis.scan_iter(
            match=f"{server.settings.redis_prefix}:cost:{tenant}:spent:*"
        )
    ]
    if keys:  # Redis lost the tenant's counters
        await server.infra.redis.delete(*keys)
    reservation = await guards.budgets.reserve(new_scope(tenant), Decimal("0.010"))
    await guards.budgets.settle(reservation, Decimal("0.010"))
    # A monthly limit below what the ledger says this month already cost.
    monthly = BudgetLimits("TENANT", "", Decimal("1.00"), Decimal("0.60"), None, None)
    await set_budget(guards, tenant, monthly)
    with pytest.raises(QuotaExceeded) as refused:
        await guards.budgets.reserve(new_scope(tenant), Decimal("0.010"))
    assert "monthly" in refused.value.violations[0].subject
