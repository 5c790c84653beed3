"""Typed errors of the Convergio API.

The server reports every failure as a `google.rpc.Status` in the
`grpc-status-details-bin` trailer: one `google.rpc.ErrorInfo` (a stable
`reason` in the domain "convergio.dev") and, where they apply,
`google.rpc.BadRequest` field violations, a `google.rpc.QuotaFailure` and a
`google.rpc.RetryInfo`. `from_rpc_error` turns a `grpc.RpcError` into the
`ConvergioError` subclass of its status code with those details unpacked, so
callers branch on types and reasons instead of parsing messages:

    try:
        client.conversations.get_conversation(conversation_id=cid)
    except NotFound:
        ...
    except QuotaExceeded as err:
        if err.reason == "RATE_LIMITED":
            time.sleep(err.retry_delay or 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConvergioError",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QuotaExceeded",
    "QuotaViolation",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
]

DETAILS_TRAILER = "grpc-status-details-bin"
REQUEST_ID_TRAILER = "x-request-id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One wrong request field: its dotted path (e.g. "flag.percentage") and what to fix."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One exhausted quota, e.g. subject "budget:user:alice:daily" or "rate:turns_per_minute"."""

    subject: str
    description: str


class ConvergioError(Exception):
    """A failed call. Branch on the subclass (status code) and on `reason`.

    Attributes:
        code: the gRPC status code.
        message: the server's human-readable message; not for parsing.
        reason: the stable `google.rpc.ErrorInfo.reason`, e.g. "BUDGET_EXHAUSTED";
            empty when the server sent no ErrorInfo (e.g. a failure in transport).
        domain: `ErrorInfo.domain`, "convergio.dev" for errors of the service.
        metadata: `ErrorInfo.metadata`, e.g. {"conversation_id": "..."}.
        request_id: the server's id of the call, to quote when reporting a problem.
        field_violations: from `google.rpc.BadRequest`.
        quota_violations: from `google.rpc.QuotaFailure`.
        retry_delay: seconds to wait before retrying, from `google.rpc.RetryInfo`.
        status: the whole `google.rpc.Status`, for details not unpacked here.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        field_violations: Iterable[FieldViolation] = (),
        quota_violations: Iterable[QuotaViolation] = (),
        retry_delay: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.request_id = request_id
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.quota_violations: list[QuotaViolation] = list(quota_violations)
        self.retry_delay = retry_delay
        self.status = status

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        facts = [f"reason={self.reason}"] if self.reason else []
        if self.request_id:
            facts.append(f"request_id={self.request_id}")
        if self.retry_delay is not None:
            facts.append(f"retry_delay={self.retry_delay:g}s")
        if facts:
            text += f" ({', '.join(facts)})"
        violations = [f"{v.field}: {v.description}" for v in self.field_violations]
        violations += [f"{q.subject}: {q.description}" for q in self.quota_violations]
        if violations:
            text += " [" + "; ".join(violations) + "]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments: rebuild through the instance dict.
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[ConvergioError], message: str, state: dict[str, Any]) -> ConvergioError:
    error = cls(message)
    error.__dict__.update(state)
    return error


class Cancelled(ConvergioError):
    """The call was cancelled, usually by the caller."""

    code = grpc.StatusCode.CANCELLED


class Unknown(ConvergioError):
    """An error without a more specific status."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ConvergioError):
    """The request is wrong; `field_violations` name the fields and what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ConvergioError):
    """The call's deadline (or a step or tool timeout) passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ConvergioError):
    """The resource does not exist in the caller's tenant; `metadata` names it."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ConvergioError):
    """A resource with that identity already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ConvergioError):
    """The caller lacks the role the call needs (`metadata["required_role"]`)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class QuotaExceeded(ConvergioError):
    """RESOURCE_EXHAUSTED: a budget, a rate limit or another quota is spent.

    `reason` tells which ("BUDGET_EXHAUSTED", "RATE_LIMITED", "QUOTA_EXCEEDED"),
    `quota_violations` name the quota and `retry_delay` says when to try again.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ConvergioError):
    """The resource is not in a state that allows the call; retrying will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ConvergioError):
    """A concurrent change won; re-read and retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ConvergioError):
    """A value or position is past the valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ConvergioError):
    """The server does not provide this call (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ConvergioError):
    """A bug or unexpected failure in the server; quote `request_id` when reporting it."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(ConvergioError):
    """The server or one of its dependencies cannot be reached right now."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ConvergioError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ConvergioError):
    """No API key, or one that identifies no principal."""

    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[ConvergioError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        QuotaExceeded,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class(code: grpc.StatusCode) -> type[ConvergioError]:
    """The ConvergioError subclass for a status code."""
    return _BY_CODE.get(code, ConvergioError)


def from_rpc_error(err: grpc.RpcError) -> ConvergioError:
    """Convert a failed gRPC call (sync or asyncio) into its typed error."""
    code = _call(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = _call(err, "details")
    trailers = _pairs(_call(err, "trailing_metadata"))
    status: status_pb2.Status | None = None
    raw = trailers.get(DETAILS_TRAILER)
    if isinstance(raw, bytes):
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except Exception:  # a malformed trailer must not hide the real error
            status = None
    if not isinstance(message, str) or not message:
        message = status.message if status is not None and status.message else code.name
    details: dict[str, Any] = {}
    detail_request_id = ""
    if status is not None:
        details, detail_request_id = _unpack(status.details)
    request_id = trailers.get(REQUEST_ID_TRAILER)
    if not isinstance(request_id, str) or not request_id:
        request_id = detail_request_id
    return error_class(code)(message, code=code, request_id=request_id, status=status, **details)


def _unpack(details: Iterable[any_pb2.Any]) -> tuple[dict[str, Any], str]:
    """The constructor arguments found in the details, and the request id they carry."""
    out: dict[str, Any] = {}
    field_violations: list[FieldViolation] = []
    quota_violations: list[QuotaViolation] = []
    info_request_id = request_info_id = ""
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        quota = error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        request = error_details_pb2.RequestInfo()
        if detail.Unpack(info):
            out.setdefault("reason", info.reason)
            out.setdefault("domain", info.domain)
            out.setdefault("metadata", dict(info.metadata))
            info_request_id = info_request_id or info.metadata.get("request_id", "")
        elif detail.Unpack(bad):
            field_violations += [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Unpack(quota):
            quota_violations += [QuotaViolation(v.subject, v.description) for v in quota.violations]
        elif detail.Unpack(retry):
            out["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Unpack(request):
            request_info_id = request_info_id or request.request_id
    out["field_violations"] = field_violations
    out["quota_violations"] = quota_violations
    return out, info_request_id or request_info_id


def _call(err: object, name: str) -> Any:
    # Not every RpcError is also a grpc.Call (e.g. errors raised by interceptors).
    method = getattr(err, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:
        return None


def _pairs(metadata: Any) -> dict[str, str | bytes]:
    # Sync calls return a tuple of (key, value) namedtuples, asyncio calls an
    # aio.Metadata; both iterate as pairs. The first value of a key wins.
    out: dict[str, str | bytes] = {}
    for key, value in metadata or ():
        out.setdefault(key, value)
    return out
