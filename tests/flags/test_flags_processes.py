"""Two server processes on one PostgreSQL and Redis: a change made through either reaches the
other's cache through the notification path (eventual arrival, generous timeout)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from convergio import AsyncClient
from convergio.errors import Aborted
from convergio.flag.v1 import flag_pb2

from tests.flags.support import flag, new_tenant
from tests.platform.procs import serve_process
from tests.support.server import RunningServer

ARRIVAL_TIMEOUT = 30.0


@pytest.fixture
async def other_process(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[str]:
    """`convergio serve` as a separate OS process on the session's database and Redis prefix."""
    async with serve_process(tmp_path, pg_dsn, redis_url, redis_prefix) as (_, target):
        yield target


async def _value_on(client: AsyncClient, key: str, user: str) -> flag_pb2.FlagEvaluation:
    context = flag_pb2.EvaluationContext(targeting_key=user)
    return (await client.flags.evaluate_flag(key=key, context=context)).evaluation


async def _arrives(
    client: AsyncClient, key: str, check: Callable[[flag_pb2.FlagEvaluation], bool]
) -> flag_pb2.FlagEvaluation:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        result = await _value_on(client, key, "user-1")
        if check(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_changes_reach_the_other_process(
    server: RunningServer, other_process: str, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await make_key("operator", tenant=new_tenant())
    async with (
        AsyncClient(server.target, api_key=key) as here,
        AsyncClient(other_process, api_key=key) as there,
    ):
        assert (await there.flags.evaluate_all_flags()).evaluations  # both know the tenant
        await here.flags.upsert_flag(flag=flag("cross", "percentage", percentage=100.0))
        seen = await _arrives(there, "cross", lambda r: r.flag_version == 1)
        assert seen.value and seen.reason == flag_pb2.EVALUATION_REASON_SPLIT

        # The other way round, and a rollback made there is seen here.
        await there.flags.disable_all_flags(reason="rollback from the other process")
        back = await _arrives(here, "cross", lambda r: r.flag_version == 2)
        assert not back.value and back.reason == flag_pb2.EVALUATION_REASON_DISABLED

        # A watch on one process sees a change made through the other.
        stream = there.flags.watch_flags(keys=["cross"])
        assert (await stream.__anext__()).snapshot.complete
        await here.flags.delete_flag(key="cross")
        change = (await asyncio.wait_for(stream.__anext__(), ARRIVAL_TIMEOUT)).change
        assert change.kind == flag_pb2.FLAG_CHANGE_KIND_DELETED
        stream.cancel()
        gone = await _arrives(there, "cross", lambda r: r.flag_version == 0)
        assert gone.error_code == flag_pb2.EVALUATION_ERROR_CODE_FLAG_NOT_FOUND


async def test_concurrent_upserts_across_processes(
    server: RunningServer, other_process: str, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await make_key("operator", tenant=new_tenant())
    async with (
        AsyncClient(server.target, api_key=key) as here,
        AsyncClient(other_process, api_key=key) as there,
    ):
        clients = [here, there] * 3
        results = await asyncio.gather(
            *(
                c.flags.upsert_flag(flag=flag("contested", "percentage", percentage=float(i)))
                for i, c in enumerate(clients)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, flag_pb2.UpsertFlagResponse)]
        assert len(winners) == 1 and sum(isinstance(r, Aborted) for r in results) == 5
        history = (await there.flags.list_flag_history(key="contested")).entries
        outcomes = sorted(e.outcome for e in history)
        assert (
            outcomes
            == [flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED]
            + [flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT] * 5
        )
