"""Call machinery behind the generated service facades (`_services.py`).

One `AsyncInvoker` (grpc.aio) or `Invoker` (sync grpc) per client does what
every call needs: the `authorization: Bearer <key>` and `x-request-id`
metadata, the default deadline of unary calls, an idempotency key in
`request_id` when the request has one and the caller left it empty, retries
of idempotent calls on UNAVAILABLE, and `grpc.RpcError` -> `ConvergioError`.

Retries: only methods whose proto declares `idempotency_level`
NO_SIDE_EFFECTS or IDEMPOTENT, only on UNAVAILABLE, with exponential backoff
and full jitter, or after the server's `google.rpc.RetryInfo.retry_delay`
when it sends one. The call's timeout bounds all attempts together. A server
stream is retried only while it has not delivered a message: once the caller
has seen messages, a plain retry would replay them. A `StreamResumer`
registered for the method (`register_resumer`) can continue such a stream
instead, e.g. by re-attaching after the last sequence number it observed.

A stream with a resumer that broke after delivering messages is not bound by
`max_attempts`: a server restart (drain, then a new process) or a network cut
lasts seconds, far longer than a few quick retries. It keeps re-attaching for
`RetryPolicy.resume_window_seconds` counted from the break, and the window
starts again once the stream delivers messages again.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

try:  # optional: a caller that traces with OpenTelemetry has it
    from opentelemetry import propagate as _propagate
except ImportError:  # pragma: no cover - depends on the caller's environment
    _propagate = None  # type: ignore[assignment]

from convergio.errors import Cancelled, ConvergioError, from_rpc_error

__all__ = [
    "AsyncInvoker",
    "AsyncStream",
    "Invoker",
    "Method",
    "Resumption",
    "RetryPolicy",
    "Stream",
    "StreamResumer",
    "build_request",
    "register_resumer",
]

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)
M = TypeVar("M", bound=Message)

Metadata = Sequence[tuple[str, str]]

# Only UNAVAILABLE is safe to retry blindly: the request did not take effect
# or, for idempotent methods, repeating it does no harm.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
# Name of the client-chosen idempotency key every mutating request carries.
REQUEST_ID_FIELD = "request_id"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How idempotent calls are retried on UNAVAILABLE.

    `max_attempts` counts the first attempt too; `RetryPolicy(max_attempts=1)`
    turns retries off. The wait before retry n is uniformly random in
    [0, min(max_backoff, initial_backoff * multiplier ** (n - 1))] seconds,
    unless the server says how long to wait (google.rpc.RetryInfo).

    `resume_window_seconds` applies instead of `max_attempts` to a stream that
    can resume (conversation streams) once it has delivered messages: when it
    breaks, it keeps re-attaching, with the same backoff, for that many
    seconds from the break, enough to outlast a server restart; 0 turns
    re-attaching off. The call's timeout, when it has one, still bounds it.

    `max_retry_delay` is the longest wait the server may ask for (RetryInfo)
    that the client sits out by itself; a longer one (an open circuit breaker,
    say) is raised at once, with its `retry_delay`, so that the caller decides
    instead of waiting in silence.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    resume_window_seconds: float = 60.0
    max_retry_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if self.resume_window_seconds < 0:
            raise ValueError("resume_window_seconds must be >= 0")
        if self.max_retry_delay < 0:
            raise ValueError("max_retry_delay must be >= 0")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        try:
            ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        except OverflowError:  # the many retries of a long resume window
            ceiling = self.max_backoff
        return random.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class Method(Generic[ReqT, RespT]):
    """One RPC: its full name ("/package.Service/Method"), message classes and
    whether its proto declares it safe to repeat."""

    name: str
    request_type: type[ReqT]
    response_type: type[RespT]
    idempotent: bool


Resumption = tuple[Method[Any, Any], Message]
"""The call that continues an interrupted stream: a method and its request."""


class StreamResumer(Protocol):
    """Continues a server stream that failed after delivering messages.

    `observe` sees every message handed to the caller; `resume` returns the
    call that delivers what comes after the last observed message (its
    responses must be of the same type), or None when the stream cannot be
    continued. A resumed call is retried like a fresh one: only when its own
    method is idempotent.
    """

    def observe(self, response: Message) -> None: ...

    def resume(self) -> Resumption | None: ...


ResumerFactory = Callable[[Method[Any, Any], Message], StreamResumer]
"""Builds the resumer of one stream from the method and the request that opened it."""

_RESUMERS: dict[str, ResumerFactory] = {}


def register_resumer(method_name: str, factory: ResumerFactory) -> None:
    """Make streams of `method_name` ("/package.Service/Method") resumable."""
    _RESUMERS[method_name] = factory


def build_request(cls: type[M], request: M | None, fields: dict[str, object], /) -> M:
    """The request of a facade call: the one given, or one built from the
    keyword arguments that are not None. Mixing both is a TypeError."""
    given = {name: value for name, value in fields.items() if value is not None}
    if request is None:
        return cls(**given)
    if given:
        raise TypeError(
            f"pass either a {cls.__name__} or keyword arguments, not both "
            f"(got {', '.join(sorted(given))})"
        )
    if not isinstance(request, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(request).__name__}")
    return request


def closed_error() -> ConvergioError:
    """What a call on a closed client, or a stream whose client was closed, raises."""
    return Cancelled("the client is closed; open a new one", reason="CLIENT_CLOSED")


def with_request_id(request: M) -> M:
    """The request with an idempotency key: one is generated when the message
    has a `request_id` string field and it is empty. Generated once per
    logical call, so that retries carry the same key; the caller's message is
    copied, not changed, so that reusing it makes a new call."""
    if REQUEST_ID_FIELD not in request.DESCRIPTOR.fields_by_name:
        return request
    current = getattr(request, REQUEST_ID_FIELD)
    if not isinstance(current, str) or current:  # not a string field, or already set
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    setattr(filled, REQUEST_ID_FIELD, uuid.uuid4().hex)
    return filled


class _Attempts:
    """Attempt counting and backoff of one logical call."""

    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.count = 1
        # Set once a resumable stream has delivered: from then on its breaks are
        # bounded by the resume window, not by max_attempts.
        self.resumable = False
        self.broken_at: float | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def delay(self, error: ConvergioError, idempotent: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if not idempotent or error.code not in RETRYABLE_CODES:
            return None
        now = time.monotonic()
        window_end: float | None = None
        if self.resumable:
            if self.broken_at is None:
                self.broken_at = now
            window_end = self.broken_at + self.policy.resume_window_seconds
        elif self.count >= self.policy.max_attempts:
            return None
        delay = error.retry_delay
        if delay is None:
            delay = self.policy.backoff(self.count)
        elif delay > self.policy.max_retry_delay:
            return None
        if window_end is not None and now + delay >= window_end:
            return None
        if self.deadline is not None and now + delay >= self.deadline:
            return None
        self.count += 1
        return delay

    def progressed(self, resumable: bool) -> None:
        # A stream that delivered messages earns a fresh set of attempts, and a
        # resumable one a fresh window counted from its next break.
        self.count = 1
        self.resumable = resumable
        self.broken_at = None


class _Base:
    def __init__(self, *, api_key: str | None, timeout: float | None, retry: RetryPolicy) -> None:
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry
        # Per channel (by position among the invoker's channels), method and kind.
        self._callables: dict[tuple[int, str, bool], Any] = {}
        self._calls = itertools.count()  # numbers the calls, to take the channels in turn
        self.closed = False

    _channels: list[Any]  # the invoker's channels (an async invoker opens each on first use)

    def _channel_at(self, slot: int) -> Any:
        raise NotImplementedError

    def _pick(self, method: Method[Any, Any], stream: bool) -> Any:
        """The callable of `method` on the next channel in turn (thread-safe:
        itertools.count is atomic)."""
        if self.closed:
            # grpc's own answers to a call on a closed channel are a ValueError, a UsageError,
            # or, for a method not called before, a crash of the process.
            raise closed_error()
        slot = next(self._calls) % len(self._channels)
        return self._callable(self._channel_at(slot), method, stream, slot)

    def _metadata(self, metadata: Metadata | None) -> list[tuple[str, str]]:
        # gRPC takes lower-case keys only ("Authorization" fails the call as INTERNAL).
        caller = [(key.lower(), value) for key, value in metadata or ()]
        keys = {key for key, _ in caller}
        out: list[tuple[str, str]] = []
        if self.api_key and "authorization" not in keys:
            out.append(("authorization", f"Bearer {self.api_key}"))
        if "x-request-id" not in keys:
            # One id per logical call, kept across retries, so that the
            # server's logs group the attempts.
            out.append(("x-request-id", uuid.uuid4().hex))
        if _propagate is not None and "traceparent" not in keys:
            # The caller's current OpenTelemetry span (when it traces): the server's spans
            # of this call, its turn and its model calls join the caller's trace.
            carrier: dict[str, str] = {}
            _propagate.inject(carrier)
            out.extend(carrier.items())
        return out + caller

    def _callable(self, channel: Any, method: Method[Any, Any], stream: bool, slot: int = 0) -> Any:
        key = (slot, method.name, stream)
        found = self._callables.get(key)
        if found is None:
            factory = channel.unary_stream if stream else channel.unary_unary
            found = factory(
                method.name,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
                _registered_method=True,
            )
            self._callables[key] = found
        return found


class AsyncInvoker(_Base):
    """Runs calls on grpc.aio channels, created on first use so that they belong
    to the event loop that uses them: one, or `connections` taken in turn."""

    def __init__(
        self,
        channel_factory: Callable[[], grpc.aio.Channel],
        *,
        api_key: str | None = None,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
        connections: int = 1,
    ) -> None:
        super().__init__(api_key=api_key, timeout=timeout, retry=retry or RetryPolicy())
        self._channel_factory = channel_factory
        self._channels: list[Any] = [None] * connections
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the backoff waits

    @property
    def channel(self) -> grpc.aio.Channel:
        """The first channel."""
        return self._channel_at(0)

    def _channel_at(self, slot: int) -> Any:
        found = self._channels[slot]
        if found is None:
            found = self._channels[slot] = self._channel_factory()
        return found

    async def unary(
        self,
        method: Method[ReqT, RespT],
        request: ReqT,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline
        metadata: Metadata | None = None,
    ) -> RespT:
        request = with_request_id(request)
        attempts = _Attempts(self.retry, self.timeout if timeout is None else timeout)
        call_metadata = self._metadata(metadata)
        invoke = self._pick(method, stream=False)
        while True:
            try:
                response = await invoke(
                    request, timeout=attempts.remaining(), metadata=call_metadata
                )
                return cast(RespT, response)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = attempts.delay(error, method.idempotent)
                if delay is None:
                    raise error from exc
            await self.sleep(delay)

    def stream(
        self,
        method: Method[ReqT, RespT],
        request: ReqT,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncStream[RespT]:
        return AsyncStream(self, method, with_request_id(request), timeout, metadata)

    async def close(self) -> None:
        self.closed = True
        for channel in self._channels:
            if channel is not None:
                await channel.close()


class Invoker(_Base):
    """Runs calls on sync grpc channels: one, or several taken in turn."""

    def __init__(
        self,
        channel: grpc.Channel | Sequence[grpc.Channel],
        *,
        api_key: str | None = None,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(api_key=api_key, timeout=timeout, retry=retry or RetryPolicy())
        self._channels: list[grpc.Channel] = (
            list(channel) if isinstance(channel, Sequence) else [channel]
        )
        if not self._channels:
            raise ValueError("an invoker needs a channel")
        self.channel = self._channels[0]
        self.sleep: Callable[[float], None] = time.sleep  # the backoff waits

    def _channel_at(self, slot: int) -> Any:
        return self._channels[slot]

    def unary(
        self,
        method: Method[ReqT, RespT],
        request: ReqT,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RespT:
        request = with_request_id(request)
        attempts = _Attempts(self.retry, self.timeout if timeout is None else timeout)
        call_metadata = self._metadata(metadata)
        invoke = self._pick(method, stream=False)
        while True:
            try:
                response = invoke(request, timeout=attempts.remaining(), metadata=call_metadata)
                return cast(RespT, response)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = attempts.delay(error, method.idempotent)
                if delay is None:
                    raise error from exc
            self.sleep(delay)

    def stream(
        self,
        method: Method[ReqT, RespT],
        request: ReqT,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Stream[RespT]:
        return Stream(self, method, with_request_id(request), timeout, metadata)

    def close(self) -> None:
        self.closed = True
        for channel in self._channels:
            channel.close()


class AsyncCancelOnExit:
    """`aclose()` and `async with` for a stream that ends with `cancel()`."""

    def cancel(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class CancelOnExit:
    """`close()` and `with` for a stream that ends with `cancel()`."""

    def cancel(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class _StreamState(Generic[RespT]):
    """What the sync and async streams share: the current call's method and
    request, attempt counting, and the decision to retry or resume."""

    def __init__(
        self,
        invoker: _Base,
        method: Method[Any, RespT],
        request: Message,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        self._invoker = invoker
        self._method: Method[Any, RespT] = method
        self._request = request
        self._metadata = invoker._metadata(metadata)
        self._attempts = _Attempts(invoker.retry, timeout)
        factory = _RESUMERS.get(method.name)
        self._resumer = factory(method, request) if factory is not None else None
        self._delivered = False  # by the current attempt
        self._cancelled = False
        self._done = False

    def _received(self, message: RespT) -> RespT:
        if not self._delivered:
            self._delivered = True
            self._attempts.progressed(resumable=self._resumer is not None)
        if self._resumer is not None:
            self._resumer.observe(message)
        return message

    def _next_attempt(self, error: ConvergioError) -> float | None:
        """Prepare the next call and return the wait before it, or None to give up."""
        method: Method[Any, RespT] = self._method
        request = self._request
        if self._delivered:
            # Resuming mid-way needs a resumer; a plain retry would replay messages.
            resumption = self._resumer.resume() if self._resumer is not None else None
            if resumption is None:
                return None
            method, request = resumption
        delay = self._attempts.delay(error, method.idempotent)
        if delay is not None:
            self._method, self._request, self._delivered = method, request, False
        return delay


class AsyncStream(_StreamState[RespT], AsyncCancelOnExit, AsyncIterator[RespT]):
    """The responses of a server-streaming call, read with `async for`.

    Stop reading early with `cancel()`, or use the stream as an async context
    manager to cancel it on exit. Errors are raised as ConvergioError
    subclasses while iterating.
    """

    def __init__(
        self,
        invoker: AsyncInvoker,
        method: Method[Any, RespT],
        request: Message,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        super().__init__(invoker, method, request, timeout, metadata)
        self._async_invoker = invoker
        # Started now, as grpc does: the request is sent even before iterating.
        self._call: Any = self._start()

    def _start(self) -> Any:
        invoke = self._async_invoker._pick(self._method, stream=True)
        return invoke(self._request, timeout=self._attempts.remaining(), metadata=self._metadata)

    def __aiter__(self) -> AsyncStream[RespT]:
        return self

    async def __anext__(self) -> RespT:
        while True:
            if self._done or self._cancelled:
                raise StopAsyncIteration
            if self._call is None:
                self._call = self._start()
            try:
                message = await self._call.read()
            except grpc.RpcError as exc:
                if self._cancelled:
                    raise StopAsyncIteration from None
                error = from_rpc_error(exc)
                delay = self._next_attempt(error)
                if delay is None:
                    self._done = True
                    raise error from exc
                self._call = None
                await self._async_invoker.sleep(delay)
                continue
            except asyncio.CancelledError:
                # grpc.aio raises this when the call itself was cancelled.
                if self._cancelled:
                    raise StopAsyncIteration from None
                if self._async_invoker.closed:
                    # Not a cancellation of the reading task: said as the sync client does.
                    self._done = True
                    raise closed_error() from None
                raise
            if message is grpc.aio.EOF:
                self._done = True
                raise StopAsyncIteration
            return self._received(cast(RespT, message))

    def cancel(self) -> None:
        """Stop the call; iteration ends without an error."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()


