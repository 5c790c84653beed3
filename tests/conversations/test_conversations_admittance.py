"""A turn's team starts while the store admits the turn: its first model call overlaps the
admission, its tools and later calls wait for it, and a turn that is not admitted stops."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from autogen_agentchat.messages import (
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core.models import CreateResult, UserMessage
from convergio import AsyncClient
from convergio_server.domain.conversations.admittance import Admittance, AdmittedClient
from convergio_server.domain.conversations.model import Turn, TurnOptions
from convergio_server.domain.conversations.runner import TurnExecution
from convergio_server.domain.models.offline import OfflineChatCompletionClient

from tests.conversations.conftest import FINANCE_QUESTION, TENANT, new_conversation
from tests.support.server import RunningServer

LONG = "Explain the strategy for next year in detail"


async def answer(client: AdmittedClient, question: str) -> CreateResult:
    result = None
    async for item in client.create_stream([UserMessage(content=question, source="user")]):
        if isinstance(item, CreateResult):
            result = item
    assert result is not None
    return result


async def test_the_first_call_starts_at_once_and_the_next_once_admitted() -> None:
    admittance = Admittance()
    client = AdmittedClient(OfflineChatCompletionClient(), admittance)
    first = await answer(client, "Hello")
    assert isinstance(first.content, str) and first.content
    second = asyncio.ensure_future(answer(client, "And then?"))
    for _ in range(50):  # the offline model answered the first call in fewer turns of the loop
        await asyncio.sleep(0)
    assert not second.done()
    admittance.admit()
    assert isinstance((await asyncio.wait_for(second, 10)).content, str)
    # Once admitted, nothing waits.
    assert isinstance((await answer(client, "Thanks")).content, str)


async def _prepared(server: RunningServer, client: AsyncClient, content: str) -> TurnExecution:
    """A turn of a new conversation whose team is being prepared by the runner, as it is
    while the store admits the turn, and not admitted yet."""
    service: Any = server.server.context.components["conversations"]
    cid = await new_conversation(client)
    conversation = await service.store.get(TENANT, cid)
    principal = service.runner.principal_of(TENANT, conversation.created_by)
    turn = Turn(
        tenant_id=TENANT, conversation_id=cid, id=str(uuid.uuid4()),
        request_id=uuid.uuid4().hex, status="QUEUED", content=content,
        options=TurnOptions(max_turns=1), user_message_id=str(uuid.uuid4()),
        created_by=conversation.created_by,
    )  # fmt: skip
    execution: TurnExecution = service.runner.prepare(principal, conversation, turn)
    return execution


async def _until(execution: TurnExecution, kind: type, seen: list[Any]) -> None:
    """Read what the team queued for the turn's loop until an item of `kind`."""
    async with asyncio.timeout(20):
        while not any(isinstance(item, kind) for item in seen):
            seen.append(await execution.queue.get())


async def test_a_team_running_before_admission_calls_no_tool_until_admitted(
    server: RunningServer, conv: AsyncClient
) -> None:
    execution = await _prepared(server, conv, FINANCE_QUESTION)
    try:
        seen: list[Any] = []
        # The first model call ran before the admission and asked for the calculator...
        await _until(execution, ToolCallRequestEvent, seen)
        # ...which waits for it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                seen.append(await execution.queue.get())
        assert not any(isinstance(item, ToolCallExecutionEvent) for item in seen)
        execution.admittance.admit()
        await _until(execution, ToolCallExecutionEvent, seen)
        results = next(i for i in seen if isinstance(i, ToolCallExecutionEvent)).content
        assert results and not results[0].is_error
    finally:
        execution.discard()


async def test_a_turn_that_is_not_admitted_stops_its_first_model_call(
    paced: RunningServer, paced_client: AsyncClient
) -> None:
    execution = await _prepared(paced, paced_client, LONG)
    seen: list[Any] = []
    async with asyncio.timeout(20):  # the paced model's first words, before any admission
        while not any(type(item).__name__ == "_Chunk" for item in seen):
            seen.append(await execution.queue.get())
    execution.discard()  # the store did not admit it (busy, a repeated request...)
    assert execution.token.is_cancelled()
    assert execution.pump is not None
    await asyncio.wait([execution.pump], timeout=20)
    assert execution.pump.done()
    while not execution.queue.empty():
        seen.append(execution.queue.get_nowait())
    # The long answer never completed: the call was stopped, not left to run.
    answers = [i for i in seen if isinstance(i, TextMessage) and i.source != "user"]
    assert not answers and any(type(item).__name__ == "_Chunk" for item in seen)
