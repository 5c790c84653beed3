"""`once` with the PostgreSQL idempotency store: an error that is the request's answer is
recorded and replayed for its request_id; a transient one leaves the request_id free."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

import pytest
from convergio.workflow.v1 import workflow_pb2
from convergio_server.api.idempotency import once
from convergio_server.domain import errors as de
from convergio_server.storage.idempotency import PgIdempotencyStore

from tests.support.server import RunningServer

Response = workflow_pb2.StartExecutionResponse
Act = Callable[[], Awaitable[Response]]


class Counted:
    """An action that raises the errors it is given, one per call, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> Response:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        response = Response()
        response.execution.execution_id = f"run-{self.calls}"
        return response


def _request() -> workflow_pb2.StartExecutionRequest:
    return workflow_pb2.StartExecutionRequest(
        request_id=f"rid-{secrets.token_hex(6)}", workflow_id="w"
    )


async def _once(
    store: PgIdempotencyStore, request: workflow_pb2.StartExecutionRequest, act: Act
) -> Response:
    return await once(store, "dev", "test/Start", request, Response, act)


@pytest.mark.parametrize(
    "error",
    [
        de.Aborted(
            "flag 'x' is at version 1, not 7",
            reason="VERSION_CONFLICT",
            metadata={"key": "x", "current_version": "1"},
        ),
        de.FailedPrecondition("a turn is running", metadata={"turn_id": "t-1"}),
        de.InvalidArgument.for_field("flag.percentage", "must be between 0 and 100"),
        de.NotFound("no flag 'x'", metadata={"key": "x"}),
        de.AlreadyExists("exists"),
        de.PermissionDenied("needs operator"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_definitive_error_is_replayed(server: RunningServer, error: de.DomainError) -> None:
    store = PgIdempotencyStore(server.infra.pool)
    request, act = _request(), Counted(error)
    with pytest.raises(type(error)) as first:
        await _once(store, request, act)
    assert first.value is error
    for _ in range(2):
        with pytest.raises(type(error)) as again:
            await _once(store, request, act)
        assert again.value == error  # same class, message, reason, metadata, violations
    assert act.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        de.Unavailable("PostgreSQL is unreachable; retry shortly"),
        de.QuotaExceeded("10 turns a minute", retry_after_seconds=3.0),
        RuntimeError("a bug: INTERNAL"),
        asyncio.CancelledError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_transient_error_leaves_the_request_id_free(
    server: RunningServer, error: BaseException
) -> None:
    store = PgIdempotencyStore(server.infra.pool)
    request, act = _request(), Counted(error)
    with pytest.raises(type(error)):
        await _once(store, request, act)
    retried = await _once(store, request, act)
    assert retried.execution.execution_id == "run-2"
    assert (await _once(store, request, act)) == retried
    assert act.calls == 2


async def test_a_repeat_waiting_for_the_first_call_gets_its_error(server: RunningServer) -> None:
    store = PgIdempotencyStore(server.infra.pool)
    request = _request()
    started, finish = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow_conflict() -> Response:
        nonlocal calls
        calls += 1
        started.set()
        await finish.wait()
        raise de.Aborted("another change won", metadata={"current_version": "2"})

    first = asyncio.ensure_future(_once(store, request, slow_conflict))
    await asyncio.wait_for(started.wait(), 10)
    repeat = asyncio.ensure_future(_once(store, request, slow_conflict))
    await asyncio.sleep(0.1)  # the repeat finds the claim pending and waits for its end
    finish.set()
    for task in (first, repeat):
        with pytest.raises(de.Aborted) as caught:
            await asyncio.wait_for(task, 30)
        assert caught.value.metadata == {"current_version": "2"}
    assert calls == 1
