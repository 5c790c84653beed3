"""Domain errors to gRPC statuses carrying `google.rpc.Status` details."""

from __future__ import annotations

import logging

import grpc
import redis.exceptions
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from convergio_server.domain import errors as de
from convergio_server.storage import postgres as postgres_store
from convergio_server.storage import redis as redis_store

DOMAIN = "convergio.dev"
DETAILS_KEY = "grpc-status-details-bin"
log = logging.getLogger(__name__)
# Status messages and details travel in trailing metadata, where a client refuses more than
# 8 KiB in all: an error that repeats a caller's oversized input must still arrive whole.
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 300

_CODES: dict[type[de.DomainError], grpc.StatusCode] = {
    de.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    de.NotFound: grpc.StatusCode.NOT_FOUND,
    de.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    de.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    de.Aborted: grpc.StatusCode.ABORTED,
    de.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    de.PayloadTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    de.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    de.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    de.Unavailable: grpc.StatusCode.UNAVAILABLE,
    de.NotImplementedYet: grpc.StatusCode.UNIMPLEMENTED,
}


def status_code_for(error: de.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(
    error: de.DomainError, request_id: str
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """The code, message and trailing metadata (with the encoded google.rpc.Status)."""
    code = status_code_for(error)
    message = clip(error.message, MAX_MESSAGE_CHARS)
    status = status_pb2.Status(code=code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN)
    for key, value in error.metadata.items():
        info.metadata[clip(key, MAX_DETAIL_CHARS)] = clip(value, MAX_DETAIL_CHARS)
    info.metadata["request_id"] = request_id
    status.details.add().Pack(info)
    if isinstance(error, de.InvalidArgument) and error.violations:
        bad = error_details_pb2.BadRequest()
        for v in error.violations:
            bad.field_violations.add(
                field=clip(v.field, MAX_DETAIL_CHARS),
                description=clip(v.description, MAX_DETAIL_CHARS),
            )
        status.details.add().Pack(bad)
    if isinstance(error, de.QuotaExceeded):
        if error.violations:
            quota = error_details_pb2.QuotaFailure()
            for q in error.violations:
                quota.violations.add(
                    subject=clip(q.subject, MAX_DETAIL_CHARS),
                    description=clip(q.description, MAX_DETAIL_CHARS),
                )
            status.details.add().Pack(quota)
    retry_after = getattr(error, "retry_after_seconds", None)
    if isinstance(error, de.QuotaExceeded | de.Unavailable) and retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status.details.add().Pack(error_details_pb2.RequestInfo(request_id=request_id))
    metadata: tuple[tuple[str, str | bytes], ...] = (
        (DETAILS_KEY, status.SerializeToString()),
        ("x-request-id", request_id),
    )
    return code, message, metadata


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate(exc: BaseException) -> de.DomainError | None:
    """Turn infrastructure failures into the domain error a client can act on."""
    if isinstance(exc, de.DomainError):
        return exc
    if isinstance(exc, redis.exceptions.RedisError) or _from_redis(exc):
        if redis_store.is_unavailable_error(exc):
            return de.store_unavailable("Redis is unreachable; retry shortly", "redis")
        return None
    if postgres_store.is_unavailable_error(exc):
        return de.store_unavailable("PostgreSQL is unreachable; retry shortly", "postgresql")
    return None


def _from_redis(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, redis.exceptions.RedisError)
