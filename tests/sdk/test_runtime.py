"""The SDK's call machinery against a real grpc.aio server on an ephemeral port.

The server is a generic handler scripted per test: fail with a status (rich
details included) a number of times, then answer; it records what each attempt
received. No Convergio server is involved: this checks the client side alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import convergio
import grpc
import grpc.aio
import pytest
from convergio import _runtime
from convergio.approval.v1 import approval_pb2
from convergio.common.v1 import common_pb2
from google.protobuf import duration_pb2, wrappers_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

FAST = convergio.RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.005)
KEY = "test-key-123"
GET_APPROVAL = "/convergio.approval.v1.ApprovalService/GetApproval"
DECIDE_APPROVAL = "/convergio.approval.v1.ApprovalService/DecideApproval"
WATCH_APPROVALS = "/convergio.approval.v1.ApprovalService/WatchApprovals"

# Test-only methods with well-known messages, one of each kind.
ECHO = _runtime.Method(
    "/test.Echo/Idempotent", wrappers_pb2.StringValue, wrappers_pb2.StringValue, idempotent=True
)
ECHO_ONCE = _runtime.Method(
    "/test.Echo/NotIdempotent",
    wrappers_pb2.StringValue,
    wrappers_pb2.StringValue,
    idempotent=False,
)
COUNT = _runtime.Method(
    "/test.Echo/Count", wrappers_pb2.StringValue, wrappers_pb2.Int32Value, idempotent=True
)
COUNT_ONCE = _runtime.Method(
    "/test.Echo/CountOnce", wrappers_pb2.StringValue, wrappers_pb2.Int32Value, idempotent=False
)


def rich_abort(
    code: grpc.StatusCode, message: str, *details: Message, request_id: str = ""
) -> Failure:
    """A failure carrying google.rpc.Status details, as the server sends them."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    rich = rpc_status.to_status(status)
    trailers = tuple(rich.trailing_metadata)
    if request_id:
        trailers += (("x-request-id", request_id),)
    return Failure(rich.code, rich.details, trailers)


@dataclass
class Failure:
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str | bytes], ...] = ()


UNAVAILABLE = Failure(grpc.StatusCode.UNAVAILABLE, "try again")


@dataclass
class Script:
    """What the fake server does for one method: each attempt takes the next
    of `failures` (None = answer) until they run out, then answers. Streams
    send `messages` messages, then fail with `fail_after` (if set) instead of
    ending."""

    failures: list[Failure | None] = field(default_factory=list)
    messages: int = 2
    fail_after: Failure | None = None
    fail_after_times: int = 1
    hang: bool = False
    response: Message | None = None


@dataclass
class Attempt:
    request: Any
    metadata: dict[str, str]


