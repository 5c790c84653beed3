"""The runtime pieces capabilities rely on: deadlines through the call pipeline,
request-id idempotency, page tokens and the bootstrap key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from convergio.workflow.v1 import workflow_pb2
from convergio_server.api.access import AccessPolicy
from convergio_server.api.idempotency import once
from convergio_server.api.pipeline import Authenticator, CallPipeline, PipelinedRegistry
from convergio_server.domain import errors as de
from convergio_server.domain.auth import KeyManager
from convergio_server.domain.pagination import decode_token, encode_token, page_size
from convergio_server.storage.idempotency import PgIdempotencyStore
from convergio_server.storage.keys import PgKeyStore

from tests.support.server import RunningServer

SLOW_METHOD = "/convergio.workflow.v1.WorkflowService/GetExecution"


@pytest.fixture
async def slow_server(server: RunningServer) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A grpc.aio server with the production call pipeline and one slow handler."""
    seen: dict[str, Any] = {"cancelled": asyncio.Event()}

    async def slow(request: workflow_pb2.GetExecutionRequest, context: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen["cancelled"].set()
            raise
        return workflow_pb2.GetExecutionResponse()

    handler = grpc.method_handlers_generic_handler(
        "convergio.workflow.v1.WorkflowService",
        {
            "GetExecution": grpc.unary_unary_rpc_method_handler(
                slow,
                request_deserializer=workflow_pb2.GetExecutionRequest.FromString,
                response_serializer=workflow_pb2.GetExecutionResponse.SerializeToString,
            )
        },
    )
    grpc_server = grpc.aio.server()
    pipeline = CallPipeline(Authenticator(server.server.keys, AccessPolicy()))
    PipelinedRegistry(grpc_server, pipeline).add_generic_rpc_handlers((handler,))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await grpc_server.stop(0)


async def test_deadline_ends_the_call_and_cancels_the_work(
    slow_server: tuple[str, dict[str, Any]], server: RunningServer
) -> None:
    target, seen = slow_server
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            SLOW_METHOD,
            request_serializer=workflow_pb2.GetExecutionRequest.SerializeToString,
            response_deserializer=workflow_pb2.GetExecutionResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(
                workflow_pb2.GetExecutionRequest(),
                timeout=0.3,
                metadata=(("authorization", f"Bearer {server.admin_key}"),),
            )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The handler did not run on after the client stopped waiting.
    await asyncio.wait_for(seen["cancelled"].wait(), 10)


async def test_request_id_returns_the_first_result(server: RunningServer) -> None:
    store = PgIdempotencyStore(server.infra.pool)
    calls = 0

    async def act() -> workflow_pb2.StartExecutionResponse:
        nonlocal calls
        calls += 1
        response = workflow_pb2.StartExecutionResponse()
        response.execution.execution_id = f"run-{calls}"
        return response

    request = workflow_pb2.StartExecutionRequest(request_id="req-1", workflow_id="w")
    method = "test/StartExecution"
    first = await once(store, "dev", method, request, workflow_pb2.StartExecutionResponse, act)
    again = await once(store, "dev", method, request, workflow_pb2.StartExecutionResponse, act)
    assert calls == 1 and first == again
    # Same id, another request: refused, never silently answered with the first result.
    other = workflow_pb2.StartExecutionRequest(request_id="req-1", workflow_id="other")
    with pytest.raises(de.InvalidArgument) as caught:
        await once(store, "dev", method, other, workflow_pb2.StartExecutionResponse, act)
    assert caught.value.violations[0].field == "request_id"
    # Concurrent repeats act once.
    concurrent = workflow_pb2.StartExecutionRequest(request_id="req-2", workflow_id="w")
    results = await asyncio.gather(
        *(
            once(store, "dev", method, concurrent, workflow_pb2.StartExecutionResponse, act)
            for _ in range(5)
        )
    )
    assert calls == 2 and len({r.execution.execution_id for r in results}) == 1


async def test_failed_first_call_can_be_retried(server: RunningServer) -> None:
    store = PgIdempotencyStore(server.infra.pool)

    async def fail() -> workflow_pb2.StartExecutionResponse:
        raise de.Unavailable("model endpoint down")

    async def succeed() -> workflow_pb2.StartExecutionResponse:
        return workflow_pb2.StartExecutionResponse()

    request = workflow_pb2.StartExecutionRequest(request_id="req-3", workflow_id="w")
    with pytest.raises(de.Unavailable):
        await once(store, "dev", "m", request, workflow_pb2.StartExecutionResponse, fail)
    await once(store, "dev", "m", request, workflow_pb2.StartExecutionResponse, succeed)


def test_page_tokens_round_trip_and_reject_tampering() -> None:
    token = encode_token(["2026-01-01T00:00:00", "id-9"], {"status": "RUNNING"})
    cursor = decode_token(token, {"status": "RUNNING"})
    assert cursor is not None and list(cursor.after) == ["2026-01-01T00:00:00", "id-9"]
    assert decode_token("", None) is None
    for bad in ("%%%", "bm90IGpzb24", token[:-3]):
        with pytest.raises(de.InvalidArgument) as caught:
            decode_token(bad, {"status": "RUNNING"})
        assert caught.value.violations[0].field == "page_token"
    with pytest.raises(de.InvalidArgument, match="other filters"):
        decode_token(token, {"status": "IDLE"})
    assert page_size(0) == 50 and page_size(5000) == 1000 and page_size(7) == 7


async def test_concurrent_first_starts_make_one_bootstrap_key(pg_dsn: str) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=8)
    try:
        managers = [KeyManager(PgKeyStore(pool)) for _ in range(6)]
        tokens = await asyncio.gather(*(m.bootstrap("bootstrap-race") for m in managers))
        assert sum(token is not None for token in tokens) == 1
        keys = await managers[0].list("bootstrap-race")
        assert len(keys) == 1 and [r.value for r in keys[0].roles] == ["admin"]
    finally:
        await pool.close()


