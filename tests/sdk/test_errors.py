"""grpc.RpcError -> ConvergioError: status codes, google.rpc details, str()."""

from __future__ import annotations

import pickle
from typing import Any

import convergio
import grpc
import grpc.aio
import pytest
from convergio import errors
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]


class FakeCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a failed sync call raises: an RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def status_bytes(code: grpc.StatusCode, message: str, *details: Message) -> bytes:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return bytes(status.SerializeToString())


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.CANCELLED, convergio.Cancelled),
        (grpc.StatusCode.UNKNOWN, convergio.Unknown),
        (grpc.StatusCode.INVALID_ARGUMENT, convergio.InvalidArgument),
        (grpc.StatusCode.DEADLINE_EXCEEDED, convergio.DeadlineExceeded),
        (grpc.StatusCode.NOT_FOUND, convergio.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, convergio.AlreadyExists),
        (grpc.StatusCode.PERMISSION_DENIED, convergio.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, convergio.QuotaExceeded),
        (grpc.StatusCode.FAILED_PRECONDITION, convergio.FailedPrecondition),
        (grpc.StatusCode.ABORTED, convergio.Aborted),
        (grpc.StatusCode.OUT_OF_RANGE, convergio.OutOfRange),
        (grpc.StatusCode.UNIMPLEMENTED, convergio.Unimplemented),
        (grpc.StatusCode.INTERNAL, convergio.Internal),
        (grpc.StatusCode.UNAVAILABLE, convergio.Unavailable),
        (grpc.StatusCode.DATA_LOSS, convergio.DataLoss),
        (grpc.StatusCode.UNAUTHENTICATED, convergio.Unauthenticated),
    ],
)
def test_subclass_per_status(code: grpc.StatusCode, cls: type[convergio.ConvergioError]) -> None:
    error = convergio.from_rpc_error(FakeCall(code, "text"))
    assert type(error) is cls
    assert isinstance(error, convergio.ConvergioError)
    assert error.code == code
    assert error.message == "text"
    assert str(error) == f"{code.name}: text"


def test_all_details() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="flag.percentage", description="must be 0 to 100")
    bad.field_violations.add(field="flag.key", description="required")
    quota = error_details_pb2.QuotaFailure()
    quota.violations.add(subject="budget:user:alice:daily", description="$5.00 spent")
    raw = status_bytes(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "budget spent",
        error_details_pb2.ErrorInfo(
            reason="BUDGET_EXHAUSTED", domain="convergio.dev", metadata={"budget": "daily"}
        ),
        bad,
        quota,
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=1_500_000_000)),
    )
    error = convergio.from_rpc_error(
        FakeCall(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "budget spent",
            (("x-request-id", "r-1"), (errors.DETAILS_TRAILER, raw)),
        )
    )
    assert isinstance(error, convergio.QuotaExceeded)
    assert (error.reason, error.domain) == ("BUDGET_EXHAUSTED", "convergio.dev")
    assert error.metadata == {"budget": "daily"}
    assert error.request_id == "r-1"
    assert error.field_violations == [
        convergio.FieldViolation("flag.percentage", "must be 0 to 100"),
        convergio.FieldViolation("flag.key", "required"),
    ]
    assert error.quota_violations == [
        convergio.QuotaViolation("budget:user:alice:daily", "$5.00 spent")
    ]
    assert error.retry_delay == 1.5
    assert error.status is not None and error.status.message == "budget spent"
    assert str(error) == (
        "RESOURCE_EXHAUSTED: budget spent (reason=BUDGET_EXHAUSTED, request_id=r-1, "
        "retry_delay=1.5s) [flag.percentage: must be 0 to 100; flag.key: required; "
        "budget:user:alice:daily: $5.00 spent]"
    )


def test_request_id_falls_back_to_error_info_then_request_info() -> None:
    from_info = status_bytes(
        grpc.StatusCode.NOT_FOUND,
        "x",
        error_details_pb2.RequestInfo(request_id="from-request-info"),
        error_details_pb2.ErrorInfo(reason="NOT_FOUND", metadata={"request_id": "from-info"}),
    )
    error = convergio.from_rpc_error(
        FakeCall(grpc.StatusCode.NOT_FOUND, "x", ((errors.DETAILS_TRAILER, from_info),))
    )
    assert error.request_id == "from-info"

    only_request_info = status_bytes(
        grpc.StatusCode.NOT_FOUND, "x", error_details_pb2.RequestInfo(request_id="ri")
    )
    error = convergio.from_rpc_error(
        FakeCall(grpc.StatusCode.NOT_FOUND, "x", ((errors.DETAILS_TRAILER, only_request_info),))
    )
    assert error.request_id == "ri"


def test_asyncio_metadata_is_read_too() -> None:
    raw = status_bytes(
        grpc.StatusCode.ABORTED,
        "version mismatch",
        error_details_pb2.ErrorInfo(reason="ABORTED", metadata={"current_version": "7"}),
    )
    trailers = grpc.aio.Metadata(("x-request-id", "r-2"), (errors.DETAILS_TRAILER, raw))
    error = convergio.from_rpc_error(
        grpc.aio.AioRpcError(grpc.StatusCode.ABORTED, grpc.aio.Metadata(), trailers, "conflict")
    )
    assert isinstance(error, convergio.Aborted)
    assert error.metadata["current_version"] == "7"
    assert error.request_id == "r-2"
    assert error.message == "conflict"


def test_malformed_or_missing_details() -> None:
    error = convergio.from_rpc_error(
        FakeCall(grpc.StatusCode.INTERNAL, "", ((errors.DETAILS_TRAILER, b"\xff\xff"),))
    )
    assert isinstance(error, convergio.Internal)
    assert error.status is None
    assert error.message == "INTERNAL"  # no text at all: the code name stands in
    assert error.reason == "" and error.field_violations == [] and error.retry_delay is None

    # An RpcError that is not a grpc.Call (e.g. raised by an interceptor).
    bare = convergio.from_rpc_error(grpc.RpcError())
    assert type(bare) is convergio.Unknown


def test_message_from_status_when_details_empty() -> None:
    raw = status_bytes(grpc.StatusCode.NOT_FOUND, "conversation c-1 not found")
    error = convergio.from_rpc_error(
        FakeCall(grpc.StatusCode.NOT_FOUND, "", ((errors.DETAILS_TRAILER, raw),))
    )
    assert error.message == "conversation c-1 not found"


def test_errors_pickle() -> None:
    error = convergio.InvalidArgument(
        "bad",
        reason="INVALID_ARGUMENT",
        request_id="r",
        field_violations=[convergio.FieldViolation("a", "b")],
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is convergio.InvalidArgument
    assert str(copy) == str(error)
    assert copy.field_violations == error.field_violations


def test_constructed_without_code_uses_class_code() -> None:
    assert convergio.NotFound("x").code == grpc.StatusCode.NOT_FOUND
    assert convergio.ConvergioError("x").code == grpc.StatusCode.UNKNOWN
    assert repr(convergio.NotFound("x")) == "NotFound('NOT_FOUND: x')"