class FakeServer(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.attempts: dict[str, list[Attempt]] = {}

    def calls(self, method: str) -> int:
        return len(self.attempts.get(method, []))

    def _begin(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Script:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.attempts.setdefault(method, []).append(Attempt(request, metadata))
        return self.scripts.setdefault(method, Script())

    @staticmethod
    async def _fail(context: grpc.aio.ServicerContext, failure: Failure) -> None:
        await context.abort(failure.code, failure.details, trailing_metadata=failure.trailers)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        request_type: Any = {
            GET_APPROVAL: approval_pb2.GetApprovalRequest,
            DECIDE_APPROVAL: approval_pb2.DecideApprovalRequest,
            WATCH_APPROVALS: approval_pb2.WatchApprovalsRequest,
        }.get(method, wrappers_pb2.StringValue)

        def unary_response(request: Any) -> Message:
            if method == GET_APPROVAL:
                approval = approval_pb2.Approval(approval_id=request.approval_id)
                return approval_pb2.GetApprovalResponse(approval=approval)
            if method == DECIDE_APPROVAL:
                approval = approval_pb2.Approval(approval_id=request.approval_id)
                return approval_pb2.DecideApprovalResponse(approval=approval)
            return wrappers_pb2.StringValue(value=f"echo:{request.value}")

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Message:
            script = self._begin(method, request, context)
            failure = script.failures.pop(0) if script.failures else None
            if failure is not None:
                await self._fail(context, failure)
            if script.hang:
                await asyncio.Event().wait()
            return script.response or unary_response(request)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            script = self._begin(method, request, context)
            failure = script.failures.pop(0) if script.failures else None
            if failure is not None:
                await self._fail(context, failure)
            start = int(request.value or 0) if isinstance(request, wrappers_pb2.StringValue) else 0
            for n in range(start, start + script.messages):
                if method == WATCH_APPROVALS:
                    yield approval_pb2.WatchApprovalsResponse(
                        change=approval_pb2.ApprovalChange(
                            approval=approval_pb2.Approval(approval_id=str(n))
                        )
                    )
                else:
                    yield wrappers_pb2.Int32Value(value=n)
            if script.fail_after is not None and script.fail_after_times > 0:
                script.fail_after_times -= 1
                await self._fail(context, script.fail_after)
            if script.hang:
                await asyncio.Event().wait()

        if method in (WATCH_APPROVALS, COUNT.name, COUNT_ONCE.name):
            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=request_type.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=request_type.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )


@dataclass
class Harness:
    fake: FakeServer
    target: str
    health: health.aio.HealthServicer


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    fake = FakeServer()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake,))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Harness(fake, f"127.0.0.1:{port}", servicer)
    finally:
        await server.stop(None)


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[convergio.AsyncClient]:
    async with convergio.AsyncClient(harness.target, api_key=KEY, retry=FAST) as c:
        yield c


