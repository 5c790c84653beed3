"""Server reflection that keeps the proto comments.

The stock servicer rebuilds each file with `CopyToProto`, which drops
`source_code_info`, so `grpcurl describe` would show no documentation. This one
answers with the file descriptors of the SDK's descriptor set (generated with
`--include_source_info`) and falls back to the stock behaviour for other files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

DESCRIPTOR_SET = "_descriptors.binpb"


def documented_files() -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with comments."""
    import convergio

    data = (Path(convergio.__file__).parent / DESCRIPTOR_SET).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {proto.name: proto.SerializeToString() for proto in files.file}


class DocumentedReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: list[str], files: dict[str, bytes]) -> None:
        super().__init__(service_names, pool=descriptor_pool.Default())
        self._files = files

    def _response(self, file_name: str, request: Any) -> Any:
        seen: dict[str, bytes] = {}
        pending = [file_name]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            serialized = self._files.get(name)
            if serialized is None:
                proto = descriptor_pb2.FileDescriptorProto()
                self._pool.FindFileByName(name).CopyToProto(proto)
                serialized = proto.SerializeToString()
            else:
                proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            seen[name] = serialized
            pending.extend(proto.dependency)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=list(seen.values())
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        if filename not in self._files:
            return super()._file_by_filename(request, filename)
        return self._response(filename, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            name = self._pool.FindFileContainingSymbol(fully_qualified_name).name
        except KeyError:
            name = self._method_file(fully_qualified_name)
            if name is None:
                return super()._file_containing_symbol(request, fully_qualified_name)
        return self._response(name, request)

    def _method_file(self, fully_qualified_name: str) -> str | None:
        """The file of a method (`grpcurl describe pkg.Service.Method`): the upb descriptor
        pool finds services, messages and fields by name, but not methods."""
        service_name, _, method = fully_qualified_name.rpartition(".")
        try:
            service = self._pool.FindServiceByName(service_name)
        except KeyError:
            return None
        return service.file.name if method in service.methods_by_name else None
