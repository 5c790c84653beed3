"""Declarative request validation, run by the call pipeline before a
servicer sees the request, so every servicer can trust the shape of its input.

Rules common to every request are found from the message's fields
(`page_size`, `page_token`, `request_id`); per-method rules are declared in
`rules.py` next to this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from convergio_server.domain.errors import FieldViolation, InvalidArgument
from convergio_server.domain.flags.validation import key_problem

Rule = Callable[[Message], Iterable[FieldViolation]]

MAX_PAGE_SIZE = 1000
MAX_REQUEST_ID = 128
# The only spelling of an id the stores know (Python's uuid also takes braces, "urn:uuid:"
# and no hyphens; PostgreSQL rejects some of those, and Redis keys would differ).
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
# At most this many problems of the walk below are reported (a huge request could have
# thousands).
_MAX_WALK_VIOLATIONS = 10


def _get(message: Message, path: str) -> object:
    value: object = message
    for part in path.split("."):
        value = getattr(value, part)
    return value


def required(*paths: str) -> Rule:
    """The fields must be set (non-empty string, non-zero number, non-empty list)."""

    def rule(message: Message) -> Iterable[FieldViolation]:
        for path in paths:
            value = _get(message, path)
            if isinstance(value, str):
                empty = not value.strip()
            elif isinstance(value, Message):
                empty = value.ByteSize() == 0
            else:
                empty = not value
            if empty:
                yield FieldViolation(path, "is required")

    return rule


def uuid_field(path: str, *, optional: bool = False) -> Rule:
    """The field holds a resource id: a UUID such as 0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e
    (upper-case hex is taken and lowered in the request, as the ids are stored)."""
    parent_path, _, name = path.rpartition(".")

    def rule(message: Message) -> Iterable[FieldViolation]:
        value = _get(message, path)
        assert isinstance(value, str)
        if not value:
            if not optional:
                yield FieldViolation(path, "is required")
            return
        if not _UUID_RE.match(value):
            yield FieldViolation(
                path,
                f"{value[:64]!r} is not a valid id (expected a UUID such as "
                "0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e)",
            )
            return
        if value != value.lower():
            parent = _get(message, parent_path) if parent_path else message
            setattr(parent, name, value.lower())

    return rule


def max_length(path: str, limit: int) -> Rule:
    def rule(message: Message) -> Iterable[FieldViolation]:
        value = _get(message, path)
        size = len(value.encode()) if isinstance(value, str) else len(value)  # type: ignore[arg-type]
        if size > limit:
            yield FieldViolation(path, f"is {size} long; the limit is {limit}")

    return rule


def key_field(path: str) -> Rule:
    """A flag key (the flags' own rule), each of them for a repeated field."""

    def rule(message: Message) -> Iterable[FieldViolation]:
        value = _get(message, path)
        for key in [value] if isinstance(value, str) else value:  # type: ignore[attr-defined]
            problem = key_problem(key)
            if problem is not None:
                yield FieldViolation(path, problem)
                return

    return rule


def in_range(path: str, low: float, high: float) -> Rule:
    def rule(message: Message) -> Iterable[FieldViolation]:
        value = _get(message, path)
        assert isinstance(value, int | float)
        if not low <= value <= high:
            yield FieldViolation(path, f"must be between {low:g} and {high:g}, got {value:g}")

    return rule


def _scalar_violation(field: FieldDescriptor, value: object, path: str) -> FieldViolation | None:
    if isinstance(value, str):
        if "\x00" in value:
            return FieldViolation(path, "must not contain NUL characters (\\u0000)")
    elif field.enum_type is not None and value not in field.enum_type.values_by_number:
        known = ", ".join(v.name for v in field.enum_type.values if v.number)
        return FieldViolation(path, f"{value} is not a known value; use one of {known}")
    return None


def _walk(message: Message, prefix: str, out: list[FieldViolation]) -> None:
    """Text no store can hold (NUL characters) and enum numbers this server does not know,
    anywhere in the request (proto3 keeps unknown enum numbers as they came)."""
    for field, value in message.ListFields():
        if len(out) >= _MAX_WALK_VIOLATIONS:
            return
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                where = f"{path}[{str(key)[:40]!r}]"
                if isinstance(key, str) and "\x00" in key:
                    out.append(FieldViolation(path, "keys must not contain NUL characters"))
                _check(value_field, item, where, out)
            continue
        repeated = field.label == FieldDescriptor.LABEL_REPEATED  # type: ignore[attr-defined]
        for index, item in enumerate(value if repeated else [value]):
            _check(field, item, f"{path}[{index}]" if repeated else path, out)


def _check(field: FieldDescriptor, value: Any, path: str, out: list[FieldViolation]) -> None:
    if field.message_type is not None:
        _walk(value, path + ".", out)
        return
    found = _scalar_violation(field, value, path)
    if found is not None:
        out.append(found)


def _checked_everywhere(message: Message) -> Iterable[FieldViolation]:
    out: list[FieldViolation] = []
    _walk(message, "", out)
    return out


def _common_rules(descriptor: Descriptor | Any) -> list[Rule]:
    names = set(descriptor.fields_by_name)
    rules: list[Rule] = [_checked_everywhere]
    if "page_size" in names:

        def page_size(message: Message) -> Iterable[FieldViolation]:
            size = message.page_size  # type: ignore[attr-defined]
            # Sizes above the maximum are clamped by the list itself, as AIP-158 asks.
            if size < 0:
                yield FieldViolation("page_size", "must not be negative (0 = the default, 50)")

        rules.append(page_size)
    if "page_token" in names:
        rules.append(max_length("page_token", 1024))
    if "request_id" in names:

        def request_id(message: Message) -> Iterable[FieldViolation]:
            value = message.request_id  # type: ignore[attr-defined]
            if len(value) > MAX_REQUEST_ID:
                yield FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters")
            elif value and not value.isprintable():
                yield FieldViolation("request_id", "must be printable text")

        rules.append(request_id)
    return rules


class Validator:
    """Holds the rules per full method name (`/package.Service/Method`)."""

    def __init__(self, rules: Mapping[str, Sequence[Rule]]) -> None:
        self._declared = {method: list(r) for method, r in rules.items()}
        self._by_method: dict[str, list[Rule]] = {}

    def has_rules(self, method: str) -> bool:
        return method.startswith(("/convergio.", "/flagd."))

    def validate(self, method: str, request: Message) -> None:
        rules = self._by_method.get(method)
        if rules is None:
            rules = _common_rules(request.DESCRIPTOR) + self._declared.get(method, [])
            self._by_method[method] = rules
        violations = [v for rule in rules for v in rule(request)]
        if violations:
            summary = "; ".join(f"{v.field} {v.description}" for v in violations)
            raise InvalidArgument(f"invalid request: {summary}", violations=violations)