async def test_facade_sends_key_and_builds_request(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    response = await client.approvals.get_approval(
        approval_id="ap-1", metadata=[("x-tenant-hint", "acme")]
    )
    assert response.approval.approval_id == "ap-1"
    (attempt,) = harness.fake.attempts[GET_APPROVAL]
    assert attempt.metadata["authorization"] == f"Bearer {KEY}"
    assert attempt.metadata["x-tenant-hint"] == "acme"
    assert attempt.metadata["x-request-id"]
    assert attempt.metadata["user-agent"].startswith("convergio-sdk-python/")

    request = approval_pb2.GetApprovalRequest(approval_id="ap-2")
    assert (await client.approvals.get_approval(request)).approval.approval_id == "ap-2"


async def test_request_and_keywords_together_is_a_type_error(
    client: convergio.AsyncClient,
) -> None:
    with pytest.raises(TypeError, match="approval_id"):
        await client.approvals.get_approval(approval_pb2.GetApprovalRequest(), approval_id="a")


async def test_api_key_from_environment(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGIO_API_KEY", "from-env")
    async with convergio.AsyncClient(harness.target) as c:
        await c.approvals.get_approval(approval_id="a")
    assert harness.fake.attempts[GET_APPROVAL][0].metadata["authorization"] == "Bearer from-env"


async def test_idempotent_call_retried_on_unavailable(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[ECHO.name] = Script(failures=[UNAVAILABLE, UNAVAILABLE])
    response = await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"))
    assert response.value == "echo:x"
    attempts = harness.fake.attempts[ECHO.name]
    assert len(attempts) == 3
    # One logical call: the same correlation id on every attempt.
    assert len({a.metadata["x-request-id"] for a in attempts}) == 1


async def test_retries_stop_after_max_attempts(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[ECHO.name] = Script(failures=[UNAVAILABLE] * 10)
    with pytest.raises(convergio.Unavailable):
        await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"))
    assert harness.fake.calls(ECHO.name) == FAST.max_attempts


async def test_non_idempotent_call_never_retried(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[ECHO_ONCE.name] = Script(failures=[UNAVAILABLE])
    with pytest.raises(convergio.Unavailable):
        await client._invoker.unary(ECHO_ONCE, wrappers_pb2.StringValue(value="x"))
    assert harness.fake.calls(ECHO_ONCE.name) == 1


async def test_other_codes_not_retried(harness: Harness, client: convergio.AsyncClient) -> None:
    harness.fake.scripts[ECHO.name] = Script(
        failures=[Failure(grpc.StatusCode.INTERNAL, "boom")] * 2
    )
    with pytest.raises(convergio.Internal):
        await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"))
    assert harness.fake.calls(ECHO.name) == 1


async def test_retry_honours_retry_info(harness: Harness, client: convergio.AsyncClient) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    client._invoker.sleep = record
    open_circuit = rich_abort(
        grpc.StatusCode.UNAVAILABLE,
        "circuit open",
        error_details_pb2.ErrorInfo(reason="CIRCUIT_OPEN", domain="convergio.dev"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=250_000_000)),
    )
    harness.fake.scripts[ECHO.name] = Script(failures=[open_circuit, UNAVAILABLE])
    await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"))
    assert waits[0] == 0.25
    assert 0 <= waits[1] <= FAST.initial_backoff * FAST.multiplier


async def test_retry_gives_up_when_the_deadline_would_pass(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    slow = rich_abort(
        grpc.StatusCode.UNAVAILABLE,
        "come back in a minute",
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=60)),
    )
    harness.fake.scripts[ECHO.name] = Script(failures=[slow])
    with pytest.raises(convergio.Unavailable) as caught:
        await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"), timeout=5)
    assert caught.value.retry_delay == 60
    assert harness.fake.calls(ECHO.name) == 1


async def test_a_long_wait_asked_by_the_server_is_raised_at_once(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    # An open breaker says "retry in 52 s": the caller hears of it now instead of waiting.
    breaker = rich_abort(
        grpc.StatusCode.UNAVAILABLE,
        "breaker open",
        error_details_pb2.ErrorInfo(reason="CIRCUIT_OPEN", domain="convergio.dev"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=52)),
    )
    harness.fake.scripts[ECHO.name] = Script(failures=[breaker])
    with pytest.raises(convergio.Unavailable) as caught:
        await client._invoker.unary(ECHO, wrappers_pb2.StringValue(value="x"))
    assert caught.value.retry_delay == 52
    assert caught.value.reason == "CIRCUIT_OPEN"
    assert harness.fake.calls(ECHO.name) == 1


async def test_request_id_filled_once_and_kept_across_retries(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[DECIDE_APPROVAL] = Script(failures=[UNAVAILABLE])
    request = approval_pb2.DecideApprovalRequest(
        approval_id="ap-1", decision=approval_pb2.DECISION_APPROVE
    )
    await client.approvals.decide_approval(request)
    first, second = harness.fake.attempts[DECIDE_APPROVAL]
    assert first.request.request_id and first.request.request_id == second.request.request_id
    assert request.request_id == ""  # the caller's message is not changed

    await client.approvals.decide_approval(
        approval_id="ap-1", decision=approval_pb2.DECISION_APPROVE, request_id="mine"
    )
    assert harness.fake.attempts[DECIDE_APPROVAL][-1].request.request_id == "mine"


async def test_rich_error_details(harness: Harness, client: convergio.AsyncClient) -> None:
    harness.fake.scripts[GET_APPROVAL] = Script(
        failures=[
            rich_abort(
                grpc.StatusCode.NOT_FOUND,
                "approval ap-9 not found",
                error_details_pb2.ErrorInfo(
                    reason="NOT_FOUND",
                    domain="convergio.dev",
                    metadata={"approval_id": "ap-9", "request_id": "req-from-info"},
                ),
                request_id="req-42",
            )
        ]
    )
    with pytest.raises(convergio.NotFound) as caught:
        await client.approvals.get_approval(approval_id="ap-9")
    error = caught.value
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "NOT_FOUND"
    assert error.domain == "convergio.dev"
    assert error.metadata == {"approval_id": "ap-9", "request_id": "req-from-info"}
    assert error.request_id == "req-42"  # the trailer wins over ErrorInfo
    assert str(error) == (
        "NOT_FOUND: approval ap-9 not found (reason=NOT_FOUND, request_id=req-42)"
    )


async def test_bad_request_and_quota_failure(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="comment", description="at most 2000 characters")
    quota = error_details_pb2.QuotaFailure()
    quota.violations.add(subject="rate:turns_per_minute", description="10 per minute")
    harness.fake.scripts[ECHO_ONCE.name] = Script(
        failures=[
            rich_abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "bad",
                error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT"),
                bad,
            ),
            rich_abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "slow down",
                error_details_pb2.ErrorInfo(reason="RATE_LIMITED"),
                quota,
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=6)),
            ),
        ]
    )
    with pytest.raises(convergio.InvalidArgument) as invalid:
        await client._invoker.unary(ECHO_ONCE, wrappers_pb2.StringValue())
    assert invalid.value.field_violations == [
        convergio.FieldViolation("comment", "at most 2000 characters")
    ]
    with pytest.raises(convergio.QuotaExceeded) as exhausted:
        await client._invoker.unary(ECHO_ONCE, wrappers_pb2.StringValue())
    assert exhausted.value.reason == "RATE_LIMITED"
    assert exhausted.value.quota_violations == [
        convergio.QuotaViolation("rate:turns_per_minute", "10 per minute")
    ]
    assert exhausted.value.retry_delay == 6.0


