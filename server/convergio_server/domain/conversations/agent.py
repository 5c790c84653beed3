"""The AssistantAgent of a participant, with tool calls that fail in the tools' own terms.

AutoGen's AssistantAgent answers a call whose arguments are not JSON with the parser's text
("Error: Expecting value ...") and a call of a tool the agent does not have with "Error:
tool 'x' not found in any workbench", before any of our tools sees them. Real models make
both mistakes, so those calls are answered here the way a tool answers a bad call
("error (INVALID_ARGUMENTS): ...", "error (UNKNOWN_TOOL): ..."): the model is told what to
fix, the client gets a known error kind, and the turn goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import FunctionExecutionResult
from autogen_core.tools import BaseTool, Workbench

from convergio_server.domain.tools.base import (
    ToolError,
    ToolErrorKind,
    ToolOutcome,
    parse_arguments,
)


class ParticipantAgent(AssistantAgent):
    """An AssistantAgent whose malformed and unknown tool calls get Convergio error kinds."""

    @staticmethod
    async def _execute_tool_call(
        tool_call: FunctionCall,
        workbench: Sequence[Workbench],
        handoff_tools: list[BaseTool[Any, Any]],
        agent_name: str,
        cancellation_token: CancellationToken,
        stream: asyncio.Queue[BaseAgentEvent | BaseChatMessage | None],
    ) -> tuple[FunctionCall, FunctionExecutionResult]:
        try:
            arguments = await check_tool_call(tool_call, workbench, handoff_tools, agent_name)
        except ToolError as exc:
            outcome = ToolOutcome(tool_call.name, exc.message, True, exc.kind, attempts=0)
            return tool_call, FunctionExecutionResult(
                content=outcome.for_model(),
                name=tool_call.name,
                call_id=tool_call.id,
                is_error=True,
            )
        # Blank arguments (a model calling a tool without parameters) are `{}`, as the tools
        # read them, instead of a JSON error.
        checked = FunctionCall(id=tool_call.id, arguments=arguments, name=tool_call.name)
        _, result = await AssistantAgent._execute_tool_call(
            checked, workbench, handoff_tools, agent_name, cancellation_token, stream
        )
        return tool_call, result


async def check_tool_call(
    call: FunctionCall,
    workbench: Sequence[Workbench],
    handoff_tools: Sequence[BaseTool[Any, Any]],
    agent_name: str,
) -> str:
    """The call's arguments as JSON text AutoGen can run it with, or ToolError: UNKNOWN_TOOL
    naming the tools the agent has, INVALID_ARGUMENTS when they are not a JSON object."""
    names = [tool.name for tool in handoff_tools]
    for bench in workbench:
        names.extend(tool["name"] for tool in await bench.list_tools())
    if call.name not in names:
        has = f"its tools are {', '.join(dict.fromkeys(names))}" if names else "it has no tools"
        raise ToolError(
            ToolErrorKind.UNKNOWN_TOOL, f"{agent_name} has no tool {call.name!r}; {has}"
        )
    parse_arguments(call.arguments)
    return call.arguments if call.arguments.strip() else "{}"
