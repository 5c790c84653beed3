"""The API surface every capability shares: health, reflection, auth, validation,
error details, request ids and message limits, against a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2
from convergio.cost.v1 import cost_pb2
from convergio.workflow.v1 import workflow_pb2, workflow_pb2_grpc

from tests.costs.costs_support import ledger_entry
from tests.support.server import RunningServer, running_server, server_settings

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
CONVERGIO_SERVICES = [
    "convergio.approval.v1.ApprovalService",
    "convergio.conversation.v1.ConversationService",
    "convergio.cost.v1.CostService",
    "convergio.flag.v1.FlagService",
    "convergio.workflow.v1.WorkflowService",
]


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_health_reports_serving_overall_and_per_service(client: AsyncClient) -> None:
    assert await client.health() == "SERVING"
    # Workflows and approvals answer UNIMPLEMENTED in this release: never ready.
    unimplemented = {
        "convergio.workflow.v1.WorkflowService",
        "convergio.approval.v1.ApprovalService",
    }
    for service in CONVERGIO_SERVICES:
        expected = "NOT_SERVING" if service in unimplemented else "SERVING"
        assert await client.health(service) == expected, service


async def test_grpcurl_lists_services_health_and_reflection(server: RunningServer) -> None:
    listed = await asyncio.to_thread(grpcurl, server.target, "list")
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert set(CONVERGIO_SERVICES) <= names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_grpcurl_describe_shows_the_documentation(server: RunningServer) -> None:
    described = await asyncio.to_thread(
        grpcurl, server.target, "describe", "convergio.conversation.v1.SendMessageRequest"
    )
    assert described.returncode == 0, described.stderr
    # Comments come from the descriptor set with source info, not just field names.
    assert "//" in described.stdout
    assert "conversation_id" in described.stdout


async def test_grpcurl_describe_finds_a_method(server: RunningServer) -> None:
    described = await asyncio.to_thread(
        grpcurl, server.target, "describe", "convergio.flag.v1.FlagService.EvaluateFlag"
    )
    assert described.returncode == 0, described.stderr
    assert "rpc EvaluateFlag" in described.stdout and "//" in described.stdout
    unknown = await asyncio.to_thread(
        grpcurl, server.target, "describe", "convergio.flag.v1.FlagService.NoSuchMethod"
    )
    assert unknown.returncode != 0 and "not found" in unknown.stderr.lower()


async def test_grpcurl_call_with_key_reaches_the_servicer(server: RunningServer) -> None:
    called = await asyncio.to_thread(
        grpcurl,
        "-H",
        f"authorization: Bearer {server.admin_key}",
        "-d",
        "{}",
        server.target,
        "convergio.workflow.v1.WorkflowService/ListExecutions",
    )
    # Any answer but UNAUTHENTICATED proves the key was accepted end to end.
    assert "Unauthenticated" not in called.stderr
    assert called.returncode != 0 or called.stdout


async def test_missing_key_is_unauthenticated(server: RunningServer) -> None:
    async with AsyncClient(server.target, api_key=None) as anonymous:
        with pytest.raises(errors.Unauthenticated) as caught:
            await anonymous.workflows.list_workflows()
    assert "authorization" in caught.value.message
    assert caught.value.reason == "UNAUTHENTICATED"
    assert caught.value.request_id


@pytest.mark.parametrize(
    "key",
    ["not-a-key", "cvg_0123456789abcdef_" + "x" * 43, "Basic abc"],
)
async def test_malformed_or_unknown_key_is_unauthenticated(server: RunningServer, key: str) -> None:
    async with AsyncClient(server.target, api_key=key) as stranger:
        with pytest.raises(errors.Unauthenticated):
            await stranger.workflows.list_workflows()


async def test_revoked_key_is_refused(
    server: RunningServer, make_key: Callable[..., Awaitable[str]]
) -> None:
    token = await make_key("member")
    async with AsyncClient(server.target, api_key=token) as member:
        with pytest.raises(errors.Unimplemented):
            await member.workflows.list_workflows()
        key_id = token.split("_")[1]
        await server.server.keys.revoke(key_id)
        with pytest.raises(errors.Unauthenticated) as caught:
            await member.workflows.list_workflows()
    assert "revoked" in caught.value.message


async def test_wrong_role_is_permission_denied(
    server: RunningServer, make_key: Callable[..., Awaitable[str]]
) -> None:
    member = await make_key("member")
    approver = await make_key("approver")
    async with AsyncClient(server.target, api_key=member) as as_member:
        with pytest.raises(errors.PermissionDenied) as caught:
            await as_member.costs.reset_circuit_breaker(scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT)
        assert "operator" in caught.value.message
    async with AsyncClient(server.target, api_key=approver) as as_approver:
        with pytest.raises(errors.PermissionDenied):
            await as_approver.workflows.list_workflows()


async def test_unbuilt_rpcs_say_what_is_missing(client: AsyncClient) -> None:
    with pytest.raises(errors.Unimplemented) as caught:
        await client.workflows.list_workflows()
    assert "WorkflowService.ListWorkflows" in caught.value.message
    assert "workflow" in caught.value.message.split(":", 1)[1]
    assert caught.value.reason == "NOT_IMPLEMENTED"


async def test_malformed_id_names_the_field(client: AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await client.workflows.get_execution(execution_id="not-a-uuid")
    assert [v.field for v in caught.value.field_violations] == ["execution_id"]
    assert "UUID" in caught.value.field_violations[0].description


async def test_empty_required_field_names_the_field(client: AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await client.workflows.get_workflow(workflow_id="  ")
    assert caught.value.field_violations[0].field == "workflow_id"
    assert "required" in caught.value.field_violations[0].description


async def test_negative_page_size_and_bad_token(client: AsyncClient) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await client.workflows.list_executions(page_size=-1, page_token="x" * 2000)
    fields = {v.field for v in caught.value.field_violations}
    assert fields == {"page_size", "page_token"}


async def test_oversized_message_is_resource_exhausted(server: RunningServer) -> None:
    limit = server.settings.max_message_bytes
    # A raw channel that would send anything: the server must refuse, not the client.
    async with grpc.aio.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", limit * 2)]
    ) as channel:
        stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
        request = workflow_pb2.StartExecutionRequest(workflow_id="x", input="a" * (limit + 1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartExecution(
                request, metadata=(("authorization", f"Bearer {server.admin_key}"),)
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_request_id_is_returned_and_client_id_is_kept(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
        call = stub.GetExecution(
            workflow_pb2.GetExecutionRequest(execution_id="bad"),
            metadata=(
                ("authorization", f"Bearer {server.admin_key}"),
                ("x-request-id", "trace-me-42"),
            ),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        trailing = dict(await call.trailing_metadata())
    assert trailing["x-request-id"] == "trace-me-42"


async def test_server_survives_a_client_that_disconnects(server: RunningServer) -> None:
    # Cancel calls mid-flight many times, then check the server still answers.
    async with AsyncClient(server.target, api_key=server.admin_key) as short_lived:
        tasks = [asyncio.create_task(short_lived.health()) for _ in range(20)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    async with AsyncClient(server.target, api_key=server.admin_key) as again:
        assert await again.health() == "SERVING"


def test_method_roles_never_promise_what_a_servicer_refuses() -> None:
    """A servicer may refuse more than the method-level rule table does (a blanket
    `principal.require(...)`); the table must then name no more roles than the servicer
    accepts, or the first refusal tells the caller to fetch a key that is refused too."""
    import ast
    import importlib

    from convergio_server.api import servicers
    from convergio_server.api.access import AccessPolicy

    policy = AccessPolicy()
    services = [*CONVERGIO_SERVICES, "flagd.evaluation.v1.Service"]
    checked = []
    for path in sorted(Path(servicers.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"{servicers.__name__}.{path.stem}")
        for cls in ast.parse(path.read_text()).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            bases = [b.attr for b in cls.bases if isinstance(b, ast.Attribute)]
            short = next((b.removesuffix("Servicer") for b in bases if b.endswith("Servicer")), "")
            service = next((s for s in services if s.rsplit(".", 1)[1] == short), None)
            if service is None:
                continue
            for method in cls.body:
                if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
                    continue
                for call in ast.walk(method):
                    if not (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "require"
                        and call.args
                        and isinstance(call.args[0], ast.Name)
                    ):
                        continue
                    accepted = getattr(module, call.args[0].id)
                    promised = policy.roles_for(f"/{service}/{method.name}")
                    assert promised <= accepted, (service, method.name, promised, accepted)
                    checked.append(method.name)
    assert {"ListBudgets", "ListCircuitBreakers"} <= set(checked)


async def test_a_request_that_is_not_its_message_is_invalid_argument(
    server: RunningServer,
) -> None:
    # Bytes that no protobuf decoder takes: an answer with a request id, not UNKNOWN.
    async with grpc.aio.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/convergio.conversation.v1.ConversationService/ListAgents",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(
                b"\xff\xff\xff",
                metadata=(("authorization", f"Bearer {server.admin_key}"),),
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ListAgents message" in (caught.value.details() or "")
    trailers = dict(caught.value.trailing_metadata() or ())
    assert trailers.get("x-request-id")


WORDY_AGENT = """
display_name = "Wordy"
role = "Analyst: long answers"
category = "operational"
priority = 1
description = "{prompt}"
expertise = ["words"]
tools = []
system_prompt = "You analyse what you are asked about and answer at great length."
"""


@pytest.fixture
async def small(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RunningServer]:
    """A server whose answers may be at most 256 KiB, with 20 more agents described in 20 KB
    each."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for i in range(20):
        (agents / f"wordy{i}.toml").write_text(WORDY_AGENT.format(prompt="Think. " * 3000))
    settings = server_settings(
        tmp_path,
        pg_dsn,
        redis_url,
        redis_prefix,
        max_message_bytes=256 * 1024,
        rate_limit_conversations_per_hour=10_000,
        agents_dir=str(agents),
    )
    async with running_server(settings) as running:
        yield running


