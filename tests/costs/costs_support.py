"""Helpers shared by the cost tests."""

from __future__ import annotations

import uuid

from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.guards import TurnScope


def member(tenant: str, name: str = "alice") -> Principal:
    return Principal(tenant, name, frozenset({Role.MEMBER}), "k")


def new_scope(tenant: str, user: str = "alice", conversation_id: str | None = None) -> TurnScope:
    return TurnScope(member(tenant, user), conversation_id or str(uuid.uuid4()), str(uuid.uuid4()))
