"""`request_id` handling for unary mutations: the first call acts and its
response is recorded; a repeat with the same id and the same request gets the
recorded response; the same id with a different request is rejected."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from convergio_server.domain.errors import Aborted, InvalidArgument
from convergio_server.storage.idempotency import PgIdempotencyStore

R = TypeVar("R", bound=Message)
_WAIT_SECONDS = 10.0


def _request_hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


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
    `replayed` (when given) had a chance to refuse it (what it created is gone)."""
    request_id: str = getattr(request, "request_id", "")
    if not request_id:
        return await act()
    digest = _request_hash(request)
    recorded = await store.claim(tenant_id, method, request_id, digest)
    if recorded is None:
        try:
            response = await act()
        except BaseException:
            await store.release(tenant_id, method, request_id)
            raise
        await store.complete(tenant_id, method, request_id, response.SerializeToString())
        return response
    if recorded.request_hash != digest:
        raise InvalidArgument.for_field(
            "request_id", "was already used for a different request; use a new request_id"
        )
    if recorded.response is None:
        recorded = await store.wait(tenant_id, method, request_id, _WAIT_SECONDS)
        if recorded is None:  # the first call failed and released its claim: act now
            return await once(store, tenant_id, method, request, response_type, act, replayed)
        if recorded.response is None:
            raise Aborted("a request with this request_id is still being processed; retry later")
    response = response_type.FromString(recorded.response)
    if replayed is not None:
        await replayed(response)
    return response