async def test_conversation_pages_end_before_the_message_limit(
    small: RunningServer,
) -> None:
    # 20 conversations of about 17 KB do not fit in one 256 KiB answer: the page ends
    # early and the next page token carries on, nothing lost or repeated.
    async with AsyncClient(small.target, api_key=small.admin_key) as client:
        labels = {f"k{i}": "v" * 256 for i in range(60)}
        created = {
            (
                await client.conversations.create_conversation(labels=labels)
            ).conversation.conversation_id
            for _ in range(20)
        }
        first = await client.conversations.list_conversations(page_size=50)
        assert 0 < len(first.conversations) < 20 and first.next_page_token
        seen = [c.conversation_id for c in first.conversations]
        token = first.next_page_token
        while token:
            page = await client.conversations.list_conversations(page_size=50, page_token=token)
            seen += [c.conversation_id for c in page.conversations]
            token = page.next_page_token
    assert len(seen) == len(set(seen)) and created <= set(seen)


async def test_ledger_pages_end_before_the_message_limit(small: RunningServer) -> None:
    # A thousand ledger entries (of about 300 bytes) do not fit in one 256 KiB answer.
    tenant, user = small.settings.dev_tenant, "pager-" + "p" * 100
    entries = [
        ledger_entry(tenant, Decimal("0.001"), principal=user, conversation_id=str(uuid.uuid4()))
        for _ in range(1000)
    ]
    await small.server.context.components["cost_store"].insert_entries(entries)
    async with AsyncClient(small.target, api_key=small.admin_key) as client:
        first = await client.costs.list_ledger_entries(user=user, page_size=1000)
        assert 0 < len(first.entries) < 1000 and first.next_page_token
        seen = [e.entry_id for e in first.entries]
        token = first.next_page_token
        while token:
            page = await client.costs.list_ledger_entries(
                user=user, page_size=1000, page_token=token
            )
            seen += [e.entry_id for e in page.entries]
            token = page.next_page_token
    assert sorted(seen) == sorted(e.entry_id for e in entries)


