"""Tools as AutoGen sees them."""

from __future__ import annotations

from autogen_core.tools import BaseTool
from convergio_server.domain.tools.base import ToolContext
from convergio_server.domain.tools.registry import ToolRegistry


def test_tool_schemas_are_built_once_and_handed_out_as_copies() -> None:
    registry = ToolRegistry.builtin()
    tools = registry.autogen_tools(registry.names(), ToolContext("schemas"))
    assert tools
    for tool in tools:
        assert isinstance(tool, BaseTool)
        # The same schema AutoGen would build itself...
        assert tool.schema == BaseTool.schema.fget(tool)  # type: ignore[attr-defined]
        # ...and a caller that changes its copy changes nothing for the next call.
        before = tool.schema
        mine = tool.schema
        mine["name"] = "changed"
        mine["parameters"]["properties"]["extra"] = {"type": "string"}
        assert tool.schema == before