def test_a_serving_process_keeps_its_startup_heap_out_of_collections() -> None:
    """What `convergio serve` does before it serves: what startup built is frozen, so that a
    full collection no longer walks it (about 70 ms each time, while every stream waits),
    and full collections run on a timer instead of after every few young ones: the timer
    collects cyclic garbage that reached the oldest generation, and does nothing while the
    process is idle. In a process of its own: the collector's settings are process-wide."""
    probe = """
import asyncio, gc, json
from convergio_server import heap, server

class Cycle:
    def __init__(self): self.me = self

async def main():
    before = gc.get_threshold()
    heap.settle(0.2)
    frozen, walked, after = gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()
    collector = asyncio.create_task(heap.collect_fully(0.2))
    alive = [Cycle() for _ in range(2000)]
    gc.collect(1)  # they reach the oldest generation, as a turn's objects do under load,
    gc.collect(1)
    del alive  # and then become cyclic garbage there
    stranded = sum(type(o) is Cycle for o in gc.get_objects())
    await asyncio.sleep(0.5)
    left = sum(type(o) is Cycle for o in gc.get_objects())
    full = gc.get_stats()[2]["collections"]
    await asyncio.sleep(0.5)  # idle: nothing new for the timer
    idle = gc.get_stats()[2]["collections"] - full
    collector.cancel()
    print(json.dumps([frozen, walked, before, after, stranded, left, idle]))

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    frozen, walked, before, after, stranded, left, idle = json.loads(out)
    assert frozen > 50_000  # the server's modules
    assert walked < 1_000  # what a full collection still walks
    assert after[:2] == before[:2] and after[2] > 1_000_000  # no automatic full collection
    assert stranded == 2000 and left == 0  # freed by the timer
    assert idle == 0
