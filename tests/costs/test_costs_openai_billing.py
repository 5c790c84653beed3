"""What a conversation pays for calls to an OpenAI-compatible endpoint that misbehaves, as
a client sees it through the API (ledger, budgets, the turn's usage): a call the endpoint
refuses (429, 5xx) costs nothing and frees its reservation, a call cut off after part of
its answer costs what it used, and an endpoint that keeps streaming past max_tokens is cut
there, so that the call costs no more than was reserved for it.

Each test runs in a tenant of its own, whose breakers and budgets no other test reads."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from autogen_core.models import LLMMessage, SystemMessage, UserMessage
from convergio import AsyncClient
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import events_pb2
from convergio.cost.v1 import cost_pb2
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ledger import LedgerEntry
from convergio_server.domain.costs.ports import BudgetLimits
from convergio_server.domain.costs.prices import call_cost
from convergio_server.domain.guards import CallInfo
from convergio_server.domain.models.errors import ModelError
from convergio_server.domain.models.openai_compat import OpenAICompatChatCompletionClient
from convergio_server.storage.costs import PgCostStore

from tests.conversations.conftest import collect, kinds, new_conversation, switch_on
from tests.costs.costs_support import new_scope
from tests.models.openai_stub import Action, OpenAIStub, openai_stub
from tests.support.server import RunningServer

# The stub answers with the model name it was asked for; AutoGen expects OpenAI's dated
# names for the models it knows and warns.
pytestmark = pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")

CONVERSATION = common_pb2.BUDGET_SCOPE_CONVERSATION


@contextlib.asynccontextmanager
async def tenant_operator(server: RunningServer, streaming: bool) -> AsyncIterator[AsyncClient]:
    """An operator of a tenant of its own, whose agents stream their calls or not."""
    tenant = f"billing-{uuid.uuid4().hex[:12]}"
    if streaming:
        await switch_on(server, "true_streaming", tenant)
    _, key = await server.server.keys.create(tenant, "billing test", ["operator"])
    async with AsyncClient(server.target, api_key=key) as client:
        yield client


@pytest.fixture
async def ops(server: RunningServer) -> AsyncIterator[AsyncClient]:
    """An operator of a tenant of this test only, whose agents stream."""
    async with tenant_operator(server, streaming=True) as client:
        yield client


def _selection(stub: OpenAIStub, max_output_tokens: int = 0) -> common_pb2.ModelSelection:
    return common_pb2.ModelSelection(
        provider=common_pb2.MODEL_PROVIDER_OPENAI,
        model="gpt-4o",
        max_output_tokens=max_output_tokens,
        endpoint=common_pb2.ModelEndpoint(base_url=stub.base_url),
    )


async def _ledger(
    guards: CostGuards, ops: AsyncClient, conversation_id: str
) -> list[cost_pb2.LedgerEntry]:
    await guards.ledger.flush()  # rows are written in batches, off the streaming path
    return list((await ops.costs.list_ledger_entries(conversation_id=conversation_id)).entries)


async def _conversation_budget(ops: AsyncClient, conversation_id: str) -> cost_pb2.Budget:
    return (await ops.costs.get_budget(scope=CONVERSATION, subject=conversation_id)).budget


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "not-streamed"])
@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limited"), (503, "server_error")])
async def test_a_call_the_endpoint_refuses_costs_nothing(
    server: RunningServer, guards: CostGuards, status: int, kind: str, streaming: bool
) -> None:
    async with tenant_operator(server, streaming) as ops:
        await _refused_call_costs_nothing(guards, ops, status, kind, streaming)


async def _refused_call_costs_nothing(
    guards: CostGuards, ops: AsyncClient, status: int, kind: str, streaming: bool
) -> None:
    async with openai_stub() as stub:
        stub.then(*[Action("status", status=status)] * 4)  # the call and its three retries
        cid = await new_conversation(ops, agent="amy", model=_selection(stub))
        events = await collect(ops.conversations.send(conversation_id=cid, content="Revenue?"))
    assert len(stub.requests) == 4
    assert all(bool(r.body.get("stream")) is streaming for r in stub.requests)
    (error,) = [e.error for e in events if e.HasField("error")]
    assert error.reason == common_pb2.ERROR_REASON_UNAVAILABLE and error.metadata["kind"] == kind
    done = events[-1].turn_completed
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (0, 0)
    assert Decimal(done.cost_usd) == 0
    # The attempt is in the ledger, at no cost.
    (entry,) = await _ledger(guards, ops, cid)
    assert entry.outcome == cost_pb2.CALL_OUTCOME_ERROR
    assert entry.error_reason == common_pb2.ERROR_REASON_UNAVAILABLE
    assert (entry.prompt_tokens, entry.completion_tokens) == (0, 0)
    assert Decimal(entry.cost_usd) == 0
    # Its reservation is released, and nothing is spent.
    budget = await _conversation_budget(ops, cid)
    assert Decimal(budget.reserved_usd) == 0 and Decimal(budget.spent_total_usd) == 0
    assert Decimal(budget.spent_today_usd) == 0


async def test_a_call_cut_off_mid_answer_costs_what_it_used(
    guards: CostGuards, ops: AsyncClient
) -> None:
    stats = guards.call_stats
    model = ("openai", "gpt-4o")
    failed_before, cost_before = stats.ended[(*model, "ERROR")], stats.cost_usd.get(model, 0)
    async with openai_stub() as stub:
        stub.then(Action("cut"))  # "Hello from the", then the connection drops
        cid = await new_conversation(ops, agent="amy", model=_selection(stub))
        events = await collect(ops.conversations.send(conversation_id=cid, content="Revenue?"))
    assert len(stub.requests) == 1  # an answer that began is not asked for again
    (error,) = [e.error for e in events if e.HasField("error")]
    assert error.metadata["kind"] == "invalid_response"
    (entry,) = await _ledger(guards, ops, cid)
    assert entry.outcome == cost_pb2.CALL_OUTCOME_ERROR
    # The prompt sent and the three words streamed before the failure.
    assert entry.prompt_tokens > 0 and entry.completion_tokens == 3
    price = guards.prices.quote("openai", "gpt-4o").price
    cost = call_cost(price, entry.prompt_tokens, 3)
    assert Decimal(entry.cost_usd) == cost > 0
    done = events[-1].turn_completed
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (entry.prompt_tokens, 3)
    assert Decimal(done.cost_usd) == cost
    budget = await _conversation_budget(ops, cid)
    assert Decimal(budget.reserved_usd) == 0 and Decimal(budget.spent_total_usd) == cost
    # The metrics count the failed call against its model, at what it cost.
    assert stats.ended[(*model, "ERROR")] == failed_before + 1
    assert stats.cost_usd[model] - cost_before == cost


async def test_an_endpoint_streaming_past_max_tokens_is_cut_at_its_reservation(
    guards: CostGuards, ops: AsyncClient
) -> None:
    limit = Decimal("0.02")  # room for the call as reserved, not for the endpoint's 3,000 words
    async with openai_stub() as stub:
        stub.then(Action("runaway", words=3000))
        cid = await new_conversation(ops, agent="amy", model=_selection(stub, max_output_tokens=40))
        await ops.costs.set_budget(
            budget=cost_pb2.Budget(scope=CONVERSATION, subject=cid, total_limit_usd=str(limit))
        )
        events = await collect(ops.conversations.send(conversation_id=cid, content="Revenue?"))
        await stub.answered()
    assert stub.requests[0].body["max_tokens"] == 40
    assert stub.requests[0].hung_up  # the platform stopped reading and closed the stream
    assert "error" not in kinds(events)
    done = events[-1].turn_completed
    assert done.stop_reason == events_pb2.STOP_REASON_COMPLETED
    # The message ends where its length limit is, as a length-capped answer ends.
    (message,) = [e.message_completed for e in events if e.HasField("message_completed")]
    assert message.content == " ".join(f"word{i}" for i in range(40))
    (entry,) = await _ledger(guards, ops, cid)
    assert entry.outcome == cost_pb2.CALL_OUTCOME_OK
    assert entry.prompt_tokens > 0 and entry.completion_tokens == 40
    price = guards.prices.quote("openai", "gpt-4o").price
    # Billed as reserved (the prompt as counted, the answer's cap), not as the endpoint went.
    cost = call_cost(price, entry.prompt_tokens, 40)
    assert Decimal(entry.cost_usd) == cost
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (entry.prompt_tokens, 40)
    budget = await _conversation_budget(ops, cid)
    assert Decimal(budget.spent_total_usd) == cost <= limit
    assert Decimal(budget.reserved_usd) == 0
    # Nothing went past a limit: the tenant's breaker, which a budget breach opens, is closed.
    tenant = await ops.costs.get_circuit_breaker(scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT)
    assert tenant.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_CLOSED


async def test_a_failed_stream_is_billed_no_more_answer_than_was_reserved(
    guards: CostGuards, tenant: str
) -> None:
    """Streamed text is counted locally when a call fails: "Wait..." is four tokens to the
    local tokenizer, one to an endpoint that sent it as one. The bill of the answer stays
    within its cap."""
    messages: list[LLMMessage] = [
        SystemMessage(content="You are Amy, the chief financial officer."),
        UserMessage(content="What drove revenue this quarter?", source="user"),
    ]
    async with openai_stub() as stub:
        stub.then(Action("cut", cut_after=("Wait...", " what?!", " No...")))
        model = OpenAICompatChatCompletionClient(
            model="gpt-4o", base_url=stub.base_url, max_retries=0, max_output_tokens=3
        )
        scope = new_scope(tenant)
        client = guards.wrap_model_client(
            model, CallInfo(scope, "amy", "openai", "gpt-4o", "agent_reply", 3)
        )
        streamed: list[str] = []
        with pytest.raises(ModelError) as failed:
            async for item in client.create_stream(messages):
                streamed.append(str(item))
    assert failed.value.kind == "invalid_response"
    assert streamed == ["Wait...", " what?!", " No..."]
    await guards.ledger.flush()
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    entries: list[LedgerEntry] = await store.list_entries(
        tenant, user="", conversation_id="", start=None, end=None, after=None, limit=10
    )
    (entry,) = entries
    prompt = model.count_tokens(messages)
    assert (entry.outcome, entry.prompt_tokens, entry.completion_tokens) == ("ERROR", prompt, 3)
    price = guards.prices.quote("openai", "gpt-4o").price
    assert entry.cost_usd == call_cost(price, prompt, 3)  # what was reserved, not more
    spent = await guards.budgets.spent(
        tenant, BudgetLimits("CONVERSATION", "", None, None, None, None), scope.conversation_id
    )
    assert spent["reserved"] == 0
