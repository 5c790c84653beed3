"""What a flag is, what an evaluation answers, and how a change is described."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Strategy(enum.StrEnum):
    """How a flag chooses the callers that get the feature."""

    ON = "on"
    OFF = "off"
    PERCENTAGE = "percentage"
    CANARY = "canary"
    GROUP_BASED = "group_based"
    WHITELIST = "whitelist"
    GRADUAL = "gradual"


class Reason(enum.StrEnum):
    """Why an evaluation gave its value (the OpenFeature / flagd reason strings)."""

    STATIC = "STATIC"
    DEFAULT = "DEFAULT"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"
    STALE = "STALE"


class ErrorCode(enum.StrEnum):
    """Why an evaluation failed (OpenFeature error codes)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    GENERAL = "GENERAL"


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    VERSION_CONFLICT = "version_conflict"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class Gradual:
    """0% before start_time, rising linearly to target_percentage at end_time."""

    start_time: datetime
    end_time: datetime
    target_percentage: float


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """A flag's configuration: everything an operator sets. Two equal specs mean an upsert
    changes nothing. Groups and users are kept sorted and unique (they are sets)."""

    key: str
    description: str = ""
    enabled: bool = True
    strategy: Strategy = Strategy.OFF
    percentage: float = 0.0
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()
    gradual: Gradual | None = None


@dataclass(frozen=True, slots=True)
class Flag:
    """A stored flag: its spec and what the server keeps about it."""

    spec: FlagSpec
    version: int
    create_time: datetime
    update_time: datetime
    updated_by: str

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True, slots=True)
class EvalContext:
    """Who a flag is evaluated for. An empty targeting key is never in a percentage."""

    targeting_key: str = ""
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Evaluation:
    key: str
    value: bool
    variant: str
    reason: Reason
    flag_version: int = 0
    error_code: ErrorCode | None = None
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One applied change, as caches and watchers see it. `flag` is the flag after the
    change (before it, with the deletion's version, for a delete). `seq` orders changes
    globally (the history entry id), so a cache can ignore a stale notification."""

    tenant_id: str
    kind: ChangeKind
    flag: Flag
    actor: str
    change_time: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    version: int
    kind: ChangeKind
    outcome: Outcome
    spec: FlagSpec
    expected_version: int
    actor: str
    change_time: datetime
    comment: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every stored flag, read in one transaction: `seq` is the newest change it includes.
    `missing`: ids of changes at or below `seq` that the transaction could not see (see
    FlagDelta), to be asked for again."""

    seq: int
    seeded_tenants: frozenset[str]
    flags: dict[str, list[tuple[Flag, int]]] = field(default_factory=dict)
    missing: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class FlagDelta:
    """What changed after a change seq that an earlier read ended at, read in one
    transaction. `seq` is the newest change the store holds (below the one asked from only
    if the history went back, e.g. a restored database). `flags`: the current state of every
    flag changed since, with the seq of its latest change; `deleted`: the flags changed since
    that no longer exist. `missing`: ids at or below `seq` that could not be seen: change
    seqs are taken when a write starts, so a write still committing holds a lower seq than
    one committed after it (or the write was rolled back). `seeded_tenants`: every tenant
    that has had its defaults, when their number differs from the one the reader knew."""

    seq: int
    flags: dict[str, list[tuple[Flag, int]]] = field(default_factory=dict)
    deleted: list[FlagChange] = field(default_factory=list)
    missing: frozenset[int] = frozenset()
    seeded_tenants: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return not self.flags and not self.deleted and self.seeded_tenants is None
