"""Generate the SDK's typed service facades (`sdk/convergio/_services.py`) from
the descriptor set that `tools/gen.py` writes.

For every service of a `convergio.*` package the module gets:

* `<Service>Methods`: one `_runtime.Method` per RPC (full name, message
  classes, and whether its `idempotency_level` allows retries);
* `Async<Service>` and `<Service>`: one snake_case method per RPC that takes
  either the request message or its fields as typed keyword arguments, plus
  `timeout` and `metadata`, and returns the response (a stream for server
  streams); the docstring is the RPC's comment in the proto;
* `AsyncServices` / `Services`: the facades as client attributes
  (`conversations`, `workflows`, ...), inherited by the clients.

The output is formatted with ruff so that the checked-in file passes
`ruff format --check` and the codegen test can compare it byte for byte.
"""

from __future__ import annotations

import keyword
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
# Where the module is checked in: ruff resolves its settings (and which
# imports are first-party) from this path, wherever the output goes.
CHECKED_IN_PATH = ROOT / "sdk" / "convergio" / "_services.py"

FDP = descriptor_pb2.FieldDescriptorProto
MethodOptions = descriptor_pb2.MethodOptions
RETRYABLE_LEVELS = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)
# Keyword names the facade methods use themselves; a request field with one
# of these names gets a trailing underscore.
RESERVED_NAMES = frozenset({"self", "request", "timeout", "metadata"})

_SCALARS = {
    FDP.TYPE_DOUBLE: "float",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int",
    FDP.TYPE_UINT64: "int",
    FDP.TYPE_INT32: "int",
    FDP.TYPE_FIXED64: "int",
    FDP.TYPE_FIXED32: "int",
    FDP.TYPE_UINT32: "int",
    FDP.TYPE_SFIXED32: "int",
    FDP.TYPE_SFIXED64: "int",
    FDP.TYPE_SINT32: "int",
    FDP.TYPE_SINT64: "int",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "str",
    FDP.TYPE_BYTES: "bytes",
}
# Singular well-known-type fields also take the Python value protobuf converts.
_NATIVE_ALTERNATIVES = {
    ".google.protobuf.Timestamp": "datetime.datetime",
    ".google.protobuf.Duration": "datetime.timedelta",
    ".google.protobuf.Struct": "Mapping[str, object]",
}


@dataclass(frozen=True)
class _Type:
    """A message or enum: the proto file declaring it and its Python path in the module."""

    file: str
    path: str  # e.g. "Outer.Inner"
    message: descriptor_pb2.DescriptorProto | None  # None for enums


