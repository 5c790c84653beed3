"""Fixtures of the cost tests: the session server's cost guards, and a fresh tenant per test so
that budgets, breakers and limits of one test never leak into another."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest
from convergio_server.domain.costs.enforcement import CostGuards

from tests.support.server import RunningServer


@pytest.fixture
def guards(server: RunningServer) -> CostGuards:
    found = server.server.context.components["guards"]
    assert isinstance(found, CostGuards)
    return found


@pytest.fixture
async def tenant(server: RunningServer) -> str:
    """A new tenant (with an API key, so it exists) for this test only."""
    name = f"c-{secrets.token_hex(5)}"
    await server.server.keys.create(name, "cost test", ["operator"], principal="ops")
    return name


@pytest.fixture
def key_for(server: RunningServer, tenant: str) -> Callable[..., Awaitable[str]]:
    async def create(role: str = "member", principal: str = "alice") -> str:
        _, token = await server.server.keys.create(tenant, principal, [role], principal=principal)
        return token

    return create
