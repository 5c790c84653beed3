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