@dataclass
class _Module:
    """The generated module's imports and the type expressions that use them."""

    types: dict[str, _Type]
    aliases: dict[str, str]  # proto file -> import alias
    used_files: set[str] = field(default_factory=set)
    uses_datetime: bool = False
    uses_mapping: bool = False

    def ref(self, type_name: str) -> str:
        found = self.types[type_name]
        self.used_files.add(found.file)
        return f"{self.aliases[found.file]}.{found.path}"

    def annotation(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        """The Python type of a keyword argument for field `f`."""
        if f.label == FDP.LABEL_REPEATED and f.type == FDP.TYPE_MESSAGE:
            entry = self.types[f.type_name].message
            if entry is not None and entry.options.map_entry:
                key, value = entry.field[0], entry.field[1]
                self.uses_mapping = True
                return f"Mapping[{self._single(key)}, {self._single(value)}]"
        single = self._single(f)
        if f.label == FDP.LABEL_REPEATED:
            return f"Sequence[{single}]"
        native = _NATIVE_ALTERNATIVES.get(f.type_name) if f.type == FDP.TYPE_MESSAGE else None
        if native is not None:
            self.uses_datetime |= native.startswith("datetime.")
            self.uses_mapping |= native.startswith("Mapping[")
            return f"{single} | {native}"
        return single

    def _single(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type == FDP.TYPE_ENUM:
            return f"{self.ref(f.type_name)}.ValueType"
        if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
            return self.ref(f.type_name)
        return _SCALARS[f.type]


@dataclass(frozen=True)
class _Rpc:
    name: str
    snake: str
    full_name: str
    request: str
    response: str
    request_message: descriptor_pb2.DescriptorProto
    streaming: bool
    idempotent: bool
    doc: str


@dataclass(frozen=True)
class _Service:
    full_name: str
    class_name: str  # e.g. "ConversationService"
    attribute: str  # e.g. "conversations"
    doc: str
    rpcs: list[_Rpc]


def write_facade(descriptor_set_path: Path, output_path: Path) -> None:
    """Write the facade module for the descriptor set at `descriptor_set_path`."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(
        Path(descriptor_set_path).read_bytes()
    )
    output_path.write_text(_format(render(descriptor_set)))


def render(descriptor_set: descriptor_pb2.FileDescriptorSet) -> str:
    """The facade module's source, before formatting."""
    files = sorted(descriptor_set.file, key=lambda f: f.name)
    module = _Module(types=dict(_index_types(files)), aliases=_aliases(files))
    services = [service for f in files for service in _services(f, module)]
    for attribute in ("class_name", "attribute"):
        values = [getattr(s, attribute) for s in services]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise SystemExit(f"gen_facade: two services would both be named {duplicates}")

    body: list[str] = []
    for service in services:
        body += _methods_class(service)
    for service in services:
        body += _facade(service, module, asynchronous=True)
        body += _facade(service, module, asynchronous=False)
    body += _services_class(services, asynchronous=True)
    body += _services_class(services, asynchronous=False)

    exported = [f"{s.class_name}Methods" for s in services]
    exported += [f"Async{s.class_name}" for s in services] + [s.class_name for s in services]
    exported += ["AsyncServices", "Services"]
    head = [
        '"""Typed facades of the Convergio services. Generated from proto/ by `make gen`',
        "(tools/gen_facade.py); do not edit.",
        "",
        "Every method takes either the request message or its fields as keyword",
        "arguments (None leaves a field unset; a field named like a keyword argument of",
        "the method itself gets a trailing underscore), plus `timeout` (seconds) and",
        "`metadata`. Errors are raised as `convergio.errors.ConvergioError` subclasses.",
        '"""',
        "",
        "# The deadline is a per-call argument, as in grpc itself.",
        "# ruff: noqa: ASYNC109",
        "",
        "from __future__ import annotations",
        "",
    ]
    if module.uses_datetime:
        head.append("import datetime")
    abc = "Mapping, Sequence" if module.uses_mapping else "Sequence"
    head += [f"from collections.abc import {abc}", ""]
    for name in sorted(module.used_files, key=_python_module):
        package, _, stem = _python_module(name).rpartition(".")
        head.append(f"from {package} import {stem} as {module.aliases[name]}")
    head += ["from convergio import _runtime", ""]
    head.append("__all__ = [" + ", ".join(f'"{name}"' for name in sorted(exported)) + "]")
    return "\n".join(head + body) + "\n"


def _index_types(files: list[descriptor_pb2.FileDescriptorProto]) -> Iterator[tuple[str, _Type]]:
    def walk(
        file: str, prefix: str, path: str, message: descriptor_pb2.DescriptorProto
    ) -> Iterator[tuple[str, _Type]]:
        yield f"{prefix}.{message.name}", _Type(file, path, message)
        for nested in message.nested_type:
            yield from walk(file, f"{prefix}.{message.name}", f"{path}.{nested.name}", nested)
        for enum in message.enum_type:
            yield f"{prefix}.{message.name}.{enum.name}", _Type(file, f"{path}.{enum.name}", None)

    for f in files:
        prefix = f".{f.package}" if f.package else ""
        for message in f.message_type:
            yield from walk(f.name, prefix, message.name, message)
        for enum in f.enum_type:
            yield f"{prefix}.{enum.name}", _Type(f.name, enum.name, None)


def _python_module(proto_file: str) -> str:
    """convergio/approval/v1/approval.proto -> convergio.approval.v1.approval_pb2"""
    return proto_file.removesuffix(".proto").replace("/", ".").replace("-", "_") + "_pb2"


def _aliases(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    # `_approval_pb2` reads best; files that share a stem get their full path.
    stems: dict[str, list[str]] = {}
    for f in files:
        stems.setdefault(_python_module(f.name).rpartition(".")[2], []).append(f.name)
    aliases: dict[str, str] = {}
    for stem, names in stems.items():
        for name in names:
            full = _python_module(name).replace(".", "_")
            aliases[name] = f"_{stem}" if len(names) == 1 else f"_{full}"
    return aliases


def _services(f: descriptor_pb2.FileDescriptorProto, module: _Module) -> Iterator[_Service]:
    comments = {
        tuple(location.path): location.leading_comments for location in f.source_code_info.location
    }
    for s_index, service in enumerate(f.service):
        # flagd's protocol is served for OpenFeature's providers, which ship their own
        # stubs of it; generating it here too would register its symbols twice in a
        # process that uses both, so the SDK leaves it out.
        if f.package.startswith("convergio."):
            class_name = service.name
            attribute = _snake(service.name.removesuffix("Service"))
            attribute += "" if attribute.endswith("s") else "s"
        else:
            continue
        rpcs = []
        for m_index, method in enumerate(service.method):
            if method.client_streaming:
                raise SystemExit(
                    f"gen_facade: {f.package}.{service.name}.{method.name} streams from the "
                    "client; the facade supports unary and server-streaming RPCs only"
                )
            request = module.types[method.input_type]
            assert request.message is not None, method.input_type
            rpcs.append(
                _Rpc(
                    name=method.name,
                    snake=_snake(method.name),
                    full_name=f"/{f.package}.{service.name}/{method.name}",
                    request=module.ref(method.input_type),
                    response=module.ref(method.output_type),
                    request_message=request.message,
                    streaming=method.server_streaming,
                    idempotent=method.options.idempotency_level in RETRYABLE_LEVELS,
                    doc=_clean(comments.get((6, s_index, 2, m_index), ""))
                    or f"Calls {f.package}.{service.name}.{method.name}.",
                )
            )
        yield _Service(
            full_name=f"{f.package}.{service.name}",
            class_name=class_name,
            attribute=attribute,
            doc=_clean(comments.get((6, s_index), "")) or f"{f.package}.{service.name}.",
            rpcs=rpcs,
        )


def _methods_class(service: _Service) -> list[str]:
    lines = [
        "",
        "",
        f"class {service.class_name}Methods:",
        _docstring(f"The RPCs of {service.full_name}.", 4),
    ]
    for rpc in service.rpcs:
        lines += [
            "",
            f"    {_constant(rpc.name)} = _runtime.Method(",
            f'        "{rpc.full_name}", {rpc.request}, {rpc.response},',
            f"        idempotent={rpc.idempotent},",
            "    )",
        ]
    return lines


def _facade(service: _Service, module: _Module, *, asynchronous: bool) -> list[str]:
    prefix = "Async" if asynchronous else ""
    invoker = "_runtime.AsyncInvoker" if asynchronous else "_runtime.Invoker"
    lines = [
        "",
        "",
        f"class {prefix}{service.class_name}:",
        _docstring(service.doc, 4),
        "",
        f"    def __init__(self, invoker: {invoker}) -> None:",
        "        self._invoker = invoker",
    ]
    for rpc in service.rpcs:
        params: list[str] = []
        fields: list[str] = []
        taken: set[str] = set()
        for f in rpc.request_message.field:
            name = f.name
            if name in RESERVED_NAMES or keyword.iskeyword(name):
                name += "_"
            if name in taken:
                raise SystemExit(f"gen_facade: {rpc.full_name}: two fields map to `{name}`")
            taken.add(name)
            params.append(f"{name}: {module.annotation(f)} | None = None")
            fields.append(f'"{f.name}": {name}')
        if rpc.streaming:
            stream = "_runtime.AsyncStream" if asynchronous else "_runtime.Stream"
            returns, call, await_ = f"{stream}[{rpc.response}]", "stream", ""
        else:
            returns, call = rpc.response, "unary"
            await_ = "await " if asynchronous else ""
        define = "async def" if asynchronous and not rpc.streaming else "def"
        signature = [
            "self",
            f"request: {rpc.request} | None = None",
            "/",
            "*",
            *params,
            "timeout: float | None = None",
            "metadata: Sequence[tuple[str, str]] | None = None",
        ]
        lines += [
            "",
            f"    {define} {rpc.snake}({', '.join(signature)}) -> {returns}:",
            _docstring(rpc.doc, 8),
            f"        return {await_}self._invoker.{call}(",
            f"            {service.class_name}Methods.{_constant(rpc.name)},",
            f"            _runtime.build_request({rpc.request}, request, {{{', '.join(fields)}}}),",
            "            timeout=timeout,",
            "            metadata=metadata,",
            "        )",
        ]
    return lines


def _services_class(services: list[_Service], *, asynchronous: bool) -> list[str]:
    prefix = "Async" if asynchronous else ""
    invoker = "_runtime.AsyncInvoker" if asynchronous else "_runtime.Invoker"
    kind = "asynchronous" if asynchronous else "synchronous"
    lines = [
        "",
        "",
        f"class {prefix}Services:",
        _docstring(f"The service facades of the {kind} client, one attribute per service.", 4),
        "",
        f"    def __init__(self, invoker: {invoker}) -> None:",
    ]
    lines += [f"        self.{s.attribute} = {prefix}{s.class_name}(invoker)" for s in services]
    if not services:
        lines.append("        pass")
    return lines


def _snake(name: str) -> str:
    """CreateConversation -> create_conversation, GetRAGContext -> get_rag_context."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _constant(name: str) -> str:
    return _snake(name).upper()


def _clean(comment: str) -> str:
    """A proto comment as docstring text: without the space after `//`, dedented."""
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(line.rstrip() for line in lines)


def _docstring(text: str, indent: int) -> str:
    pad = " " * indent
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    lines = text.splitlines()
    if len(lines) == 1:
        return f'{pad}"""{text}"""'
    body = "\n".join(f"{pad}{line}" if line else "" for line in lines[1:])
    return f'{pad}"""{lines[0]}\n{body}\n{pad}"""'


def _format(source: str) -> str:
    """Sort the imports and format the module the way `make lint` checks it."""
    for command in (["check", "--fix", "--select", "I", "--quiet"], ["format", "--quiet"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                *command,
                "--config",
                str(ROOT / "pyproject.toml"),
                "--stdin-filename",
                str(CHECKED_IN_PATH),
                "-",
            ],
            input=source,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"gen_facade: ruff {command[0]} failed:\n{result.stderr}")
        source = result.stdout
    return source
