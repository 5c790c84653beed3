"""The tool base: validation before the call, timeout, retry of transient failures, error
kinds, and the AutoGen adapter that turns failures into error results a turn survives."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent
from autogen_core import CancellationToken
from autogen_core.tools import BaseTool
from convergio_server.domain.errors import NotFound, PermissionDenied, Unavailable
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.domain.tools.base import (
    ConvergioTool,
    RiskLevel,
    ToolContext,
    ToolError,
    ToolErrorKind,
)
from convergio_server.domain.tools.registry import ToolRegistry
from pydantic import BaseModel, Field

CTX = ToolContext(tenant_id="t1", conversation_id="c1", turn_id="u1")


class LookupArgs(BaseModel):
    city: str = Field(min_length=2, description="city name")
    days: int = Field(1, ge=1, le=14)


class WeatherTool(ConvergioTool[LookupArgs]):
    """Scriptable: `failures` are raised one per call before it succeeds."""

    name = "weather_lookup"
    description = "Look up the weather forecast for a city."
    args_model = LookupArgs
    timeout_seconds = 0.2
    max_retries = 2
    retry_backoff_seconds = 0.001
    risk_level: ClassVar[RiskLevel] = RiskLevel.MEDIUM

    def __init__(self, failures: list[BaseException] | None = None, hang: bool = False) -> None:
        self.failures = list(failures or [])
        self.hang = hang
        self.calls = 0

    async def run(self, args: LookupArgs, ctx: ToolContext) -> str:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            raise self.failures.pop(0)
        return f"{args.city}: sunny for {args.days} day(s) (tenant {ctx.tenant_id})"


async def test_valid_call_returns_content() -> None:
    outcome = await WeatherTool().invoke({"city": "Rome", "days": 3}, CTX)
    assert outcome.content == "Rome: sunny for 3 day(s) (tenant t1)"
    assert not outcome.is_error and outcome.attempts == 1


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "R"}, "city:"),
        ({"city": "Rome", "days": 99}, "days:"),
        ({}, "city: Field required"),
        ('{"city": ', "not valid JSON"),
        ("[1, 2]", "arguments are not a JSON object: got an array"),
    ],
)
async def test_invalid_arguments_never_reach_the_tool(arguments: object, expected: str) -> None:
    tool = WeatherTool()
    outcome = await tool.invoke(arguments, CTX)  # type: ignore[arg-type]
    assert outcome.is_error and outcome.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert expected in outcome.content
    assert tool.calls == 0


async def test_timeout() -> None:
    tool = WeatherTool(hang=True)
    outcome = await tool.invoke({"city": "Oslo"}, CTX)
    assert outcome.is_error and outcome.error_kind is ToolErrorKind.TIMEOUT
    assert "0.2 seconds" in outcome.content
    assert tool.calls == 1  # a timeout is not retried


async def test_transient_failures_are_retried_with_backoff() -> None:
    tool = WeatherTool([ConnectionResetError("reset"), Unavailable("db down")])
    outcome = await tool.invoke({"city": "Oslo"}, CTX)
    assert not outcome.is_error and outcome.attempts == 3 and tool.calls == 3


async def test_transient_failures_give_up_after_max_retries() -> None:
    tool = WeatherTool([ToolError(ToolErrorKind.TRANSIENT, "busy")] * 5)
    outcome = await tool.invoke({"city": "Oslo"}, CTX)
    assert outcome.is_error and outcome.error_kind is ToolErrorKind.TRANSIENT
    assert outcome.attempts == 3 and outcome.content == "busy"


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (ValueError("bad state"), ToolErrorKind.PERMANENT),
        (PermissionDenied("not for you"), ToolErrorKind.DENIED),
        (NotFound("no such city"), ToolErrorKind.PERMANENT),
        (ToolError(ToolErrorKind.DENIED, "blocked"), ToolErrorKind.DENIED),
    ],
)
async def test_other_failures_are_not_retried(failure: BaseException, kind: ToolErrorKind) -> None:
    tool = WeatherTool([failure])
    outcome = await tool.invoke({"city": "Oslo"}, CTX)
    assert outcome.is_error and outcome.error_kind is kind and tool.calls == 1
    assert outcome.for_model().startswith(f"error ({kind.value}): ")


async def test_cancellation_propagates() -> None:
    tool = WeatherTool(hang=True)
    tool.timeout_seconds = 60  # type: ignore[misc]
    token = CancellationToken()
    task = asyncio.ensure_future(tool.invoke({"city": "Oslo"}, CTX, token))
    await asyncio.sleep(0.01)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_registry_lookup_and_duplicates() -> None:
    registry = ToolRegistry([WeatherTool()])
    assert registry.names() == ["weather_lookup"]
    with pytest.raises(NotFound, match="known tools: weather_lookup"):
        registry.get("teleport")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(WeatherTool())
    builtin = ToolRegistry.builtin()
    assert set(builtin.names()) == {
        "search_knowledge_base",
        "financial_calculator",
        "conversation_cost",
        "workflow_catalog",
    }
    adapted = builtin.autogen_tools(["financial_calculator"], CTX)[0]
    assert isinstance(adapted, BaseTool)
    schema = adapted.schema
    assert "npv" in str(schema["parameters"]["properties"]["operation"])


async def agent_run(tool: WeatherTool) -> list[object]:
    agent = AssistantAgent(
        "scout",
        model_client=OfflineChatCompletionClient(),
        system_message="You are Scout, Travel Planner: trips and logistics.",
        tools=ToolRegistry([tool]).autogen_tools(["weather_lookup"], CTX),
        reflect_on_tool_use=True,
    )
    return [e async for e in agent.run_stream(task="What is the weather forecast for Rome?")]


async def test_autogen_agent_gets_the_result() -> None:
    events = await agent_run(WeatherTool())
    execution = next(e for e in events if isinstance(e, ToolCallExecutionEvent))
    assert execution.content[0].is_error is False
    # The offline model fills a free-text argument with the request's key words.
    assert "rome: sunny for 1 day(s) (tenant t1)" in execution.content[0].content
    answer = [e for e in events if isinstance(e, TextMessage) and e.source == "scout"]
    assert "sunny for 1 day(s)" in answer[0].content


async def test_a_failing_tool_is_an_error_result_and_the_turn_continues() -> None:
    events = await agent_run(WeatherTool(hang=True))
    execution = next(e for e in events if isinstance(e, ToolCallExecutionEvent))
    result = execution.content[0]
    assert result.is_error is True
    assert result.content.startswith("error (TIMEOUT): weather_lookup did not finish")
    answer = [e for e in events if isinstance(e, TextMessage) and e.source == "scout"]
    assert len(answer) == 1 and "failed" in answer[0].content
