"""Limits and breakers are shared with a second server that is a real OS process
(`convergio serve`) on the same PostgreSQL and Redis prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as conv_pb
from convergio.cost.v1 import cost_pb2
from convergio_server.domain.costs.breaker import TENANT
from convergio_server.domain.costs.enforcement import CostGuards

from tests.platform.procs import serve_process
from tests.support.server import RunningServer


@pytest.fixture
async def other_process(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[str]:
    """`convergio serve` as a separate OS process on the session's database and Redis prefix."""
    async with serve_process(tmp_path, pg_dsn, redis_url, redis_prefix) as (_, target):
        yield target


async def test_limits_and_breakers_are_shared_with_another_os_process(
    server: RunningServer,
    other_process: str,
    tenant: str,
    key_for: Callable[..., Awaitable[str]],
    guards: CostGuards,
) -> None:
    member = await key_for("member", "rosa")
    operator = await key_for("operator", "ops")
    async with (
        AsyncClient(server.target, api_key=member) as here,
        AsyncClient(other_process, api_key=member) as there,
        AsyncClient(other_process, api_key=operator) as ops_there,
    ):
        for i in range(20):  # the hourly conversation limit, split over both processes
            await (here if i % 2 else there).conversations.create_conversation(
                team=conv_pb.Team(single_agent="amy")
            )
        for client in (here, there):
            with pytest.raises(errors.QuotaExceeded) as refused:
                await client.conversations.create_conversation(
                    team=conv_pb.Team(single_agent="amy")
                )
            assert refused.value.reason == "RATE_LIMITED"
        status = await there.costs.get_rate_limit_status()
        hourly = {s.kind: s for s in status.limits}[cost_pb2.RATE_LIMIT_KIND_CONVERSATIONS_PER_HOUR]
        assert (hourly.used, hourly.remaining) == (20, 0)

        await guards.breakers.trip(tenant, TENANT, "FAILURES", "tripped in this process")
        seen = await there.costs.get_circuit_breaker(scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT)
        assert seen.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_OPEN
        assert seen.circuit_breaker.reason == "tripped in this process"
        await ops_there.costs.reset_circuit_breaker(
            scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT, reason="reset in the other process"
        )
        assert (await guards.breakers.get(tenant, TENANT)).state == "CLOSED"
