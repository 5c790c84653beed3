"""The workflow catalog (data, loader, tool) and the conversation-cost tool."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from convergio_server.domain.agents.roster import Roster
from convergio_server.domain.errors import NotFound
from convergio_server.domain.tools.base import ToolContext, ToolErrorKind
from convergio_server.domain.tools.builtin import (
    ConversationCostTool,
    CostSoFar,
    WorkflowCatalogTool,
)
from convergio_server.domain.workflows.catalog import CatalogError, WorkflowCatalog

CTX = ToolContext(tenant_id="t1", conversation_id="c1")


def test_builtin_catalog_matches_the_original_workflows() -> None:
    catalog = WorkflowCatalog.load(known_agents=[a.name for a in Roster.load().agents()])
    assert catalog.names() == [
        "strategic_analysis",
        "product_launch",
        "market_entry",
        "customer_onboarding",
    ]
    strategic = catalog.get("strategic_analysis")
    assert strategic.levels() == [
        ["initial_context"],
        ["market_analysis", "financial_analysis"],
        ["strategic_synthesis"],
    ]
    assert strategic.approval_gates == ["strategic_synthesis"]
    assert catalog.get("product_launch").approval_gates == ["gtm_strategy", "financial_planning"]
    entry = catalog.get("market_entry")
    assert entry.step("implementation_planning").depends_on == (
        "entry_strategy",
        "financial_modeling",
        "risk_assessment",
    )
    assert catalog.get("customer_onboarding").approval_gates == []
    assert all(s.timeout_seconds == 300 and s.retries == 1 for s in strategic.steps)
    with pytest.raises(NotFound, match="known workflows: strategic_analysis"):
        catalog.get("nope")


@pytest.mark.parametrize(
    ("toml", "field", "problem"),
    [
        (
            '[w]\ntitle="T"\ndescription="D"\n[[w.steps]]\nid="a"\nagent="ali"\ndescription="x"\n'
            'depends_on=["b"]\n',
            "w.steps[0].depends_on",
            "not a step defined before",
        ),
        (
            '[w]\ntitle="T"\ndescription="D"\n[[w.steps]]\nid="a"\nagent="zed"\ndescription="x"\n',
            "w.steps[0].agent",
            "unknown agent",
        ),
        ('[w]\ntitle="T"\ndescription="D"\n', "w.steps", "at least one"),
        (
            '[w]\ntitle="T"\ndescription="D"\n[[w.steps]]\nid="a"\nagent="ali"\ndescription="x"\n'
            '[[w.steps]]\nid="a"\nagent="ali"\ndescription="y"\n',
            "w.steps[1].id",
            "duplicate",
        ),
        ('[w]\ntitle="T"\ndescription="D"\ncolour="red"\n', "w.colour", "unknown field"),
    ],
)
def test_bad_workflow_files_name_the_field(
    tmp_path: Path, toml: str, field: str, problem: str
) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(toml)
    with pytest.raises(CatalogError) as info:
        WorkflowCatalog.load([path], known_agents=[a.name for a in Roster.load().agents()])
    assert info.value.field == field and problem in info.value.problem
    assert str(path) in str(info.value)


async def test_workflow_tool_by_name_by_query_and_fallback() -> None:
    tool = WorkflowCatalogTool()
    by_name = await tool.invoke({"name": "market_entry"}, CTX)
    assert "risk_assessment (luca) after market_research" in by_name.content
    assert "implementation_planning (wanda)" in by_name.content
    assert "[approval required]" in by_name.content
    by_query = await tool.invoke({"query": "launch a new product"}, CTX)
    assert by_query.content.startswith("product_launch:")
    nothing = await tool.invoke({"query": "zebra"}, CTX)
    assert "No workflow matches" in nothing.content and "customer_onboarding" in nothing.content
    unknown = await tool.invoke({"name": "nope"}, CTX)
    assert unknown.is_error and unknown.error_kind is ToolErrorKind.PERMANENT


class FixedCosts:
    async def conversation_cost(self, tenant_id: str, conversation_id: str) -> CostSoFar:
        assert (tenant_id, conversation_id) == ("t1", "c1")
        return CostSoFar(Decimal("0.0123"), 1000, 200, 3)


async def test_conversation_cost_reads_the_costs_component() -> None:
    ctx = ToolContext(tenant_id="t1", conversation_id="c1", components={"costs": FixedCosts()})
    outcome = await ConversationCostTool().invoke({}, ctx)
    assert outcome.content == (
        "This conversation has cost 0.0123 USD so far: 3 model call(s), 1000 prompt and 200 "
        "completion tokens."
    )


async def test_conversation_cost_without_tracking_reports_zero_with_a_note() -> None:
    outcome = await ConversationCostTool().invoke({}, CTX)
    assert outcome.content.startswith("This conversation has cost 0 USD so far")
    assert "no cost tracking is configured" in outcome.content
    outside = await ConversationCostTool().invoke({}, ToolContext(tenant_id="t1"))
    assert outside.is_error and "not part of a conversation" in outside.content
