"""flagd's evaluation protocol (flagd.evaluation.v1.Service) over the same flags, so that
OpenFeature's flagd provider in RPC mode can use Convergio as its flag backend.

Convergio flags are boolean with an optional string variant: ResolveBoolean gives the
value, ResolveString the variant name; ResolveInt, ResolveFloat and ResolveObject answer
INVALID_ARGUMENT (the provider reports TYPE_MISMATCH), an unknown flag NOT_FOUND (the
provider reports FLAG_NOT_FOUND and the caller gets its default), as flagd does. The
evaluation context's `targetingKey` is the targeting key and its `groups` attribute (a list
of strings, or one string) the caller's groups.

Which tenant: the caller's API key when the call carries one; the flagd provider in RPC mode
cannot send one, so such calls read the tenant the `flagd_tenant` setting names (see
`AuthInterceptor`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from flagd.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from google.protobuf.struct_pb2 import Struct

from convergio_server.api.context import current_principal
from convergio_server.api.services import EXTRA_SERVICES
from convergio_server.domain.errors import InvalidArgument, NotFound, Unavailable, server_stopping
from convergio_server.domain.flags.model import ChangeKind, ErrorCode, EvalContext, Evaluation
from convergio_server.domain.flags.service import FlagManager

SERVICE_NAME = "flagd.evaluation.v1.Service"


def eval_context(context: Struct) -> EvalContext:
    fields = context.fields
    key_value = fields.get("targetingKey")
    targeting_key = key_value.string_value if key_value is not None else ""
    groups: frozenset[str] = frozenset()
    groups_value = fields.get("groups")
    if groups_value is not None:
        kind = groups_value.WhichOneof("kind")
        if kind == "list_value":
            groups = frozenset(
                v.string_value for v in groups_value.list_value.values if v.string_value
            )
        elif kind == "string_value" and groups_value.string_value:
            groups = frozenset({groups_value.string_value})
    return EvalContext(targeting_key, groups)


def _checked(result: Evaluation) -> Evaluation:
    if result.error_code is ErrorCode.FLAG_NOT_FOUND:
        raise NotFound(f"FLAG_NOT_FOUND: {result.error_message}", reason="FLAG_NOT_FOUND")
    if result.error_code is ErrorCode.PROVIDER_NOT_READY:
        raise Unavailable(f"PROVIDER_NOT_READY: {result.error_message}")
    return result


def _type_mismatch(key: str, wanted: str) -> InvalidArgument:
    return InvalidArgument(
        f"TYPE_MISMATCH: flag {key!r} is a boolean flag with string variants, not {wanted}",
        reason="TYPE_MISMATCH",
    )


class FlagdServicer(evaluation_pb2_grpc.ServiceServicer):
    def __init__(self, manager: FlagManager) -> None:
        self._flags = manager

    async def _evaluate(self, key: str, context: Struct) -> Evaluation:
        tenant = current_principal().tenant_id
        if not self._flags.cache.has_tenant(tenant):  # first call of a new tenant
            await self._flags.ensure_tenant(tenant)
        return _checked(self._flags.evaluate(tenant, key, eval_context(context)))

    async def ResolveBoolean(
        self, request: evaluation_pb2.ResolveBooleanRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveBooleanResponse:
        result = await self._evaluate(request.flag_key, request.context)
        return evaluation_pb2.ResolveBooleanResponse(
            value=result.value, reason=result.reason.value, variant=result.variant
        )

    async def ResolveString(
        self, request: evaluation_pb2.ResolveStringRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveStringResponse:
        result = await self._evaluate(request.flag_key, request.context)
        return evaluation_pb2.ResolveStringResponse(
            value=result.variant, reason=result.reason.value, variant=result.variant
        )

    async def ResolveInt(
        self, request: evaluation_pb2.ResolveIntRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveIntResponse:
        await self._evaluate(request.flag_key, request.context)
        raise _type_mismatch(request.flag_key, "an integer")

    async def ResolveFloat(
        self, request: evaluation_pb2.ResolveFloatRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveFloatResponse:
        await self._evaluate(request.flag_key, request.context)
        raise _type_mismatch(request.flag_key, "a float")

    async def ResolveObject(
        self, request: evaluation_pb2.ResolveObjectRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveObjectResponse:
        await self._evaluate(request.flag_key, request.context)
        raise _type_mismatch(request.flag_key, "an object")

    async def ResolveAll(
        self, request: evaluation_pb2.ResolveAllRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.ResolveAllResponse:
        tenant = current_principal().tenant_id
        await self._flags.ensure_tenant(tenant)
        response = evaluation_pb2.ResolveAllResponse()
        for result in self._flags.evaluate_all(tenant, eval_context(request.context)):
            if result.error_code is not None:
                continue
            entry = response.flags[result.key]
            entry.bool_value = result.value
            entry.reason = result.reason.value
            entry.variant = result.variant
        return response

    async def EventStream(
        self, request: evaluation_pb2.EventStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[evaluation_pb2.EventStreamResponse]:
        tenant = current_principal().tenant_id
        await self._flags.ensure_tenant(tenant)
        with self._flags.cache.watch(tenant) as watcher:
            yield evaluation_pb2.EventStreamResponse(type="provider_ready")
            while True:
                change = await watcher.queue.get()
                if change is None:
                    raise server_stopping()
                changed: dict[str, Any] = {
                    change.flag.key: {
                        "type": "delete" if change.kind is ChangeKind.DELETED else "update",
                        "source": "convergio",
                        "flagKey": change.flag.key,
                    }
                }
                while not watcher.queue.empty():  # coalesce a burst (e.g. disable-all)
                    more = watcher.queue.get_nowait()
                    if more is None:
                        watcher.queue.put_nowait(None)  # after this change is sent
                        break
                    changed[more.flag.key] = {
                        "type": "delete" if more.kind is ChangeKind.DELETED else "update",
                        "source": "convergio",
                        "flagKey": more.flag.key,
                    }
                data = Struct()
                data.update({"flags": changed})
                yield evaluation_pb2.EventStreamResponse(type="configuration_change", data=data)
                if watcher.lagged:
                    raise Unavailable("this event stream fell too far behind; reconnect")


EXTRA_SERVICES[SERVICE_NAME] = (
    lambda ctx: FlagdServicer(ctx.components["flag_manager"]),
    evaluation_pb2_grpc.add_ServiceServicer_to_server,
)
