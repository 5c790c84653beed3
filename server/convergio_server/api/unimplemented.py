"""Fills the RPCs a release does not provide with UNIMPLEMENTED answers that say
what is missing, instead of the generated "Method not implemented!"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from convergio_server.domain.errors import NotImplementedYet


def _raiser(service: ServiceDescriptor, method: MethodDescriptor, missing: str) -> Any:
    message = f"{service.name}.{method.name} is not implemented: {missing}"

    if method.server_streaming:

        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            raise NotImplementedYet(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(self: Any, request: Any, context: Any) -> Any:
        raise NotImplementedYet(message)

    return unary


def complete(servicer_class: type, service: ServiceDescriptor, missing: str) -> type:
    """A subclass of `servicer_class` where every RPC it does not define raises
    NotImplementedYet naming `missing` (the capability this release lacks)."""
    namespace: dict[str, Any] = {}
    for method in service.methods:
        defined = any(
            method.name in vars(klass)
            for klass in servicer_class.__mro__
            if not klass.__module__.endswith("_pb2_grpc")
        )
        if not defined:
            namespace[method.name] = _raiser(service, method, missing)
    return type(servicer_class.__name__, (servicer_class,), namespace)
