"""Helpers shared by the cost tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.costs.ledger import LedgerEntry
from convergio_server.domain.costs.prices import ModelPrice
from convergio_server.domain.guards import TurnScope


def member(tenant: str, name: str = "alice") -> Principal:
    return Principal(tenant, name, frozenset({Role.MEMBER}), "k")


def new_scope(tenant: str, user: str = "alice", conversation_id: str | None = None) -> TurnScope:
    return TurnScope(member(tenant, user), conversation_id or str(uuid.uuid4()), str(uuid.uuid4()))


def ledger_entry(
    tenant: str,
    cost: Decimal,
    *,
    conversation_id: str = "",
    principal: str = "alice",
    at: datetime | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        entry_id=str(uuid.uuid4()), tenant_id=tenant, time=at or datetime.now(UTC),
        principal=principal, conversation_id=conversation_id, turn_id="", execution_id="",
        step_id="", agent="amy", provider="openai", model="gpt-4o", call_kind="AGENT_REPLY",
        prompt_tokens=1, completion_tokens=1, cached_tokens=0, cost_usd=cost,
        price_source="TABLE", price=ModelPrice(Decimal(1), Decimal(1), Decimal(1)),
        latency_ms=1, outcome="OK",
    )  # fmt: skip