async def test_deadline(harness: Harness, client: convergio.AsyncClient) -> None:
    harness.fake.scripts[ECHO.name] = Script(hang=True)
    with pytest.raises(convergio.DeadlineExceeded):
        await client._invoker.unary(ECHO, wrappers_pb2.StringValue(), timeout=0.05)


async def test_stream_retried_before_first_message(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[COUNT.name] = Script(failures=[UNAVAILABLE], messages=3)
    values = [m.value async for m in client._invoker.stream(COUNT, wrappers_pb2.StringValue())]
    assert values == [0, 1, 2]
    assert harness.fake.calls(COUNT.name) == 2


async def test_non_idempotent_stream_not_retried(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[COUNT_ONCE.name] = Script(failures=[UNAVAILABLE])
    with pytest.raises(convergio.Unavailable):
        async for _ in client._invoker.stream(COUNT_ONCE, wrappers_pb2.StringValue()):
            pass
    assert harness.fake.calls(COUNT_ONCE.name) == 1


async def test_stream_not_retried_after_first_message(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[COUNT.name] = Script(messages=2, fail_after=UNAVAILABLE)
    received: list[int] = []
    with pytest.raises(convergio.Unavailable):
        async for message in client._invoker.stream(COUNT, wrappers_pb2.StringValue()):
            received.append(message.value)
    assert received == [0, 1]
    assert harness.fake.calls(COUNT.name) == 1


class _ResumeAfterLast:
    """Continues a COUNT stream after the last value it saw."""

    def __init__(self, method: _runtime.Method[Any, Any], request: Message) -> None:
        self.last: int | None = None

    def observe(self, response: Message) -> None:
        assert isinstance(response, wrappers_pb2.Int32Value)
        self.last = response.value

    def resume(self) -> _runtime.Resumption | None:
        if self.last is None:
            return None
        return COUNT, wrappers_pb2.StringValue(value=str(self.last + 1))


async def test_registered_resumer_continues_a_broken_stream(
    harness: Harness, client: convergio.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_runtime._RESUMERS, COUNT.name, _ResumeAfterLast)
    harness.fake.scripts[COUNT.name] = Script(messages=2, fail_after=UNAVAILABLE)
    values = [m.value async for m in client._invoker.stream(COUNT, wrappers_pb2.StringValue())]
    assert values == [0, 1, 2, 3]
    assert [a.request.value for a in harness.fake.attempts[COUNT.name]] == ["", "2"]


# UNAVAILABLE with a RetryInfo of 1 s: the waits between attempts are exact, so a fake clock
# tells how long a stream kept trying.
RESTARTING = rich_abort(
    grpc.StatusCode.UNAVAILABLE,
    "restarting",
    error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
)


class FakeClock:
    """Stands for `time` in `_runtime`; the client's backoff waits advance it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(client: convergio.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_runtime, "time", fake)
    client._invoker.sleep = fake.sleep
    monkeypatch.setitem(_runtime._RESUMERS, COUNT.name, _ResumeAfterLast)
    return fake


async def test_resumed_stream_keeps_trying_within_its_window(
    harness: Harness, clock: FakeClock
) -> None:
    # A break, 8 failed re-attaches (8 s, more than max_attempts), a re-attach that
    # delivers, then again: the window (10 s) counts from each break, not from the first.
    policy = convergio.RetryPolicy(max_attempts=2, resume_window_seconds=10)
    harness.fake.scripts[COUNT.name] = Script(
        failures=[None, *[RESTARTING] * 8, None, *[RESTARTING] * 8],
        messages=2,
        fail_after=RESTARTING,
        fail_after_times=2,
    )
    async with convergio.AsyncClient(harness.target, retry=policy) as client:
        client._invoker.sleep = clock.sleep
        start = clock.now
        values = [m.value async for m in client._invoker.stream(COUNT, wrappers_pb2.StringValue())]
    assert values == [0, 1, 2, 3, 4, 5]
    assert harness.fake.calls(COUNT.name) == 19
    assert clock.now - start == 18


async def test_resumed_stream_gives_up_when_its_window_has_passed(
    harness: Harness, client: convergio.AsyncClient, clock: FakeClock
) -> None:
    harness.fake.scripts[COUNT.name] = Script(
        failures=[None, *[RESTARTING] * 100], messages=2, fail_after=RESTARTING
    )
    policy = convergio.RetryPolicy(resume_window_seconds=5)
    async with convergio.AsyncClient(harness.target, retry=policy) as short:
        short._invoker.sleep = clock.sleep
        start = clock.now
        received: list[int] = []
        with pytest.raises(convergio.Unavailable):
            async for message in short._invoker.stream(COUNT, wrappers_pb2.StringValue()):
                received.append(message.value)
    assert received == [0, 1]
    # Re-attaches at 1, 2, 3 and 4 s after the break; one at 5 s would be past the window.
    assert harness.fake.calls(COUNT.name) == 5
    assert clock.now - start == 4


async def test_resume_window_is_bounded_by_the_call_deadline(
    harness: Harness, client: convergio.AsyncClient, clock: FakeClock
) -> None:
    harness.fake.scripts[COUNT.name] = Script(
        failures=[None, *[RESTARTING] * 100], messages=2, fail_after=RESTARTING
    )
    with pytest.raises(convergio.Unavailable):
        async for _ in client._invoker.stream(COUNT, wrappers_pb2.StringValue(), timeout=3.5):
            pass
    assert harness.fake.calls(COUNT.name) == 4  # at 0, then 1, 2 and 3 s


async def test_resumed_stream_does_not_retry_what_retrying_cannot_fix(
    harness: Harness, client: convergio.AsyncClient, clock: FakeClock
) -> None:
    harness.fake.scripts[COUNT.name] = Script(
        failures=[None, Failure(grpc.StatusCode.NOT_FOUND, "gone")],
        messages=2,
        fail_after=UNAVAILABLE,
    )
    with pytest.raises(convergio.NotFound):
        async for _ in client._invoker.stream(COUNT, wrappers_pb2.StringValue()):
            pass
    assert harness.fake.calls(COUNT.name) == 2


async def test_resumable_stream_that_never_started_keeps_the_short_policy(
    harness: Harness, client: convergio.AsyncClient, clock: FakeClock
) -> None:
    # Nothing broke: the server was not reached at all, and the caller hears so quickly.
    harness.fake.scripts[COUNT.name] = Script(failures=[UNAVAILABLE] * 10)
    with pytest.raises(convergio.Unavailable):
        async for _ in client._invoker.stream(COUNT, wrappers_pb2.StringValue()):
            pass
    assert harness.fake.calls(COUNT.name) == FAST.max_attempts


async def test_stream_errors_are_typed(harness: Harness, client: convergio.AsyncClient) -> None:
    harness.fake.scripts[WATCH_APPROVALS] = Script(
        failures=[
            rich_abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "approver role required",
                error_details_pb2.ErrorInfo(
                    reason="PERMISSION_DENIED", metadata={"required_role": "approver"}
                ),
            )
        ]
    )
    with pytest.raises(convergio.PermissionDenied) as caught:
        async for _ in client.approvals.watch_approvals():
            pass
    assert caught.value.metadata["required_role"] == "approver"


async def test_stream_cancel_ends_iteration(
    harness: Harness, client: convergio.AsyncClient
) -> None:
    harness.fake.scripts[WATCH_APPROVALS] = Script(messages=1, hang=True)
    ids: list[str] = []
    async with client.approvals.watch_approvals(
        min_risk_level=common_pb2.RISK_LEVEL_HIGH
    ) as stream:
        async for event in stream:
            ids.append(event.change.approval.approval_id)
            stream.cancel()
    assert ids == ["0"]
    assert harness.fake.attempts[WATCH_APPROVALS][0].request.min_risk_level == 3


async def test_health(harness: Harness, client: convergio.AsyncClient) -> None:
    await harness.health.set("", health_pb2.HealthCheckResponse.SERVING)
    await harness.health.set("convergio.flag.v1.FlagService", 2)  # NOT_SERVING
    assert await client.health() == "SERVING"
    assert await client.health("convergio.flag.v1.FlagService") == "NOT_SERVING"
    # grpc.health.v1 answers NOT_FOUND; the client says it as the docs do.
    assert await client.health("no.such.Service") == "SERVICE_UNKNOWN"


def _sync_session(target: str) -> dict[str, Any]:
    """A sync client's calls; run in a thread because the server shares the test's loop."""
    waits: list[float] = []
    with convergio.Client(target, api_key=KEY, retry=FAST) as client:
        client._invoker.sleep = waits.append
        out: dict[str, Any] = {"health": client.health()}
        out["approval"] = client.approvals.get_approval(approval_id="s-1").approval.approval_id
        try:
            client.approvals.get_approval(approval_id="missing")
        except convergio.ConvergioError as error:
            out["error"] = error
        with client.approvals.watch_approvals() as stream:
            out["watched"] = [e.change.approval.approval_id for e in stream]
        out["waits"] = waits
    return out


async def test_sync_client(harness: Harness) -> None:
    await harness.health.set("", health_pb2.HealthCheckResponse.SERVING)
    not_found = rich_abort(
        grpc.StatusCode.NOT_FOUND, "gone", error_details_pb2.ErrorInfo(reason="NOT_FOUND")
    )
    # The first call fails once and is retried; the second gets NOT_FOUND.
    harness.fake.scripts[GET_APPROVAL] = Script(failures=[UNAVAILABLE, None, not_found])
    harness.fake.scripts[WATCH_APPROVALS] = Script(failures=[UNAVAILABLE], messages=2)

    out = await asyncio.to_thread(_sync_session, harness.target)

    assert out["health"] == "SERVING"
    assert out["approval"] == "s-1"
    assert isinstance(out["error"], convergio.NotFound)
    assert out["error"].reason == "NOT_FOUND"
    assert out["watched"] == ["0", "1"]
    assert len(out["waits"]) == 2  # one retry of the unary call, one of the stream
    attempts = harness.fake.attempts[GET_APPROVAL]
    assert [a.request.approval_id for a in attempts] == ["s-1", "s-1", "missing"]
    assert all(a.metadata["authorization"] == f"Bearer {KEY}" for a in attempts)


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        convergio.RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        convergio.RetryPolicy(resume_window_seconds=-1)
    policy = convergio.RetryPolicy(initial_backoff=0.1, max_backoff=0.3, multiplier=2)
    for retry in range(1, 6):
        assert 0 <= policy.backoff(retry) <= min(0.3, 0.1 * 2 ** (retry - 1))
    # A long resume window with short waits makes many retries.
    assert 0 <= policy.backoff(5000) <= 0.3


def test_code_values_match_google_rpc() -> None:
    # The fake builds google.rpc.Status codes from grpc.StatusCode values.
    assert grpc.StatusCode.NOT_FOUND.value[0] == code_pb2.NOT_FOUND