class Stream(_StreamState[RespT], CancelOnExit, Iterator[RespT]):
    """The responses of a server-streaming call, read with `for`.

    Stop reading early with `cancel()`, or use the stream as a context manager
    to cancel it on exit. Errors are raised as ConvergioError subclasses while
    iterating.
    """

    def __init__(
        self,
        invoker: Invoker,
        method: Method[Any, RespT],
        request: Message,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        super().__init__(invoker, method, request, timeout, metadata)
        self._sync_invoker = invoker
        # Started now, as grpc does: the request is sent even before iterating.
        self._call: Any = self._start()

    def _start(self) -> Any:
        invoke = self._sync_invoker._pick(self._method, stream=True)
        return invoke(self._request, timeout=self._attempts.remaining(), metadata=self._metadata)

    def __iter__(self) -> Stream[RespT]:
        return self

    def __next__(self) -> RespT:
        while True:
            if self._done or self._cancelled:
                raise StopIteration
            if self._call is None:
                self._call = self._start()
            try:
                message = next(self._call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as exc:
                if self._cancelled:
                    raise StopIteration from None
                error = from_rpc_error(exc)
                delay = self._next_attempt(error)
                if delay is None:
                    self._done = True
                    raise error from exc
                self._call = None
                self._sync_invoker.sleep(delay)
                continue
            return self._received(cast(RespT, message))

    def cancel(self) -> None:
        """Stop the call; iteration ends without an error."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
