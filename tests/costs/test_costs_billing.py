"""wrap_model_client: every model call of a turn is reserved, settled and written to the
ledger, with the real offline AutoGen model: completed, streamed, cancelled, abandoned and
failed calls; budget stops and alerts during a turn; provider breakers."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import pytest
from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage
from convergio_server.domain.conversations.metering import Meter, MeteredClient
from convergio_server.domain.costs.billing import BilledModelClient
from convergio_server.domain.costs.breaker import TENANT, provider_name
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ledger import LedgerEntry
from convergio_server.domain.costs.money import from_nanos, to_nanos
from convergio_server.domain.costs.ports import BudgetLimits
from convergio_server.domain.costs.prices import call_cost
from convergio_server.domain.errors import QuotaExceeded, Unavailable
from convergio_server.domain.guards import BudgetAlertInfo, CallInfo, TurnScope
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.domain.models.openai_compat import OpenAICompatChatCompletionClient
from convergio_server.storage.costs import PgCostStore

from tests.costs.costs_support import new_scope

MESSAGES: list[LLMMessage] = [
    SystemMessage(content="You are Amy, the chief financial officer. Answer with numbers."),
    UserMessage(content="Summarise our quarterly revenue drivers in a paragraph.", source="user"),
]


def call(
    scope: TurnScope, model: str = "gpt-4o-mini", kind: str = "agent_reply", **kw: Any
) -> CallInfo:
    return CallInfo(
        scope, "amy" if kind != "speaker_selection" else "", "openai", model, kind, **kw
    )


async def entries(guards: CostGuards, tenant: str) -> list[LedgerEntry]:
    await guards.ledger.flush()
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    return await store.list_entries(
        tenant, user="", conversation_id="", start=None, end=None, after=None, limit=100
    )


async def set_budget(guards: CostGuards, tenant: str, budget: BudgetLimits) -> None:
    await guards.budgets.ensure_seeded(tenant)
    await guards.budgets.store.upsert(tenant, budget, "test")
    await guards.budgets.changed(tenant)


async def test_a_completed_call_is_billed_exactly(guards: CostGuards, tenant: str) -> None:
    scope = new_scope(tenant)
    client = guards.wrap_model_client(OfflineChatCompletionClient(), call(scope))
    assert isinstance(client, BilledModelClient)
    result = await client.create(MESSAGES)
    [entry] = await entries(guards, tenant)
    price = guards.prices.quote("openai", "gpt-4o-mini").price
    expected = call_cost(price, result.usage.prompt_tokens, result.usage.completion_tokens)
    assert expected > 0
    assert (entry.prompt_tokens, entry.completion_tokens) == (
        result.usage.prompt_tokens, result.usage.completion_tokens,
    )  # fmt: skip
    assert entry.cost_usd == expected
    assert (entry.outcome, entry.call_kind, entry.price_source) == ("OK", "AGENT_REPLY", "TABLE")
    assert (entry.agent, entry.conversation_id, entry.turn_id, entry.principal) == (
        "amy", scope.conversation_id, scope.turn_id, "alice",
    )  # fmt: skip
    # The reservation was replaced by the real cost in every budget counter.
    spent = await guards.budgets.spent(
        tenant, BudgetLimits("CONVERSATION", "", None, None, None, None), scope.conversation_id
    )
    assert spent["total"] == from_nanos(to_nanos(expected)) and spent["reserved"] == 0


async def test_selector_calls_unknown_models_and_tool_choices(
    guards: CostGuards, tenant: str
) -> None:
    scope = new_scope(tenant)
    selector = guards.wrap_model_client(
        OfflineChatCompletionClient(), call(scope, model="house-model-v2", kind="speaker_selection")
    )
    await selector.create(MESSAGES)
    [entry] = await entries(guards, tenant)
    assert (entry.call_kind, entry.agent, entry.price_source) == (
        "SPEAKER_SELECTION",
        "",
        "FALLBACK",
    )
    assert entry.price.input == Decimal("1.00") and entry.cost_usd > 0


async def test_a_streamed_call_is_billed_with_its_final_usage(
    guards: CostGuards, tenant: str
) -> None:
    client = guards.wrap_model_client(OfflineChatCompletionClient(), call(new_scope(tenant)))
    items = [item async for item in client.create_stream(MESSAGES)]
    final = items[-1]
    assert isinstance(final, CreateResult)
    [entry] = await entries(guards, tenant)
    assert entry.completion_tokens == final.usage.completion_tokens and entry.outcome == "OK"


@pytest.mark.parametrize(
    ("message", "outcome"), [(None, "CANCELLED"), ("client_gone", "CLIENT_GONE")]
)
async def test_a_cancelled_stream_bills_what_was_generated(
    guards: CostGuards, tenant: str, message: str | None, outcome: str
) -> None:
    scope = new_scope(tenant)
    slow = OfflineChatCompletionClient(tokens_per_second=200, min_completion_tokens=400)
    client = guards.wrap_model_client(slow, call(scope))
    received: list[str] = []
    five = asyncio.Event()

    async def consume() -> None:
        async for item in client.create_stream(MESSAGES):
            assert isinstance(item, str)
            received.append(item)
            if len(received) == 5:
                five.set()

    task = asyncio.create_task(consume())
    await five.wait()
    task.cancel(message)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    [entry] = await entries(guards, tenant)
    assert entry.outcome == outcome
    from convergio_server.domain.models.text import count_text_tokens

    generated = sum(count_text_tokens(chunk) for chunk in received)
    assert generated <= entry.completion_tokens < 400  # what was generated, not the whole
    assert entry.prompt_tokens > 0 and entry.cost_usd > 0
    spent = await guards.budgets.spent(
        tenant, BudgetLimits("CONVERSATION", "", None, None, None, None), scope.conversation_id
    )
    assert spent["reserved"] == 0 and spent["total"] == from_nanos(to_nanos(entry.cost_usd))


async def test_a_consumer_that_stops_reading_is_billed(guards: CostGuards, tenant: str) -> None:
    client = guards.wrap_model_client(
        OfflineChatCompletionClient(min_completion_tokens=200), call(new_scope(tenant))
    )
    stream = client.create_stream(MESSAGES)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    [entry] = await entries(guards, tenant)
    assert entry.outcome == "CANCELLED" and 0 < entry.completion_tokens < 200


async def test_a_turn_stops_at_the_next_call_when_the_budget_is_spent_and_hears_alerts(
    guards: CostGuards, tenant: str
) -> None:
    offline = OfflineChatCompletionClient(min_completion_tokens=200, max_completion_tokens=200)
    price = guards.prices.quote("openai", "gpt-4o-mini").price
    reservation = call_cost(price, offline.count_tokens(MESSAGES), 200)
    # Room for one call: after it 1 / 1.2 = 83% is spent, too little left for a second.
    limit = reservation * Decimal("1.2")
    await set_budget(guards, tenant, BudgetLimits("TENANT", "", limit, None, None, None))
    heard: list[BudgetAlertInfo] = []

    async def sink(alert: BudgetAlertInfo) -> None:
        heard.append(alert)

    base = new_scope(tenant)
    scope = TurnScope(base.principal, base.conversation_id, base.turn_id, alerts=sink)
    meter = Meter()  # the turn's usage, as the turn counts it
    client = MeteredClient(
        guards.wrap_model_client(offline, call(scope, max_output_tokens=200)), meter
    )
    first = await client.create(MESSAGES)
    assert first.usage.completion_tokens == 200
    assert [(a.scope, a.period, a.threshold_percent) for a in heard] == [("TENANT", "DAILY", 70)]
    assert heard[0].limit_usd == limit and heard[0].spent_usd >= limit * Decimal("0.7")
    with pytest.raises(QuotaExceeded) as refused:
        await client.create(MESSAGES)
    assert refused.value.reason == "BUDGET_EXHAUSTED"
    assert refused.value.violations[0].subject == "budget:tenant::daily"
    assert len(await entries(guards, tenant)) == 1  # the refused call never ran
    assert meter.usage.model_calls == 1  # and is not counted as one


async def test_alerts_reach_the_turn_that_crossed_them(guards: CostGuards, tenant: str) -> None:
    price = guards.prices.quote("openai", "gpt-4o-mini").price
    offline = OfflineChatCompletionClient(min_completion_tokens=100, max_completion_tokens=100)
    one = call_cost(price, offline.count_tokens(MESSAGES), 100)
    # Four calls of about the same cost: 25%, 50%, 75% (alert 70), 100% (alerts 85 and 100).
    await set_budget(
        guards, tenant, BudgetLimits("TENANT", "", one * 4 * Decimal("1.3"), None, None, None)
    )
    heard: list[tuple[str, int]] = []

    async def sink(alert: BudgetAlertInfo) -> None:
        heard.append((alert.period, alert.threshold_percent))

    base = new_scope(tenant)
    scope = TurnScope(base.principal, base.conversation_id, base.turn_id, alerts=sink)
    client = guards.wrap_model_client(offline, call(scope, max_output_tokens=100))
    for _ in range(4):
        await client.create(MESSAGES)
    assert [t for p, t in heard if p == "DAILY"] == [70]  # 4 / 5.2 = 77%
    assert len(await entries(guards, tenant)) == 4


async def test_spending_past_a_limit_trips_the_tenant_breaker(
    guards: CostGuards, tenant: str
) -> None:
    # A model that ignores max_tokens: the reservation (1 output token) is too small.
    offline = OfflineChatCompletionClient(min_completion_tokens=300)
    price = guards.prices.quote("openai", "gpt-4o-mini").price
    limit = call_cost(price, offline.count_tokens(MESSAGES), 5)
    await set_budget(guards, tenant, BudgetLimits("TENANT", "", limit, None, None, None))
    client = guards.wrap_model_client(offline, call(new_scope(tenant), max_output_tokens=1))
    await client.create(MESSAGES)
    state = await guards.breakers.get(tenant, TENANT)
    assert (state.state, state.open_cause) == ("OPEN", "BUDGET_BREACH")
    await guards.breakers.reset(tenant, TENANT)


async def test_provider_failures_open_its_breaker_and_are_in_the_ledger(
    guards: CostGuards, tenant: str
) -> None:
    # The platform's OpenAI-compatible client pointed at a port where nothing listens.
    down = OpenAICompatChatCompletionClient(
        model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0
    )
    for _ in range(5):
        client = guards.wrap_model_client(down, call(new_scope(tenant)))
        with pytest.raises(Exception) as failed:
            await client.create(MESSAGES)
        assert not isinstance(failed.value, Unavailable)
    # The breaker of that endpoint, named as the API names it.
    state = await guards.breakers.get(tenant, provider_name("openai:127.0.0.1:9"))
    assert (state.state, state.open_cause, state.consecutive_failures) == ("OPEN", "FAILURES", 5)
    assert state.provider == "openai:127.0.0.1:9"
    with pytest.raises(Unavailable) as refused:
        await guards.wrap_model_client(down, call(new_scope(tenant))).create(MESSAGES)
    assert refused.value.reason == "CIRCUIT_OPEN"
    billed = await entries(guards, tenant)
    assert [e.outcome for e in billed] == ["ERROR"] * 5
    # Never connected: the request never left, so nothing is billed.
    nothing = (0, 0, Decimal(0))
    assert all((e.prompt_tokens, e.completion_tokens, e.cost_usd) == nothing for e in billed)
    assert all(e.error_reason == "UNAVAILABLE" for e in billed)
    # The tenant's other endpoints are not affected.
    assert (await guards.breakers.get(tenant, provider_name("openai"))).state == "CLOSED"
    ok = guards.wrap_model_client(
        OfflineChatCompletionClient(),
        CallInfo(new_scope(tenant), "amy", "offline", "offline", "agent_reply"),
    )
    await ok.create(MESSAGES)


async def test_a_workflow_step_is_billed_to_its_execution(guards: CostGuards, tenant: str) -> None:
    base = new_scope(tenant)
    step = TurnScope(base.principal, "", base.turn_id, execution_id="exec-1", step_id="analyse")
    client = guards.wrap_model_client(OfflineChatCompletionClient(), call(step))
    await client.create(MESSAGES)
    [entry] = await entries(guards, tenant)
    assert (entry.conversation_id, entry.execution_id, entry.step_id) == ("", "exec-1", "analyse")


async def test_a_turns_usage_counts_what_the_ledger_bills_for_a_failed_call(
    guards: CostGuards, tenant: str
) -> None:
    # The endpoint is down (nothing listens on port 9): the request never left, nothing is
    # billed. The turn's meter reads the billed client's usage: it says what the ledger says.
    down = OpenAICompatChatCompletionClient(
        model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0
    )
    meter = Meter()
    client = MeteredClient(guards.wrap_model_client(down, call(new_scope(tenant))), meter)
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for a refusal
        await client.create(MESSAGES)
    [entry] = await entries(guards, tenant)
    assert (entry.outcome, entry.prompt_tokens, entry.cost_usd) == ("ERROR", 0, Decimal(0))
    assert (meter.prompt_tokens, meter.completion_tokens) == (0, 0)
    # A second, successful call adds only its own usage.
    ok = MeteredClient(
        guards.wrap_model_client(
            OfflineChatCompletionClient(),
            CallInfo(new_scope(tenant), "amy", "offline", "offline", "agent_reply"),
        ),
        meter,
    )
    result = await ok.create(MESSAGES)
    assert meter.prompt_tokens == entry.prompt_tokens + result.usage.prompt_tokens