async def test_an_answer_over_the_message_limit_is_an_error_with_a_request_id(
    small: RunningServer,
) -> None:
    # A list that does not page by size (the roster, which its operator writes): gRPC would
    # fail the answer after the handler returned, logged as OK and without a request id.
    async with AsyncClient(small.target, api_key=small.admin_key) as client:
        with pytest.raises(errors.QuotaExceeded) as too_large:
            await client.conversations.list_agents(page_size=100)
        assert too_large.value.reason == "RESPONSE_TOO_LARGE"
        assert "smaller page" in too_large.value.message
        assert too_large.value.request_id
        two = await client.conversations.list_agents(page_size=2)
        assert len(two.agents) == 2


async def test_transcript_and_turn_pages_end_before_the_message_limit(
    small: RunningServer,
) -> None:
    # Nine turns of 30 KB messages do not fit in one 256 KiB answer: the transcript's page
    # ends early, and the pages together hold every message once, in order.
    async with AsyncClient(small.target, api_key=small.admin_key) as client:
        cid = (
            await client.conversations.create_conversation(
                team=conversation_pb2.Team(single_agent="amy")
            )
        ).conversation.conversation_id
        for turn in range(9):
            async for _ in client.conversations.send(
                conversation_id=cid, content=f"Turn {turn}: " + "word " * 6000
            ):
                pass
        first = await client.conversations.list_messages(conversation_id=cid, page_size=50)
        assert 0 < len(first.messages) < 18 and first.next_page_token
        messages = list(first.messages)
        token = first.next_page_token
        while token:
            page = await client.conversations.list_messages(
                conversation_id=cid, page_size=50, page_token=token
            )
            messages += page.messages
            token = page.next_page_token
        turns = await client.conversations.list_turns(conversation_id=cid, page_size=50)
    users = [m.content for m in messages if m.source == "user"]
    assert [u.split(":")[0] for u in users] == [f"Turn {t}" for t in range(9)]
    assert len(messages) == 18 and len({m.message_id for m in messages}) == 18
    assert len(turns.turns) == 9 and not turns.next_page_token
