"""Provider circuit breakers, one per model endpoint: which failed calls count, how the
endpoint is keyed (as GetCircuitBreaker names it), and, through the API, a conversation whose
endpoint answers HTTP 500 opening that endpoint's breaker and no other (the tenant's
included). The ledger entry of a
failed call has the reason of the turn's Error event.

Each test runs in a tenant of its own (`breaker-...`), so no shared tenant's breaker moves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from autogen_core.models import LLMMessage, SystemMessage, UserMessage
from convergio import AsyncClient
from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import events_pb2
from convergio.cost.v1 import cost_pb2
from convergio_server.domain.costs.breaker import endpoint_key, provider_name
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ledger import LedgerEntry
from convergio_server.domain.errors import Unavailable
from convergio_server.domain.guards import CallInfo
from convergio_server.domain.models.errors import ModelError
from convergio_server.domain.models.openai_compat import OpenAICompatChatCompletionClient
from convergio_server.storage.costs import PgCostStore

from tests.conversations.conftest import collect, kinds, new_conversation
from tests.costs.costs_support import new_scope
from tests.models.openai_stub import Action, OpenAIStub, openai_stub
from tests.support.server import RunningServer

MESSAGES: list[LLMMessage] = [
    SystemMessage(content="You are Amy, the chief financial officer."),
    UserMessage(content="What drove revenue this quarter?", source="user"),
]
FAILING = [Action("status", status=500) for _ in range(60)]  # retries included

# The stub answers with the model name it was asked for; AutoGen expects OpenAI's dated
# names for the models it knows and warns.
pytestmark = pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")


@pytest.fixture
async def own_tenant(server: RunningServer) -> str:
    """A tenant of this test only: its breakers are opened on purpose."""
    tenant = f"breaker-{uuid.uuid4().hex[:12]}"
    await server.server.keys.create(tenant, "breaker test", ["operator"], principal="ops")
    return tenant


@pytest.fixture
def key_of(server: RunningServer, own_tenant: str) -> Callable[[str], Awaitable[str]]:
    async def create(role: str) -> str:
        _, token = await server.server.keys.create(own_tenant, f"breaker {role}", [role])
        return token

    return create


@pytest.fixture
async def ops(
    key_of: Callable[[str], Awaitable[str]], server: RunningServer
) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.target, api_key=await key_of("operator")) as client:
        yield client


async def entries(guards: CostGuards, tenant: str, conversation_id: str = "") -> list[LedgerEntry]:
    await guards.ledger.flush()
    store = guards.budgets.store
    assert isinstance(store, PgCostStore)
    found = await store.list_entries(
        tenant, user="", conversation_id=conversation_id, start=None, end=None, after=None,
        limit=100,
    )  # fmt: skip
    return sorted(found, key=lambda e: e.time)


def test_endpoint_keys_follow_the_documented_format() -> None:
    assert endpoint_key("openai") == "openai"
    assert endpoint_key("openai", "https://api.openai.com/v1") == "openai"
    assert endpoint_key("openai", "http://localhost:11434/v1") == "openai:localhost:11434"
    assert endpoint_key("openai", "http://LocalHost:11434/v1/") == "openai:localhost:11434"
    assert endpoint_key("openai", "https://llm.example.com/v1") == "openai:llm.example.com:443"
    assert endpoint_key("openai", "http://[::1]:8080/v1") == "openai:[::1]:8080"
    assert endpoint_key("offline") == "offline"
    # GetCircuitBreaker finds the breaker whatever the case of the key it is given.
    assert provider_name("OpenAI:LocalHost:11434") == "provider:openai:localhost:11434"


async def test_only_the_endpoints_own_failures_count_and_a_success_resets(
    guards: CostGuards, own_tenant: str
) -> None:
    async with openai_stub() as stub:
        model = OpenAICompatChatCompletionClient(
            model="gpt-4o-mini", base_url=stub.base_url, max_retries=0, timeout_seconds=0.3
        )
        name = provider_name(f"openai:127.0.0.1:{stub.port}")

        async def call_fails_with(action: Action) -> ModelError:
            stub.then(action)
            client = guards.wrap_model_client(
                model, CallInfo(new_scope(own_tenant), "amy", "openai", "gpt-4o-mini", "x")
            )
            with pytest.raises(ModelError) as failed:
                await client.create(MESSAGES)
            return failed.value

        async def failures() -> int:
            return (await guards.breakers.get(own_tenant, name)).consecutive_failures

        # The endpoint's fault: a 5xx, a 429, a timeout, an answer that is not the protocol.
        assert (await call_fails_with(Action("status", status=500))).kind == "server_error"
        assert (await call_fails_with(Action("status", status=429))).kind == "rate_limited"
        assert (await call_fails_with(Action("hang"))).kind == "timeout"
        assert (await call_fails_with(Action("garbage"))).kind == "invalid_response"
        assert await failures() == 4
        # The caller's or the configuration's: the endpoint answered.
        for status, kind in [(400, "bad_request"), (401, "authentication"), (404, "not_found")]:
            assert (await call_fails_with(Action("status", status=status))).kind == kind
        assert await failures() == 4
        # A success starts the count again.
        stub.then(Action("text"))
        await guards.wrap_model_client(
            model, CallInfo(new_scope(own_tenant), "amy", "openai", "gpt-4o-mini", "x")
        ).create(MESSAGES)
        assert await failures() == 0
        assert (await guards.breakers.get(own_tenant, name)).state == "CLOSED"

        billed = await entries(guards, own_tenant)
    # Each failed call's ledger reason is its Error event's.
    assert [(e.outcome, e.error_reason) for e in billed] == [
        ("ERROR", "UNAVAILABLE"),  # 500
        ("ERROR", "UNAVAILABLE"),  # 429
        ("ERROR", "DEADLINE_EXCEEDED"),  # timeout
        ("ERROR", "UNAVAILABLE"),  # garbage
        ("ERROR", "FAILED_PRECONDITION"),  # 400
        ("ERROR", "FAILED_PRECONDITION"),  # 401
        ("ERROR", "FAILED_PRECONDITION"),  # 404
        ("OK", ""),
    ]


async def _turn(client: AsyncClient, cid: str, content: str) -> list[events_pb2.ConversationEvent]:
    return await collect(client.conversations.send(conversation_id=cid, content=content))


def _error(events: list[events_pb2.ConversationEvent]) -> common_pb2.ErrorEvent:
    (error,) = [e.error for e in events if e.HasField("error")]
    return error


def _selection(stub: OpenAIStub) -> common_pb2.ModelSelection:
    return common_pb2.ModelSelection(
        provider=common_pb2.MODEL_PROVIDER_OPENAI,
        model="gpt-4o",
        endpoint=common_pb2.ModelEndpoint(base_url=stub.base_url),
    )


async def test_a_failing_endpoint_opens_its_breaker_and_no_other(
    server: RunningServer, guards: CostGuards, own_tenant: str, ops: AsyncClient
) -> None:
    provider = cost_pb2.CIRCUIT_BREAKER_SCOPE_PROVIDER
    async with openai_stub() as down, openai_stub() as up:
        down.then(*FAILING)
        key = f"openai:127.0.0.1:{down.port}"
        cid = await new_conversation(ops, agent="amy", model=_selection(down))
        for i in range(5):
            events = await _turn(ops, cid, f"Question {i}")
            assert kinds(events)[-1] == "turn_completed"
            assert _error(events).reason == common_pb2.ERROR_REASON_UNAVAILABLE
        got = (await ops.costs.get_circuit_breaker(scope=provider, provider=key)).circuit_breaker
        assert (got.state, got.consecutive_failures, got.open_cause) == (
            cost_pb2.CIRCUIT_STATE_OPEN, 5, cost_pb2.CIRCUIT_OPEN_CAUSE_FAILURES,
        )  # fmt: skip
        assert got.provider == key and "500" in got.reason
        # Typed with capitals, the key names the same breaker.
        upper = await ops.costs.get_circuit_breaker(scope=provider, provider=key.upper())
        assert upper.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_OPEN
        listed = (await ops.costs.list_circuit_breakers()).circuit_breakers
        assert [b.provider for b in listed if b.scope == provider] == [key]
        default = await ops.costs.get_circuit_breaker(scope=provider, provider="openai")
        assert default.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_CLOSED
        assert default.circuit_breaker.consecutive_failures == 0

        # The endpoint's own breaker refuses its calls, without asking the endpoint.
        asked = len(down.requests)
        for i in range(5, 7):
            events = await _turn(ops, cid, f"Question {i}")
            refused = _error(events)
            assert refused.reason == common_pb2.ERROR_REASON_CIRCUIT_OPEN
            assert refused.metadata["breaker"] == provider_name(key)
        assert len(down.requests) == asked

        # Seven turns failed by one endpoint (five failed calls, two refused by its breaker)
        # leave the tenant's breaker as it was: one caller's broken endpoint does not shut
        # the tenant out.
        tenant = cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT
        own = (await ops.costs.get_circuit_breaker(scope=tenant)).circuit_breaker
        assert (own.state, own.consecutive_failures) == (cost_pb2.CIRCUIT_STATE_CLOSED, 0)

        # Another endpoint of the same tenant is not affected.
        up.then(Action("text", text="Revenue grew 8%"))
        other = await new_conversation(ops, agent="amy", model=_selection(up))
        events = await _turn(ops, other, "Question 7")
        assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        up_key = f"openai:127.0.0.1:{up.port}"
        fine = await ops.costs.get_circuit_breaker(scope=provider, provider=up_key)
        assert fine.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_CLOSED

    # The ledger has the five failed calls (not the refused one), each with its Error
    # event's reason; through the API as ERROR_REASON_UNAVAILABLE.
    billed = await entries(guards, own_tenant, cid)
    assert [(e.outcome, e.error_reason) for e in billed] == [("ERROR", "UNAVAILABLE")] * 5
    listed_entries = (await ops.costs.list_ledger_entries(conversation_id=cid)).entries
    assert [e.error_reason for e in listed_entries] == [common_pb2.ERROR_REASON_UNAVAILABLE] * 5


async def test_an_open_provider_breaker_refuses_calls_to_its_endpoint_only(
    guards: CostGuards, own_tenant: str
) -> None:
    async with openai_stub() as stub:
        model = OpenAICompatChatCompletionClient(
            model="gpt-4o-mini", base_url=stub.base_url, max_retries=0
        )
        await guards.breakers.trip(
            own_tenant, provider_name(f"openai:127.0.0.1:{stub.port}"), "FAILURES", "test"
        )
        client = guards.wrap_model_client(
            model, CallInfo(new_scope(own_tenant), "amy", "openai", "gpt-4o-mini", "x")
        )
        with pytest.raises(Unavailable) as refused:
            await client.create(MESSAGES)
        assert refused.value.reason == "CIRCUIT_OPEN" and not stub.requests
        # The same provider at its own endpoint has a breaker of its own.
        assert (await guards.breakers.get(own_tenant, provider_name("openai"))).state == "CLOSED"
