"""What every call goes through, outermost first:

1. request id and access log (`RequestLog`): the client's `x-request-id` or a
   new one, returned in trailing metadata; one structured log line and the
   metrics per call;
2. error mapping and deadlines (`ErrorMapper`): domain and store errors become
   statuses with google.rpc details, anything unexpected INTERNAL; a unary call
   runs under the client's deadline;
3. authentication and roles (`Authenticator`);
4. request validation (`Validator`, declared rules per method).

They are stages of ONE pipeline (`CallPipeline`), and it is not a grpc.aio
interceptor: the server's handlers are wrapped once, when the services are added
(`PipelinedRegistry`). An interceptor runs on every call (a no-op one costs
grpc.aio about 7 us of CPU a call), and each layer adds a coroutine (or async
generator) frame per call and per streamed message.

Server-streaming behaviours must be async generators; client-streaming
handlers (reflection only) pass through untouched. A server stream opened with
an API key ends with UNAUTHENTICATED once that key is revoked (`_KeyGuard`):
at once when this process revoked it, else within `key_check_seconds`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from convergio_server.api import errors as api_errors
from convergio_server.api.access import AccessPolicy
from convergio_server.api.context import CallInfo, call_info_var, principal_var
from convergio_server.api.validation import Validator
from convergio_server.domain import errors as de
from convergio_server.domain import tracing
from convergio_server.domain.auth import KeyManager, Principal
from convergio_server.logs import request_id_var
from convergio_server.telemetry import RPC_ACTIVE_STREAMS, observe_call

log = logging.getLogger("convergio.access")
errlog = logging.getLogger("convergio.errors")

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]

# Services that answer without an API key: load balancers and grpcurl need them.
PUBLIC_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_MAX_REQUEST_ID = 128
# Request ids made here: 32 hex digits like a UUID's, unique without a call to the OS's
# random source per request (a uuid4 was a tenth of the pipeline's cost on a small call).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


_PROPAGATOR = TraceContextTextMapPropagator()
_WANTED = ("x-request-id", "authorization", "traceparent", "tracestate")


def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The metadata the stages read, in one pass over the call's metadata."""
    found: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        if k in _WANTED and k not in found:
            found[k] = v if isinstance(v, str) else v.decode()
    return found


def _call_span(method: str, request_id: str, headers: dict[str, str]) -> trace.Span:
    """The call's server span, a child of the caller's span when its metadata carries a
    W3C `traceparent`; made the current span of the call's task, so that the spans of what
    the call starts (a turn) are its children."""
    service, _, name = method.lstrip("/").partition("/")
    parent = _PROPAGATOR.extract(headers)
    span = tracing.tracer().start_span(
        f"{service}/{name}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "convergio.request_id": request_id,
        },
    )
    otel_context.attach(trace.set_span_in_context(span, parent))
    return span


def _end_call_span(info: CallInfo, streamed: int | None) -> None:
    span: trace.Span = info.span
    code = getattr(grpc.StatusCode, info.code, grpc.StatusCode.UNKNOWN)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    span.set_attribute("convergio.tenant", info.tenant_id)
    if streamed is not None:
        span.set_attribute("convergio.messages_sent", streamed)
    if info.code not in ("OK", "CANCELLED"):
        span.set_status(trace.Status(trace.StatusCode.ERROR, info.code))
    span.end()


