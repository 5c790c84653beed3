"""Checks and normalises a flag's configuration; every problem names its field."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from convergio_server.domain.errors import FieldViolation, InvalidArgument
from convergio_server.domain.flags.model import FlagSpec, Gradual, Strategy, Variant

KEY_RE = re.compile(r"^[a-z0-9_.-]{1,128}\Z")
_VARIANT_RE = re.compile(r"^[a-z0-9_.-]{1,64}\Z")
RESERVED_VARIANTS = frozenset({"on", "off"})
MAX_DESCRIPTION = 1000
MAX_GROUPS = 1000
MAX_USERS = 10_000
MAX_VARIANTS = 20
MAX_NAME = 256
# Percentages are kept to 2 decimals: bucketing uses a total weight of 10,000.
PERCENT_DECIMALS = 2


def key_problem(key: str) -> str | None:
    if KEY_RE.match(key):
        return None
    return f"{key[:64]!r} must be 1-128 characters of a-z, 0-9, '_', '.' or '-'"


def check_key(key: str, field: str = "key") -> str:
    problem = key_problem(key)
    if problem is not None:
        raise InvalidArgument.for_field(field, problem)
    return key


def _percentage(value: float, field: str, out: list[FieldViolation]) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        out.append(FieldViolation(field, f"must be between 0 and 100, got {value:g}"))
        return 0.0
    return round(value, PERCENT_DECIMALS)


def _names(
    values: Iterable[str], field: str, limit: int, out: list[FieldViolation]
) -> tuple[str, ...]:
    cleaned = sorted(set(values))
    if len(cleaned) > limit:
        out.append(FieldViolation(field, f"at most {limit} entries, got {len(cleaned)}"))
    for value in cleaned:
        if not value or len(value) > MAX_NAME or not value.isprintable():
            out.append(FieldViolation(field, f"entries must be 1-{MAX_NAME} printable characters"))
            break
        if value != value.strip():
            # Trimmed, it would never equal the key a caller is evaluated with.
            out.append(FieldViolation(field, f"{value[:64]!r} starts or ends with spaces"))
            break
    return tuple(cleaned)


def normalize(spec: FlagSpec, prefix: str = "flag.") -> FlagSpec:
    """The spec as stored (sorted unique groups and users, percentages to 2 decimals), or
    InvalidArgument listing every problem with its field (`prefix` + field name)."""
    out: list[FieldViolation] = []
    problem = key_problem(spec.key)
    if problem is not None:
        out.append(FieldViolation(prefix + "key", problem))
    if len(spec.description) > MAX_DESCRIPTION:
        out.append(FieldViolation(prefix + "description", f"at most {MAX_DESCRIPTION} characters"))
    if not isinstance(spec.strategy, Strategy):
        valid = ", ".join(s.value for s in Strategy)
        out.append(FieldViolation(prefix + "strategy", f"must be one of {valid}"))
    percentage = _percentage(spec.percentage, prefix + "percentage", out)
    groups = _names(spec.groups, prefix + "groups", MAX_GROUPS, out)
    users = _names(spec.users, prefix + "users", MAX_USERS, out)
    variants = spec.variants
    if variants:
        field = prefix + "variants"
        if len(variants) > MAX_VARIANTS:
            out.append(FieldViolation(field, f"at most {MAX_VARIANTS} variants"))
        seen: set[str] = set()
        for v in variants:
            if not _VARIANT_RE.match(v.name) or v.name in RESERVED_VARIANTS:
                out.append(
                    FieldViolation(
                        field,
                        f"variant name {v.name[:64]!r} must be 1-64 characters of a-z, 0-9, "
                        "'_', '.' or '-', and not 'on' or 'off'",
                    )
                )
            elif v.name in seen:
                out.append(FieldViolation(field, f"variant {v.name!r} appears twice"))
            seen.add(v.name)
            if not 0 <= v.weight <= 100:
                out.append(FieldViolation(field, f"weight of {v.name!r} must be 0-100"))
        total = sum(v.weight for v in variants)
        if total != 100:
            out.append(FieldViolation(field, f"weights must add up to 100, they add up to {total}"))
    gradual = spec.gradual
    if spec.strategy is Strategy.GRADUAL:
        if gradual is None:
            out.append(FieldViolation(prefix + "gradual", "is required for the gradual strategy"))
        else:
            if gradual.end_time <= gradual.start_time:
                out.append(FieldViolation(prefix + "gradual.end_time", "must be after start_time"))
            target = _percentage(
                gradual.target_percentage, prefix + "gradual.target_percentage", out
            )
            gradual = Gradual(gradual.start_time, gradual.end_time, target)
    else:
        gradual = None  # ignored for other strategies: not stored, so it cannot differ
    if out:
        raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in out), violations=out)
    return FlagSpec(
        key=spec.key,
        description=spec.description,
        enabled=spec.enabled,
        strategy=spec.strategy,
        percentage=percentage,
        groups=groups,
        users=users,
        variants=tuple(Variant(v.name, v.weight) for v in variants),
        gradual=gradual,
    )


# A flag must fit in every response that carries it, the largest being a history entry
# (comment, request id, actor and times around the flag) inside a page with its token.
FLAG_RESERVE_BYTES = 32 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Upper bound of an encoded GradualRollout with its tag: two Timestamps and a double.
_GRADUAL_BYTES = 64


def max_flag_bytes(max_message_bytes: int) -> int:
    """The largest encoded flag a server with this max message size accepts."""
    return max(max_message_bytes - FLAG_RESERVE_BYTES, max_message_bytes // 2)


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _string_bytes(value: str) -> int:
    """A string field of the Flag message (tag, length, UTF-8), omitted when empty."""
    size = len(value.encode())
    return 1 + _varint_bytes(size) + size if size else 0


def _list_bytes(values: Iterable[str]) -> int:
    total = 0
    for value in values:
        size = len(value.encode())
        total += 1 + _varint_bytes(size) + size
    return total


def _variant_bytes(variant: Variant) -> int:
    inner = _string_bytes(variant.name) + (1 + _varint_bytes(variant.weight))
    return 1 + _varint_bytes(inner) + inner


def encoded_size(spec: FlagSpec) -> int:
    """The size of the flag as a convergio.flag.v1.Flag message, without the fields the
    server sets (an upper bound: fixed-size parts are counted at their largest)."""
    return (
        _string_bytes(spec.key)
        + _string_bytes(spec.description)
        + 2  # enabled
        + 2  # strategy
        + 9  # percentage
        + _list_bytes(spec.groups)
        + _list_bytes(spec.users)
        + sum(_variant_bytes(v) for v in spec.variants)
        + (_GRADUAL_BYTES if spec.gradual is not None else 0)
    )


def check_size(spec: FlagSpec, limit: int, prefix: str = "flag.") -> None:
    """InvalidArgument naming the largest part of a flag whose encoding is over `limit`."""
    size = encoded_size(spec)
    if size <= limit:
        return
    parts = {
        "users": _list_bytes(spec.users),
        "groups": _list_bytes(spec.groups),
        "description": _string_bytes(spec.description),
    }
    field = max(parts, key=lambda name: parts[name])
    raise InvalidArgument.for_field(
        prefix + field,
        f"the flag encodes to {size:,} bytes, over the limit of {limit:,} bytes (the server's "
        f"max message size less {FLAG_RESERVE_BYTES // 1024} KiB); use fewer or shorter entries",
    )
