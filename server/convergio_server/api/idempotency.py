"""`request_id` handling for unary mutations: the first call acts and its
result is recorded; a repeat with the same id and the same request gets the
recorded result; the same id with a different request is rejected.

The result is the response, or an error that is the request's definitive answer
(a version conflict, a refused precondition, a missing resource): a repeat gets
the same error and nothing acts again. A transient error (a dependency
unavailable, a rate limit, an internal error, a cancelled call) releases the
request_id, so that a retry acts.

A request_id is remembered for the store's retention (24 hours, as the API promises); then
it is free again. `ExpiredRequestIds` deletes the expired records in the background."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from convergio_server.domain import errors as de
from convergio_server.domain.background import cancel_and_wait, worth_logging
from convergio_server.domain.errors import Aborted, InvalidArgument
from convergio_server.storage.idempotency import PgIdempotencyStore

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)
_WAIT_SECONDS = 10.0
# Expired records are only dead weight (lookups ignore them), so deleting them every ten
# minutes or so is enough; the waits are drawn at random so that processes started together
# do not all delete at once.
CLEANUP_INTERVAL_SECONDS = 600.0
# Rows deleted per statement: each statement holds its row locks for milliseconds, and the
# first run after a long time (or ever) works through the backlog in many such statements.
CLEANUP_BATCH = 1000

# The errors recorded as a request's answer, by the name stored with the record. Each
# depends only on the request and the state it met, so a repeat must not act again.
# QuotaExceeded and Unavailable are missing on purpose: waiting is what fixes them.
DEFINITIVE: dict[str, type[de.DomainError]] = {
    "Aborted": de.Aborted,
    "FailedPrecondition": de.FailedPrecondition,
    "InvalidArgument": de.InvalidArgument,
    "PayloadTooLarge": de.PayloadTooLarge,
    "NotFound": de.NotFound,
    "AlreadyExists": de.AlreadyExists,
    "PermissionDenied": de.PermissionDenied,
}


def _request_hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def encode_error(exc: BaseException) -> dict[str, Any] | None:
    """The error as stored with the record; None if it is transient (not recorded)."""
    kind = type(exc).__name__
    if DEFINITIVE.get(kind) is not type(exc):
        return None
    assert isinstance(exc, de.DomainError)
    encoded: dict[str, Any] = {
        "type": kind,
        "message": exc.message,
        "reason": exc.reason,
        "metadata": dict(exc.metadata),
    }
    if isinstance(exc, de.InvalidArgument):
        encoded["violations"] = [[v.field, v.description] for v in exc.violations]
    return encoded


def decode_error(encoded: dict[str, Any]) -> de.DomainError:
    """The recorded error, rebuilt as the domain error the first call raised."""
    cls = DEFINITIVE.get(str(encoded.get("type")), de.FailedPrecondition)
    error = cls(
        str(encoded.get("message", "")),
        reason=str(encoded.get("reason", "")) or cls.reason,
        metadata={str(k): str(v) for k, v in (encoded.get("metadata") or {}).items()},
    )
    if isinstance(error, de.InvalidArgument):
        error.violations = [
            de.FieldViolation(str(f), str(d)) for f, d in encoded.get("violations") or []
        ]
    return error


async def once(
    store: PgIdempotencyStore,
    tenant_id: str,
    method: str,
    request: Message,
    response_type: type[R],
    act: Callable[[], Awaitable[R]],
    replayed: Callable[[R], Awaitable[None]] | None = None,
) -> R:
    """`act` once per request_id; a repeat gets the first call's response, after
    `replayed` (when given) had a chance to refuse it (what it created is gone), or
    the first call's definitive error."""
    request_id: str = getattr(request, "request_id", "")
    if not request_id:
        return await act()
    digest = _request_hash(request)
    recorded = await store.claim(tenant_id, method, request_id, digest)
    if recorded is None:
        try:
            response = await act()
        except BaseException as exc:
            encoded = encode_error(exc)
            if encoded is None:
                await store.release(tenant_id, method, request_id)
            else:
                await store.fail(tenant_id, method, request_id, encoded)
            raise
        await store.complete(tenant_id, method, request_id, response.SerializeToString())
        return response
    if recorded.request_hash != digest:
        raise InvalidArgument.for_field(
            "request_id", "was already used for a different request; use a new request_id"
        )
    if not recorded.finished:
        recorded = await store.wait(tenant_id, method, request_id, _WAIT_SECONDS)
        if recorded is None:  # the first call failed and released its claim: act now
            return await once(store, tenant_id, method, request, response_type, act, replayed)
        if not recorded.finished:
            raise Aborted("a request with this request_id is still being processed; retry later")
    if recorded.error is not None:
        raise decode_error(recorded.error)
    assert recorded.response is not None
    response = response_type.FromString(recorded.response)
    if replayed is not None:
        await replayed(response)
    return response


class ExpiringRecords(Protocol):
    async def delete_expired(self, limit: int) -> int: ...


class ExpiredRequestIds:
    """Deletes the request-id records past their retention, `batch` rows per statement,
    every `interval_seconds` or so: each wait is drawn between half and one and a half
    intervals, the first one (after start) between none and one. Every server process runs
    one; whichever comes first deletes, the others find little left. While PostgreSQL cannot
    be reached a run fails, is logged (the first time, then once in a while) and the next
    one tries again."""

    def __init__(
        self,
        store: ExpiringRecords,
        interval_seconds: float = CLEANUP_INTERVAL_SECONDS,
        batch: int = CLEANUP_BATCH,
    ) -> None:
        self._store = store
        self._interval = interval_seconds
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # runs failed in a row

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_now_and_then(), name="request-id-cleanup")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self) -> int:
        """Delete every expired record, a batch per statement; how many were deleted."""
        deleted = 0
        while True:
            count = await self._store.delete_expired(self._batch)
            deleted += count
            if count < self._batch:
                return deleted

    async def _run_now_and_then(self) -> None:
        await asyncio.sleep(self._interval * random.random())
        while True:
            try:
                deleted = await self.run()
            except Exception as exc:
                self.failures += 1
                if worth_logging(self.failures):
                    log.warning(
                        "deleting expired request ids failed (%d times in a row): %s; "
                        "trying again in about %.0f s",
                        self.failures,
                        exc,
                        self._interval,
                    )
            else:
                if self.failures:
                    log.info("deleting expired request ids works again")
                self.failures = 0
                if deleted:
                    log.debug("deleted %d expired request ids", deleted)
            await asyncio.sleep(self._interval * random.uniform(0.5, 1.5))