class RequestLog:
    """Request id in, request id out, one access-log line and the metrics per call."""

    def begin(
        self, method: str, context: grpc.aio.ServicerContext, headers: dict[str, str]
    ) -> CallInfo:
        supplied = headers.get("x-request-id")
        request_id = (
            supplied[:_MAX_REQUEST_ID] if supplied and supplied.isprintable() else _new_request_id()
        )
        info = CallInfo(method=method, request_id=request_id)
        call_info_var.set(info)
        request_id_var.set(request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        if tracing.enabled() and not method.startswith(PUBLIC_SERVICES):  # not the probes
            info.span = _call_span(method, request_id, headers)
        return info

    def end(self, info: CallInfo, started: float, streamed: int | None = None) -> None:
        elapsed = time.perf_counter() - started
        observe_call(info.method, info.code, elapsed)
        if info.span is not None:
            _end_call_span(info, streamed)
        level = logging.INFO if info.code in ("OK", "CANCELLED") else logging.WARNING
        if info.method.startswith("/grpc.health.v1.Health/"):
            level = logging.DEBUG
        if not log.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "method": info.method,
            "code": info.code,
            "tenant": info.tenant_id,
            "principal": info.principal,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if streamed is not None:
            extra["messages"] = streamed
        extra.update(info.extra)
        log.log(level, "call", extra=extra)


class ErrorMapper:
    """Domain and store errors to statuses with google.rpc details; anything
    unexpected to INTERNAL, logged with its traceback."""

    async def abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        info = call_info_var.get()
        request_id = info.request_id if info else _new_request_id()
        error = api_errors.translate(exc)
        if error is None:
            errlog.exception("unexpected error", exc_info=exc)
            error = de.DomainError(
                f"internal error; quote request id {request_id} when reporting it",
                reason="INTERNAL",
            )
        elif isinstance(error, de.Unavailable):
            errlog.warning("dependency unavailable: %s (%s)", error.message, type(exc).__name__)
        code, message, trailing = api_errors.rich_status(error, request_id)
        if info is not None:
            info.code = code.name
        await context.abort(code, message, trailing)

    async def deadline_passed(self, context: grpc.aio.ServicerContext) -> None:
        info = call_info_var.get()
        if info is not None:
            info.code = "DEADLINE_EXCEEDED"
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed before it finished"
        )


