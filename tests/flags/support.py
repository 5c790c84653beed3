"""Helpers shared by the flag tests: a fresh tenant per test, flags built tersely."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from convergio import AsyncClient
from convergio.flag.v1 import flag_pb2

from tests.support.server import RunningServer

STRATEGIES = {
    "on": flag_pb2.FLAG_STRATEGY_ON,
    "off": flag_pb2.FLAG_STRATEGY_OFF,
    "percentage": flag_pb2.FLAG_STRATEGY_PERCENTAGE,
    "canary": flag_pb2.FLAG_STRATEGY_CANARY,
    "group_based": flag_pb2.FLAG_STRATEGY_GROUP_BASED,
    "whitelist": flag_pb2.FLAG_STRATEGY_WHITELIST,
    "gradual": flag_pb2.FLAG_STRATEGY_GRADUAL,
}


def flag(key: str, strategy: str = "on", **fields: Any) -> flag_pb2.Flag:
    fields.setdefault("enabled", True)
    return flag_pb2.Flag(key=key, strategy=STRATEGIES[strategy], **fields)


def new_tenant() -> str:
    return f"flags-{secrets.token_hex(4)}"


@asynccontextmanager
async def tenant_client(
    server: RunningServer,
    make_key: Callable[..., Awaitable[str]],
    role: str = "operator",
    tenant: str | None = None,
) -> AsyncIterator[AsyncClient]:
    """A client of a fresh tenant (so flag tests never disturb each other or other areas)."""
    key = await make_key(role, tenant=tenant or new_tenant())
    async with AsyncClient(server.target, api_key=key) as client:
        yield client
