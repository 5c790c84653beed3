"""Flags as JSON-ready dicts: the stored spec (PostgreSQL jsonb, change notifications) and
the seed file format (`{"flags": {"rag_in_loop": {"enabled": true, ...}}}`)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from convergio_server.domain.errors import InvalidArgument
from convergio_server.domain.flags.model import (
    ChangeKind,
    Flag,
    FlagChange,
    FlagSpec,
    Gradual,
    Strategy,
    Variant,
)
from convergio_server.domain.flags.validation import normalize

# ---- stored form -------------------------------------------------------------------------


def spec_to_dict(spec: FlagSpec) -> dict[str, Any]:
    data: dict[str, Any] = {
        "description": spec.description,
        "enabled": spec.enabled,
        "strategy": spec.strategy.value,
        "percentage": spec.percentage,
        "groups": list(spec.groups),
        "users": list(spec.users),
        "variants": [{"name": v.name, "weight": v.weight} for v in spec.variants],
    }
    if spec.gradual is not None:
        data["gradual"] = {
            "start_time": spec.gradual.start_time.isoformat(),
            "end_time": spec.gradual.end_time.isoformat(),
            "target_percentage": spec.gradual.target_percentage,
        }
    return data


def spec_from_dict(key: str, data: dict[str, Any]) -> FlagSpec:
    """The stored form back; raises ValueError/KeyError/TypeError if it is not one."""
    gradual = data.get("gradual")
    return FlagSpec(
        key=key,
        description=str(data.get("description", "")),
        enabled=bool(data["enabled"]),
        strategy=Strategy(data["strategy"]),
        percentage=float(data.get("percentage", 0.0)),
        groups=tuple(data.get("groups", ())),
        users=tuple(data.get("users", ())),
        variants=tuple(Variant(str(v["name"]), int(v["weight"])) for v in data.get("variants", ())),
        gradual=None
        if gradual is None
        else Gradual(
            datetime.fromisoformat(gradual["start_time"]),
            datetime.fromisoformat(gradual["end_time"]),
            float(gradual["target_percentage"]),
        ),
    )


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    return {
        "key": flag.key,
        "spec": spec_to_dict(flag.spec),
        "version": flag.version,
        "create_time": flag.create_time.isoformat(),
        "update_time": flag.update_time.isoformat(),
        "updated_by": flag.updated_by,
    }


def flag_from_dict(data: dict[str, Any]) -> Flag:
    return Flag(
        spec=spec_from_dict(data["key"], data["spec"]),
        version=int(data["version"]),
        create_time=datetime.fromisoformat(data["create_time"]),
        update_time=datetime.fromisoformat(data["update_time"]),
        updated_by=str(data["updated_by"]),
    )


def change_to_dict(change: FlagChange) -> dict[str, Any]:
    return {
        "tenant_id": change.tenant_id,
        "kind": change.kind.value,
        "flag": flag_to_dict(change.flag),
        "actor": change.actor,
        "change_time": change.change_time.isoformat(),
        "seq": change.seq,
    }


def change_from_dict(data: dict[str, Any]) -> FlagChange:
    return FlagChange(
        tenant_id=str(data["tenant_id"]),
        kind=ChangeKind(data["kind"]),
        flag=flag_from_dict(data["flag"]),
        actor=str(data["actor"]),
        change_time=datetime.fromisoformat(data["change_time"]),
        seq=int(data["seq"]),
    )


# ---- seed file format --------------------------------------------------------------------

_SEED_FIELDS = {
    "description",
    "enabled",
    "strategy",
    "percentage",
    "whitelist_groups",
    "whitelist_users",
    "groups",
    "users",
    "variants",
    "gradual",
}


def _bad(field: str, what: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, what)


def _string_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(field, "must be a list of strings")
    return value


def _seed_flag(key: str, data: Any) -> FlagSpec:
    base = f"flags.{key}."
    if not isinstance(data, dict):
        raise _bad(f"flags.{key}", "must be an object with enabled, strategy, ...")
    unknown = sorted(set(data) - _SEED_FIELDS)
    if unknown:
        raise _bad(base + unknown[0], f"unknown field; use {', '.join(sorted(_SEED_FIELDS))}")
    strategy_name = data.get("strategy")
    try:
        strategy = Strategy(str(strategy_name))
    except ValueError:
        valid = ", ".join(s.value for s in Strategy)
        raise _bad(base + "strategy", f"{strategy_name!r} is not one of {valid}") from None
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _bad(base + "enabled", "must be true or false")
    percentage = data.get("percentage", 0.0)
    if isinstance(percentage, bool) or not isinstance(percentage, int | float):
        raise _bad(base + "percentage", "must be a number from 0 to 100")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _bad(base + "description", "must be a string")
    for name, alias in (("whitelist_groups", "groups"), ("whitelist_users", "users")):
        if name in data and alias in data:
            raise _bad(base + alias, f"is another name for {name}: give one of them")
    groups = _string_list(
        data.get("whitelist_groups", data.get("groups", [])), base + "whitelist_groups"
    )
    users = _string_list(
        data.get("whitelist_users", data.get("users", [])), base + "whitelist_users"
    )
    raw_variants = data.get("variants", {})
    if isinstance(raw_variants, dict):
        items = list(raw_variants.items())
    elif isinstance(raw_variants, list):
        try:
            items = [(v["name"], v["weight"]) for v in raw_variants]
        except (TypeError, KeyError):
            raise _bad(base + "variants", 'must be {"name": weight, ...}') from None
    else:
        raise _bad(base + "variants", 'must be {"name": weight, ...}')
    variants: list[Variant] = []
    for name, weight in items:
        if not isinstance(name, str) or isinstance(weight, bool) or not isinstance(weight, int):
            raise _bad(base + "variants", "names are strings and weights whole numbers 0-100")
        variants.append(Variant(name, weight))
    gradual: Gradual | None = None
    raw_gradual = data.get("gradual")
    if raw_gradual is not None:
        try:
            gradual = Gradual(
                datetime.fromisoformat(raw_gradual["start_time"]),
                datetime.fromisoformat(raw_gradual["end_time"]),
                float(raw_gradual.get("target_percentage", 100.0)),
            )
        except (TypeError, KeyError, ValueError):
            raise _bad(
                base + "gradual",
                'must be {"start_time": ISO-8601, "end_time": ISO-8601, "target_percentage": n}',
            ) from None
        if gradual.start_time.tzinfo is None or gradual.end_time.tzinfo is None:
            raise _bad(base + "gradual", "times need a UTC offset, e.g. 2026-01-01T00:00:00Z")
    spec = FlagSpec(
        key=key,
        description=description,
        enabled=enabled,
        strategy=strategy,
        percentage=float(percentage) if math.isfinite(percentage) else -1.0,
        groups=tuple(groups),
        users=tuple(users),
        variants=tuple(variants),
        gradual=gradual,
    )
    return normalize(spec, prefix=base)


def parse_seed(document: Any) -> list[FlagSpec]:
    """The flags of a seed document, validated and normalised; InvalidArgument names the
    offending field as `flags.<key>.<field>`."""
    if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
        raise _bad("flags", 'the file must be a JSON object {"flags": {"<key>": {...}}}')
    unknown = sorted(set(document) - {"flags", "$schema"})
    if unknown:
        raise _bad(unknown[0], 'unknown field; the file holds {"flags": {...}} only')
    return [_seed_flag(key, data) for key, data in document["flags"].items()]


def to_seed(flags: list[FlagSpec]) -> dict[str, Any]:
    """The seed document for `flags`; importing it back changes nothing."""
    out: dict[str, Any] = {}
    for spec in sorted(flags, key=lambda s: s.key):
        entry: dict[str, Any] = {"enabled": spec.enabled, "strategy": spec.strategy.value}
        if spec.description:
            entry["description"] = spec.description
        if spec.strategy in (Strategy.PERCENTAGE, Strategy.CANARY) or spec.percentage:
            entry["percentage"] = spec.percentage
        if spec.groups:
            entry["whitelist_groups"] = list(spec.groups)
        if spec.users:
            entry["whitelist_users"] = list(spec.users)
        if spec.variants:
            entry["variants"] = {v.name: v.weight for v in spec.variants}
        if spec.gradual is not None:
            entry["gradual"] = {
                "start_time": spec.gradual.start_time.isoformat(),
                "end_time": spec.gradual.end_time.isoformat(),
                "target_percentage": spec.gradual.target_percentage,
            }
        out[spec.key] = entry
    return {"flags": out}
