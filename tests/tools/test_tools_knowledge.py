"""The knowledge base on real PostgreSQL: full-text search with ranking, tenant isolation,
validation, and the search tool; the conversation-cost tool on the real cost ledger."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from convergio_server.domain.errors import InvalidArgument, NotFound
from convergio_server.domain.knowledge import MAX_CONTENT_BYTES, KnowledgeBase
from convergio_server.domain.tools.base import ToolContext, ToolErrorKind
from convergio_server.domain.tools.builtin import ConversationCostTool, SearchKnowledgeBaseTool
from convergio_server.storage.knowledge import PgKnowledgeStore
from convergio_server.storage.migrations import apply_migrations


@pytest.fixture(scope="module")
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    created = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    assert created is not None
    await apply_migrations(created)
    try:
        yield created
    finally:
        await created.close()


async def tenant(pool: asyncpg.Pool[Any]) -> str:
    tenant_id = "kb-" + secrets.token_hex(4)
    await pool.execute("INSERT INTO tenants (id, name) VALUES ($1, $1)", tenant_id)
    return tenant_id


DOCS = {
    "travel": (
        "Travel policy",
        "Employees book economy class for flights under six hours. "
        "Hotel costs are reimbursed up to 150 EUR a night with receipts.",
    ),
    "security": (
        "Password policy",
        "Passwords rotate every 90 days. Multi-factor "
        "authentication is required for production access.",
    ),
    "pricing": (
        "Pricing 2026",
        "Enterprise plans cost 40 EUR per seat per month. Discounts "
        "above 20 percent need CFO approval.",
    ),
}


async def seeded(pool: asyncpg.Pool[Any]) -> tuple[KnowledgeBase, str]:
    kb = KnowledgeBase(PgKnowledgeStore(pool))
    tenant_id = await tenant(pool)
    for document_id, (title, content) in DOCS.items():
        await kb.add(tenant_id, document_id=document_id, title=title, content=content)
    return kb, tenant_id


async def test_search_ranks_the_best_matches_first(pool: asyncpg.Pool[Any]) -> None:
    kb, tenant_id = await seeded(pool)
    hits = await kb.search(tenant_id, "how much are hotel nights reimbursed?")
    assert [h.document_id for h in hits] == ["travel"]
    assert "**reimbursed**" in hits[0].snippet and 0 < hits[0].score < 1
    # Any word may match; documents matching more words (and in the title) rank first.
    hits = await kb.search(tenant_id, "policy for production passwords")
    assert [h.document_id for h in hits] == ["security", "travel"]
    assert hits[0].score > hits[1].score
    assert await kb.search(tenant_id, "the and of") == []  # stop words only
    assert await kb.search(tenant_id, "submarine") == []


async def test_tenants_never_see_each_other(pool: asyncpg.Pool[Any]) -> None:
    kb, first = await seeded(pool)
    second = await tenant(pool)
    assert await kb.search(second, "hotel reimbursed") == []
    await kb.add(second, document_id="travel", title="Other travel", content="Trains only.")
    assert (await kb.get(first, "travel")).title == "Travel policy"
    assert [h.document_id for h in await kb.search(second, "trains")] == ["travel"]
    assert await kb.search(first, "trains") == []
    with pytest.raises(NotFound):
        await kb.delete(second, "pricing")
    assert (await kb.get(first, "pricing")).title == "Pricing 2026"


async def test_add_replace_list_delete(pool: asyncpg.Pool[Any]) -> None:
    kb, tenant_id = await seeded(pool)
    replaced = await kb.add(tenant_id, document_id="pricing", title="Pricing", content="Free.")
    assert replaced.content == "Free." and replaced.update_time is not None
    assert await kb.search(tenant_id, "enterprise seat") == []
    generated = await kb.add(tenant_id, content="Quarterly board meeting notes.")
    assert generated.document_id.startswith("doc_")
    listed = await kb.list_documents(tenant_id)
    assert [d.document_id for d in listed] == sorted(
        ["travel", "security", "pricing", generated.document_id]
    )
    page = await kb.list_documents(tenant_id, limit=2, after_id=listed[1].document_id)
    assert [d.document_id for d in page] == [d.document_id for d in listed[2:4]]
    await kb.delete(tenant_id, "travel")
    with pytest.raises(NotFound, match="'travel'"):
        await kb.get(tenant_id, "travel")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"content": "   "}, "content"),
        ({"content": "x" * (MAX_CONTENT_BYTES + 1)}, "content"),
        ({"content": "ok", "document_id": "bad id!"}, "document_id"),
        ({"content": "ok", "title": "t" * 501}, "title"),
        ({"content": "ok", "importance": 2.0}, "importance"),
    ],
)
async def test_bad_documents_are_rejected(
    pool: asyncpg.Pool[Any], kwargs: dict[str, Any], field: str
) -> None:
    kb = KnowledgeBase(PgKnowledgeStore(pool))
    with pytest.raises(InvalidArgument) as info:
        await kb.add(await tenant(pool), **kwargs)
    assert info.value.violations[0].field == field


async def test_unknown_tenant_and_bad_queries(pool: asyncpg.Pool[Any]) -> None:
    kb = KnowledgeBase(PgKnowledgeStore(pool))
    with pytest.raises(NotFound, match="tenant 'no-such-tenant'"):
        await kb.add("no-such-tenant", content="hello")
    with pytest.raises(InvalidArgument, match="query"):
        await kb.search("any", "  ")
    with pytest.raises(InvalidArgument, match="limit"):
        await kb.search("any", "x", limit=0)


async def test_search_tool_uses_the_callers_tenant(pool: asyncpg.Pool[Any]) -> None:
    _, tenant_id = await seeded(pool)
    tool = SearchKnowledgeBaseTool(PgKnowledgeStore)
    ctx = ToolContext(tenant_id=tenant_id, pool=pool)
    found = await tool.invoke({"query": "discount approval"}, ctx)
    assert found.content.startswith("1 document(s) match 'discount approval':")
    assert "[1] Pricing 2026 (id pricing, score" in found.content
    other = await tool.invoke({"query": "discount approval"}, ToolContext("t-x", pool=pool))
    assert other.content == "No documents in the knowledge base match 'discount approval'."
    unconfigured = await SearchKnowledgeBaseTool().invoke({"query": "x"}, ctx)
    assert unconfigured.is_error and unconfigured.error_kind is ToolErrorKind.PERMANENT
    component = await SearchKnowledgeBaseTool().invoke(
        {"query": "hotel"},
        ToolContext(tenant_id, components={"knowledge": KnowledgeBase(PgKnowledgeStore(pool))}),
    )
    assert "Travel policy" in component.content


async def test_conversation_cost_reads_the_ledger(pool: asyncpg.Pool[Any]) -> None:
    tenant_id, other = await tenant(pool), await tenant(pool)
    rows = [
        (tenant_id, "conv-1", 1000, 200, "0.0021"),
        (tenant_id, "conv-1", 500, 100, "0.0009"),
        (tenant_id, "conv-2", 9999, 9999, "9.0"),  # another conversation
        (other, "conv-1", 9999, 9999, "9.0"),  # another tenant, same conversation id
    ]
    for owner, conversation, prompt, completion, usd in rows:
        await pool.execute(
            """INSERT INTO cost_ledger (tenant_id, id, time, principal, conversation_id,
                   provider, model, call_kind, prompt_tokens, completion_tokens,
                   cached_tokens, cost_usd, price_source, input_price, output_price,
                   cached_input_price, latency_ms, outcome)
               VALUES ($1, gen_random_uuid(), now(), 'p', $2, 'offline', 'offline',
                   'AGENT_REPLY', $3, $4, 0, $5::numeric, 'TABLE', 0, 0, 0, 1, 'OK')""",
            owner,
            conversation,
            prompt,
            completion,
            usd,
        )
    ctx = ToolContext(tenant_id=tenant_id, conversation_id="conv-1", pool=pool)
    outcome = await ConversationCostTool().invoke({}, ctx)
    assert outcome.content.startswith(
        "This conversation has cost 0.003 USD so far: 2 model call(s), 1500 prompt and 300 "
        "completion tokens."
    )
