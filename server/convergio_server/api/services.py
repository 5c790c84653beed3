"""Which Convergio services this process serves, and with what.

Each capability plugs its servicer in through `FACTORIES` (full service name ->
factory taking the ServiceContext). RPCs a servicer does not define answer
UNIMPLEMENTED with a message naming the missing capability.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from convergio_server.api.idempotency import ExpiredRequestIds
from convergio_server.api.unimplemented import complete
from convergio_server.config import Settings
from convergio_server.domain.auth import KeyManager
from convergio_server.infrastructure import Infrastructure
from convergio_server.storage.idempotency import PgIdempotencyStore
from convergio_server.storage.redis import Keys


@dataclass
class ServiceContext:
    """What servicers are built from: settings, stores and shared domain services.
    Capabilities register background work to stop in `closers` (run in reverse order)."""

    settings: Settings
    infra: Infrastructure
    keys: KeyManager
    idempotency: PgIdempotencyStore = field(init=False)
    expired_request_ids: ExpiredRequestIds = field(init=False)
    redis_keys: Keys = field(init=False)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Work to end while the calls still open can carry its last messages (running turns end
    # with their Error and TurnCompleted on their streams), before gRPC cancels those calls
    # at the end of the grace period.
    stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Told at once when the server begins to stop (before the grace period): work that must
    # not begin any more (a queued turn) is left to other processes.
    drainers: list[Callable[[], None]] = field(default_factory=list)
    # Async start-up work (loading caches, importing files), run in order before the server
    # accepts calls.
    starters: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Services of the API this release does not provide (every call is UNIMPLEMENTED).
    unimplemented: list[str] = field(default_factory=list)
    # Shared domain services, by name, so one capability can use another's.
    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.idempotency = PgIdempotencyStore(self.infra.pool)
        # Every process cleans up: there is no leader, and a run finding nothing costs one
        # index probe.
        self.expired_request_ids = ExpiredRequestIds(self.idempotency)
        self.starters.append(self.expired_request_ids.start)
        self.closers.append(self.expired_request_ids.stop)
        self.redis_keys = Keys(self.settings.redis_prefix)

    def drain(self) -> None:
        for drainer in self.drainers:
            drainer()

    async def stop_work(self) -> None:
        for stopper in reversed(self.stoppers):
            await stopper()

    async def close(self) -> None:
        for closer in reversed(self.closers):
            await closer()


Factory = Callable[[ServiceContext], Any]


class HandlerRegistry(Protocol):
    """Where services are added: the server, or what wraps its handlers on the way in
    (`api.pipeline.PipelinedRegistry`)."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None: ...

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None: ...


# Filled by capability modules (see `_load_factories`).
FACTORIES: dict[str, Factory] = {}
# Hooks that put shared domain services into `ctx.components` (for example
# "flags", "guards"). They all run before any servicer factory, so a servicer
# may look its collaborators up at construction time.
COMPONENT_SETUPS: list[Callable[[ServiceContext], None]] = []


def _load_factories() -> None:
    """Import the modules that provide servicers; each registers itself in FACTORIES."""
    import convergio_server.api.servicers  # noqa: F401


def register_services(server: HandlerRegistry, ctx: ServiceContext) -> list[str]:
    """Add every Convergio service to `server`; returns their full names."""
    from convergio.approval.v1 import approval_pb2, approval_pb2_grpc
    from convergio.conversation.v1 import conversation_pb2, conversation_pb2_grpc
    from convergio.cost.v1 import cost_pb2, cost_pb2_grpc
    from convergio.flag.v1 import flag_pb2, flag_pb2_grpc
    from convergio.workflow.v1 import workflow_pb2, workflow_pb2_grpc

    _load_factories()
    for setup in COMPONENT_SETUPS:
        setup(ctx)
    specs: list[tuple[Any, Any, Any, str]] = [
        (
            conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"],
            conversation_pb2_grpc.ConversationServiceServicer,
            conversation_pb2_grpc.add_ConversationServiceServicer_to_server,
            "multi-agent conversations are not available in this release",
        ),
        (
            workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"],
            workflow_pb2_grpc.WorkflowServiceServicer,
            workflow_pb2_grpc.add_WorkflowServiceServicer_to_server,
            "workflow executions are not available in this release",
        ),
        (
            approval_pb2.DESCRIPTOR.services_by_name["ApprovalService"],
            approval_pb2_grpc.ApprovalServiceServicer,
            approval_pb2_grpc.add_ApprovalServiceServicer_to_server,
            "human approvals are not available in this release",
        ),
        (
            flag_pb2.DESCRIPTOR.services_by_name["FlagService"],
            flag_pb2_grpc.FlagServiceServicer,
            flag_pb2_grpc.add_FlagServiceServicer_to_server,
            "feature flags are not available in this release",
        ),
        (
            cost_pb2.DESCRIPTOR.services_by_name["CostService"],
            cost_pb2_grpc.CostServiceServicer,
            cost_pb2_grpc.add_CostServiceServicer_to_server,
            "cost tracking, budgets and rate limits are not available in this release",
        ),
    ]
    names: list[str] = []
    for descriptor, servicer_class, _add, missing in specs:
        factory = FACTORIES.get(descriptor.full_name)
        if factory is None:
            ctx.unimplemented.append(descriptor.full_name)
            servicer = complete(servicer_class, descriptor, missing)()
        else:
            servicer = factory(ctx)
            servicer.__class__ = complete(type(servicer), descriptor, missing)
        add_service(server, descriptor, servicer)
        names.append(descriptor.full_name)
    for extra_name, (extra_factory, extra_add) in EXTRA_SERVICES.items():
        extra_add(extra_factory(ctx), server)
        names.append(extra_name)
    return names


def add_service(server: HandlerRegistry, service: ServiceDescriptor, servicer: Any) -> None:
    """Register `servicer` for `service`, its methods by name. (On a bare grpc.aio server
    that is costly: it checks registered methods one by one on every call, about 40 us of
    CPU per call with the whole API; `PipelinedRegistry` keeps them in one dictionary.)"""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_type = GetMessageClass(method.input_type)
        response_type = GetMessageClass(method.output_type)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_registered_method_handlers(service.full_name, handlers)


# Services outside the convergio.* API (for example flagd's evaluation protocol):
# full name -> (factory, add_to_server function).
EXTRA_SERVICES: dict[str, tuple[Factory, Callable[[Any, HandlerRegistry], None]]] = {}