class Authenticator:
    """`authorization: Bearer <key>` → principal (tenant, name, roles), then the
    role check for the method. Health and reflection are public."""

    def __init__(
        self,
        keys: KeyManager,
        policy: AccessPolicy,
        anonymous: dict[str, Principal] | None = None,
    ) -> None:
        self._keys = keys
        self.revocations = keys.revocations
        self._policy = policy
        # Method prefix -> principal for calls without an API key. Only flagd's evaluation
        # service uses it: OpenFeature's flagd provider in RPC mode cannot send metadata, so
        # such calls read one configured tenant (setting `flagd_tenant`) as a member.
        self._anonymous = anonymous or {}

    def applies_to(self, method: str) -> bool:
        return not method.startswith(PUBLIC_SERVICES)

    async def authenticate(self, method: str, headers: dict[str, str]) -> None:
        header = headers.get("authorization")
        if not header:
            for prefix, anonymous in self._anonymous.items():
                if method.startswith(prefix):
                    self._admit(method, anonymous)
                    return
            raise de.Unauthenticated(
                "missing API key: send the metadata `authorization: Bearer <key>`"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise de.Unauthenticated("the authorization metadata must be `Bearer <key>`")
        self._admit(method, await self._keys.authenticate(token.strip()))

    def _admit(self, method: str, principal: Principal) -> None:
        info = call_info_var.get()
        if info is not None:
            info.tenant_id, info.principal = principal.tenant_id, principal.name
        self._policy.check(method, principal)
        principal_var.set(principal)


# What runs before the handler: authentication and validation (None: nothing to run).
Before = Callable[[Message, dict[str, str]], Awaitable[None]] | None


class _KeyGuard:
    """Ends a server stream whose API key is revoked while it is open.

    Streams can wait for a long time between messages (a watch on flags that do not
    change), so waiting for the next message to notice is not enough: the call's task is
    cancelled while it waits inside the handler, and the cancellation is turned into
    UNAUTHENTICATED. While the task is elsewhere (gRPC sending a message) only a mark is
    set, read before the handler is asked for the next message."""

    __slots__ = ("_cancelled", "_task", "_waiting", "key_id", "revoked")

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.revoked = False
        self._task = asyncio.current_task()
        self._waiting = False
        self._cancelled = False

    def __call__(self) -> None:
        """The key was revoked (called from another task)."""
        self.revoked = True
        task = self._task
        if self._waiting and task is not None and task is not asyncio.current_task():
            self._cancelled = True
            task.cancel()

    def error(self) -> de.Unauthenticated:
        return de.Unauthenticated(
            "this API key has been revoked; the stream has ended",
            metadata={"key_id": self.key_id},
        )

    async def next(self, responses: AsyncIterator[Any]) -> Any:
        """The handler's next message; StopAsyncIteration at its end."""
        if self.revoked:
            raise self.error()
        self._waiting = True
        try:
            response = await anext(responses)
        except BaseException:
            if self._cancelled:
                self._settle()
            raise
        finally:
            self._waiting = False
        if self._cancelled:  # the handler swallowed the cancellation
            self._settle()
        if self.revoked:
            raise self.error()
        return response

    def _settle(self) -> None:
        """Take back the cancellation this guard made; raise what ends the stream."""
        self._cancelled = False
        task = self._task
        # Cancelled by the client as well (or by the server stopping): that one wins.
        if task is None or task.uncancel() > 0:
            raise asyncio.CancelledError
        raise self.error()


class _Undecodable:
    """A request whose bytes are not its message: answered INVALID_ARGUMENT by `check`, with
    a request id and an access-log line, instead of gRPC's traceback and UNKNOWN."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, whatever the version
            return _Undecodable(str(exc) or type(exc).__name__)

    return run


class CallPipeline:
    """Runs the stages above around every unary and server-streaming call of the
    handlers it wraps."""

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        validator: Validator | None = None,
        max_response_bytes: int = 0,
    ) -> None:
        self._log = RequestLog()
        # gRPC fails a larger answer after the handler returned, where the access log and
        # the error mapping no longer see it: checked here instead (0 = not checked).
        self._max_response_bytes = max_response_bytes
        self._errors = ErrorMapper()
        self._auth = authenticator
        self._validator = validator
        self._revocations = authenticator.revocations if authenticator is not None else None
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def handler(
        self, method: str, handler: grpc.RpcMethodHandler | None
    ) -> grpc.RpcMethodHandler | None:
        """`handler` of `method`, wrapped (built once per method)."""
        if handler is None or handler.request_streaming:
            return handler
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        authenticate = (
            self._auth.authenticate if self._auth and self._auth.applies_to(method) else None
        )
        validate = (
            self._validator.validate
            if self._validator is not None and self._validator.has_rules(method)
            else None
        )

        async def check(request: Message | _Undecodable, headers: dict[str, str]) -> None:
            if authenticate is not None:
                await authenticate(method, headers)
            if isinstance(request, _Undecodable):
                raise de.InvalidArgument(
                    f"the request is not a valid {method.rsplit('/', 1)[-1]} message: "
                    f"{request.detail}"[:300]
                )
            if validate is not None:
                validate(method, request)

        # Health and reflection need neither: no coroutine per call for them.
        before = check if authenticate is not None or validate is not None else None
        deserialize = (
            _tolerant(handler.request_deserializer)
            if before is not None
            else handler.request_deserializer
        )

        if not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, before),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            self._stream(
                method, _as_generator(handler.unary_stream), before, authenticate is not None
            ),
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )

    def _unary(
        self,
        method: str,
        fn: Unary,
        before: Before,
    ) -> Unary:
        request_log, errors = self._log, self._errors
        limit = self._max_response_bytes

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            headers = _headers(context)
            info, started = request_log.begin(method, context, headers), time.perf_counter()
            try:
                remaining = context.time_remaining()
                try:
                    if before is not None:
                        await before(request, headers)
                    if remaining is None:
                        response = await fn(request, context)
                    else:
                        async with asyncio.timeout(max(remaining, 0.0)):
                            response = await fn(request, context)
                    if limit and isinstance(response, Message) and response.ByteSize() > limit:
                        raise de.QuotaExceeded(
                            f"the answer is {response.ByteSize()} bytes, over the server's "
                            f"limit of {limit} (max_message_bytes); ask for less, e.g. a "
                            "smaller page",
                            reason="RESPONSE_TOO_LARGE",
                        )
                    return response
                except grpc.aio.AbortError:
                    raise
                except TimeoutError as exc:
                    left = context.time_remaining()
                    if left is not None and left <= 0:
                        await errors.deadline_passed(context)
                    await errors.abort(context, exc)
                except Exception as exc:
                    await errors.abort(context, exc)
            except asyncio.CancelledError:
                info.code = "CANCELLED"
                raise
            finally:
                request_log.end(info, started)

        return behaviour

    def _stream(
        self,
        method: str,
        fn: Streaming,
        before: Before,
        authenticated: bool = False,
    ) -> Streaming:
        request_log, errors = self._log, self._errors
        active = RPC_ACTIVE_STREAMS.labels(method)
        revocations = self._revocations if authenticated else None

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            headers = _headers(context)
            info, started = request_log.begin(method, context, headers), time.perf_counter()
            sent = 0
            active.inc()
            try:
                try:
                    if before is not None:
                        await before(request, headers)
                    principal = principal_var.get() if revocations is not None else None
                    if revocations is None or principal is None or not principal.key_id:
                        async for response in fn(request, context):
                            sent += 1
                            yield response
                    else:
                        guard = _KeyGuard(principal.key_id)
                        responses = fn(request, context)
                        with revocations.watch(principal.key_id, guard):
                            try:
                                while True:
                                    try:
                                        response = await guard.next(responses)
                                    except StopAsyncIteration:
                                        break
                                    sent += 1
                                    yield response
                            finally:
                                await responses.aclose()  # type: ignore[attr-defined]
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await errors.abort(context, exc)
            except (asyncio.CancelledError, GeneratorExit):
                info.code = "CANCELLED"
                raise
            finally:
                active.dec()
                request_log.end(info, started, sent)

        return behaviour


def _as_generator(original: Any) -> Streaming:
    """Server-streaming behaviours as async generators; a coroutine that writes with
    `context.write` (the health service's Watch) is adapted."""
    if inspect.isasyncgenfunction(original):
        stream: Streaming = original
        return stream

    async def adapted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await original(request, context)
        return
        yield  # pragma: no cover - makes this an async generator

    return adapted


class _Methods(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Handlers by full method name: one dictionary lookup per call, whatever the number
    of services (grpc.aio asks each generic handler in turn, and checks registered methods
    one by one)."""

    def __init__(self, methods: dict[str, grpc.RpcMethodHandler]) -> None:
        self._methods = methods

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._methods.get(handler_call_details.method)


class _PipelinedHandlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, inner: grpc.GenericRpcHandler, pipeline: CallPipeline) -> None:
        self._inner = inner
        self._pipeline = pipeline

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method
        return self._pipeline.handler(method, self._inner.service(handler_call_details))


class PipelinedRegistry:
    """Stands for the server where services are added (`register_services`, the generated
    `add_*_to_server` functions): every handler added through it is wrapped by the pipeline.
    Methods added by name go into one dictionary that the server asks first; a generic
    handler, which cannot be listed, is asked after it."""

    def __init__(self, server: grpc.aio.Server, pipeline: CallPipeline) -> None:
        self._server = server
        self._pipeline = pipeline
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        server.add_generic_rpc_handlers((_Methods(self._methods),))

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_PipelinedHandlers(h, self._pipeline) for h in handlers)
        )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            wrapped = self._pipeline.handler(method, handler)
            if wrapped is not None:
                self._methods[method] = wrapped
