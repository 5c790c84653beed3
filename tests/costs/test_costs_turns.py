"""Budgets acting on real conversation turns: alerts on the stream at 70% and 85%, new
turns refused at 100% with a QuotaFailure naming the budget, the ledger never over the
limit. The offline model is priced here (it is free by default) so turns cost money."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import conversation_pb2, events_pb2
from convergio.cost.v1 import cost_pb2

from tests.support.server import RunningServer, running_server, server_settings

# $10 per million tokens either way: a turn of about a thousand tokens costs about a cent.
PRICES = '[models."offline"]\ninput = "10"\noutput = "10"\ncached_input = "10"\n'
# Room for a few turns between the 70% and the 85% alert (a turn costs more as the history
# and the tool descriptions grow).
LIMIT = Decimal("0.10")


@pytest.fixture(params=[PRICES])
async def priced(
    request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RunningServer]:
    prices = tmp_path / "prices.toml"
    prices.write_text(request.param)
    settings = server_settings(
        tmp_path / "data",
        pg_dsn,
        redis_url,
        redis_prefix,
        cost_prices_file=prices,
        cost_default_max_output_tokens=120,
    )
    async with running_server(settings) as running:
        yield running


@contextlib.asynccontextmanager
async def tenant_client(server: RunningServer, prefix: str) -> AsyncIterator[AsyncClient]:
    """A client of a new tenant of its own (member and operator)."""
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _, key = await server.server.keys.create(tenant, prefix, ["member", "operator"])
    async with AsyncClient(server.target, api_key=key) as client:
        yield client


async def amy_conversation(client: AsyncClient) -> str:
    created = await client.conversations.create_conversation(
        team=conversation_pb2.Team(single_agent="amy")
    )
    return created.conversation.conversation_id


async def test_budget_alerts_then_refusal_and_never_overspent(priced: RunningServer) -> None:
    async with tenant_client(priced, "budget") as client:
        conversation_id = await amy_conversation(client)
        await client.costs.set_budget(
            budget=cost_pb2.Budget(
                scope=common_pb2.BUDGET_SCOPE_CONVERSATION,
                subject=conversation_id,
                total_limit_usd=str(LIMIT),
            )
        )
        thresholds: list[int] = []
        refused: errors.QuotaExceeded | None = None
        stopped: list[events_pb2.ConversationEvent] = []
        for turn in range(40):
            try:
                events = [
                    event
                    async for event in client.conversations.send(
                        conversation_id, f"Turn {turn}: summarise our cash position."
                    )
                ]
            except errors.QuotaExceeded as exc:  # refused before the turn started
                refused = exc
                break
            thresholds += [
                e.budget_alert.threshold_percent
                for e in events
                if e.WhichOneof("kind") == "budget_alert"
            ]
            last = events[-1]
            assert last.WhichOneof("kind") == "turn_completed"
            if last.turn_completed.stop_reason == events_pb2.STOP_REASON_BUDGET_EXHAUSTED:
                stopped = events
                break
        # Either the next turn was refused, or it stopped cleanly at its model call
        # because what remained could not cover the call's worst case.
        if refused is not None:
            assert any("budget" in v.subject for v in refused.quota_violations)
        else:
            assert stopped, "the budget never stopped a turn"
            errors_seen = [e.error for e in stopped if e.WhichOneof("kind") == "error"]
            assert errors_seen
            assert errors_seen[0].reason == common_pb2.ERROR_REASON_BUDGET_EXHAUSTED
            assert "budget:conversation:" in errors_seen[0].metadata["budget"]
        # Each warning reached the stream once, in order.
        assert [t for t in thresholds if t < 100] == [70, 85]
        budget = await client.costs.get_budget(
            scope=common_pb2.BUDGET_SCOPE_CONVERSATION, subject=conversation_id
        )
    spent = Decimal(budget.budget.spent_total_usd)
    assert Decimal(0) < spent <= LIMIT


async def test_a_new_conversation_counts_its_first_turn_from_zero(priced: RunningServer) -> None:
    """Its counters start at zero when it is created, in every period: what its budget
    reports after the first turn is what that turn cost, no more."""
    async with tenant_client(priced, "first") as client:
        conversation_id = await amy_conversation(client)
        scope = common_pb2.BUDGET_SCOPE_CONVERSATION
        before = (await client.costs.get_budget(scope=scope, subject=conversation_id)).budget
        spent = (before.spent_today_usd, before.spent_month_usd, before.spent_total_usd)
        assert [Decimal(v) for v in spent] == [0, 0, 0]
        events = [e async for e in client.conversations.send(conversation_id, "Hello there")]
        cost = Decimal(events[-1].turn_completed.cost_usd)
        assert cost > 0
        after = (await client.costs.get_budget(scope=scope, subject=conversation_id)).budget
    assert (
        Decimal(after.spent_today_usd),
        Decimal(after.spent_month_usd),
        Decimal(after.spent_total_usd),
    ) == (cost, cost, cost)


# Prices whose costs need nine decimals.
FINE_PRICES = '[models."offline"]\ninput = "0.123"\noutput = "0.457"\ncached_input = "0.123"\n'


@pytest.mark.parametrize("priced", [FINE_PRICES], indirect=True)
async def test_turn_costs_add_up_to_the_ledger_exactly(priced: RunningServer) -> None:
    async with tenant_client(priced, "exact") as client:
        conversation_id = await amy_conversation(client)
        costs = []
        for question in ("Hello there", "What is the ROI of 100 for 130?"):
            events = [e async for e in client.conversations.send(conversation_id, question)]
            costs.append(Decimal(events[-1].turn_completed.cost_usd))
        await priced.server.context.components["guards"].ledger.flush()
        ledger = await client.costs.list_ledger_entries(conversation_id=conversation_id)
        turns = await client.conversations.list_turns(conversation_id=conversation_id)
        conversation = await client.conversations.get_conversation(conversation_id=conversation_id)
    billed = sum((Decimal(e.cost_usd) for e in ledger.entries), Decimal(0))
    assert any(c != c.quantize(Decimal("0.000001")) for c in costs)  # finer than 6 decimals
    assert sum(costs) == billed
    assert sorted(Decimal(t.cost_usd) for t in turns.turns) == sorted(costs)
    assert Decimal(conversation.conversation.cost_usd) == billed


async def test_a_cost_update_follows_each_model_call_as_the_ledger_has_it(
    priced: RunningServer,
) -> None:
    async with tenant_client(priced, "updates") as client:
        team = await client.conversations.create_conversation(
            team=conversation_pb2.Team(agents=conversation_pb2.AgentNames(names=["luca", "amy"]))
        )
        turns = [
            # Speaker selections and two agents' answers.
            (team.conversation.conversation_id, "What is the refund policy budget risk?"),
            # A call that chooses a tool, then the answer with its result.
            (await amy_conversation(client), "What is the ROI of 100 for 130?"),
        ]
        for conversation_id, question in turns:
            events = [e async for e in client.conversations.send(conversation_id, question)]
            await priced.server.context.components["guards"].ledger.flush()
            ledger = await client.costs.list_ledger_entries(conversation_id=conversation_id)
            updates = [e.cost_update for e in events if e.HasField("cost_update")]
            done = events[-1].turn_completed
            assert len(updates) == len(ledger.entries) == done.usage.model_calls > 1
            # Each update counts one more call, and what it adds is that call's ledger entry.
            assert [u.turn_usage.model_calls for u in updates] == list(range(1, len(updates) + 1))
            added, before = [], (0, 0, Decimal(0))
            for update in updates:
                now = (
                    update.turn_usage.prompt_tokens,
                    update.turn_usage.completion_tokens,
                    Decimal(update.turn_cost_usd),
                )
                added.append((now[0] - before[0], now[1] - before[1], now[2] - before[2]))
                before = now
            assert sorted(added) == sorted(
                (e.prompt_tokens, e.completion_tokens, Decimal(e.cost_usd)) for e in ledger.entries
            )
            assert before == (
                done.usage.prompt_tokens, done.usage.completion_tokens, Decimal(done.cost_usd)
            )  # fmt: skip
        kinds = [e.WhichOneof("kind") for e in events]
        # The tool-choosing call's update comes before the tool runs.
        assert kinds.index("cost_update") < kinds.index("tool_call")


async def test_a_call_cut_short_by_a_cancel_has_its_cost_update_too(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    settings = server_settings(
        tmp_path / "data", pg_dsn, redis_url, redis_prefix,
        cost_prices_file=prices, offline_tokens_per_second=20.0,
    )  # fmt: skip
    async with running_server(settings) as paced, tenant_client(paced, "cut") as client:
        conversation_id = await amy_conversation(client)
        stream = client.conversations.send(conversation_id, "Explain next year's plan in detail")
        events = []
        async for event in stream:
            events.append(event)
            if event.HasField("speaker_selected"):  # its model call is under way
                break
        await client.conversations.cancel_turn(conversation_id=conversation_id)
        events += [event async for event in stream]
    done = events[-1].turn_completed
    assert done.stop_reason == events_pb2.STOP_REASON_CANCELLED
    updates = [e.cost_update for e in events if e.HasField("cost_update")]
    # The billed part of the call that was cut short, told before the turn's end.
    assert updates and Decimal(updates[-1].turn_cost_usd) == Decimal(done.cost_usd) > 0
    assert updates[-1].turn_usage == done.usage
