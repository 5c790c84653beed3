"""The tool registry, and the adapter that lets AutoGen agents call Convergio tools.

`registry.autogen_tools(names, ctx)` returns AutoGen `BaseTool`s bound to one turn's
context. AutoGen marks a tool result as an error (`FunctionExecutionResult.is_error`) when
the tool's `run_json` raises; the adapter raises `ToolCallFailed` for an error outcome, with
the text the model should see ("error (TIMEOUT): ..."), so the turn goes on and the model
can answer without the tool.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import orjson
from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, ToolSchema
from pydantic import BaseModel

from convergio_server.domain.errors import NotFound
from convergio_server.domain.knowledge import KnowledgeStore
from convergio_server.domain.tools.base import ConvergioTool, ToolContext, ToolOutcome
from convergio_server.domain.workflows.catalog import WorkflowCatalog

# What AssistantAgent(tools=...) accepts.
AgentTool: TypeAlias = BaseTool[Any, Any] | Callable[..., Any] | Callable[..., Awaitable[Any]]


class ToolText(BaseModel):
    """What a tool returns to AutoGen: the text for the model."""

    content: str


class ToolCallFailed(Exception):
    """A tool call ended in an error outcome; AutoGen turns it into `is_error=True`."""

    def __init__(self, outcome: ToolOutcome) -> None:
        super().__init__(outcome.for_model())
        self.outcome = outcome


_SCHEMAS: dict[tuple[type[Any], str, str], bytes] = {}


def cached_schema(tool: BaseTool[Any, Any]) -> ToolSchema:
    """`BaseTool.schema`, computed once per tool kind. AutoGen asks for it on every model
    call and pydantic builds the JSON schema anew each time, which cost milliseconds per
    turn. Callers get a copy (parsed from the cached JSON: six times faster than copying the
    dicts in Python), so nothing can change the cached one."""
    key = (tool.args_type(), tool.name, tool.description)
    cached = _SCHEMAS.get(key)
    if cached is None:
        cached = _SCHEMAS[key] = orjson.dumps(BaseTool.schema.fget(tool))  # type: ignore[attr-defined]
    return typing.cast(ToolSchema, orjson.loads(cached))


class AutogenTool(BaseTool[BaseModel, ToolText]):
    """One Convergio tool bound to a turn's context, in AutoGen's tool interface."""

    @property
    def schema(self) -> ToolSchema:
        return cached_schema(self)

    def __init__(self, tool: ConvergioTool[Any], ctx: ToolContext) -> None:
        super().__init__(tool.args_model, ToolText, tool.name, tool.description)
        self.tool = tool
        self.ctx = ctx
        self.outcomes: list[ToolOutcome] = []  # every call made through this adapter

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        # Our own validation (clear messages, error kinds) instead of AutoGen's.
        outcome = await self.tool.invoke(args, self.ctx, cancellation_token)
        self.outcomes.append(outcome)
        if outcome.is_error:
            raise ToolCallFailed(outcome)
        return outcome.content

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> ToolText:
        outcome = await self.tool.invoke(args.model_dump(), self.ctx, cancellation_token)
        self.outcomes.append(outcome)
        if outcome.is_error:
            raise ToolCallFailed(outcome)
        return ToolText(content=outcome.content)

    def return_value_as_string(self, value: Any) -> str:
        return value.content if isinstance(value, ToolText) else str(value)


class ToolRegistry:
    """Tools by name."""

    def __init__(self, tools: Iterable[ConvergioTool[Any]] = ()) -> None:
        self._tools: dict[str, ConvergioTool[Any]] = {}
        for tool in tools:
            self.register(tool)

    @classmethod
    def builtin(
        cls,
        *,
        knowledge_store: Callable[[Any], KnowledgeStore] | None = None,
        catalog: WorkflowCatalog | None = None,
    ) -> ToolRegistry:
        """The built-in tools: knowledge-base search, financial calculator, conversation
        cost and workflow catalog. `knowledge_store(pool)` (e.g. `PgKnowledgeStore`) is
        what the search uses when the context has no `components["knowledge"]`."""
        from convergio_server.domain.tools.builtin import builtin_tools

        return cls(builtin_tools(knowledge_store=knowledge_store, catalog=catalog))

    def register(self, tool: ConvergioTool[Any]) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def names(self) -> list[str]:
        return list(self._tools)

    def tools(self) -> list[ConvergioTool[Any]]:
        return list(self._tools.values())

    def get(self, name: str) -> ConvergioTool[Any]:
        tool = self._tools.get(name)
        if tool is None:
            raise NotFound(
                f"tool {name!r} does not exist; known tools: {', '.join(self._tools)}",
                metadata={"tool": name},
            )
        return tool

    def autogen_tools(self, names: Sequence[str], ctx: ToolContext) -> list[AgentTool]:
        """AutoGen tools for `names` (in that order, duplicates dropped), bound to `ctx`;
        the list can be passed as `AssistantAgent(tools=...)`."""
        return [AutogenTool(self.get(name), ctx) for name in dict.fromkeys(names)]
