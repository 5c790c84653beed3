"""What the cost guards need from storage: Redis counters (atomic scripts) and PostgreSQL
(budgets, ledger, alerts). Implemented in storage/cost_counters.py and storage/costs.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from convergio_server.domain.errors import STORE_RETRY_SECONDS, Unavailable


def counters_unavailable() -> Unavailable:
    """What the guards raise when Redis, which holds every counter, cannot be reached: they
    fail closed rather than let anything run without a spending limit."""
    return Unavailable(
        "the cost guards cannot reach Redis, so budgets and limits cannot be checked; the "
        "request is refused rather than run without a spending limit. Retry when Redis is back",
        metadata={"dependency": "redis", "guard": "budgets"},
        retry_after_seconds=STORE_RETRY_SECONDS,
    )


@dataclass(frozen=True)
class Counter:
    """One budget counter in Redis and the limit it must stay under (None = no limit)."""

    key: str
    limit_nanos: int | None
    ttl_seconds: int
    # A missing counter is first seeded from the ledger (Redis lost its data, or a new period).
    seed: bool = False
    # The expiry is renewed at every reservation instead of set once, when the counter is
    # created: a counter without a period (a total) must not expire while it is in use, or
    # the next call seeds it again from the ledger (for a tenant, a scan of all its rows).
    sliding: bool = False
    # The key recording which of its alerts were given ("" = none): it expires with the
    # counter, so that a threshold alerts once for as long as the counter counts.
    alerts_key: str = ""


@dataclass(frozen=True)
class CounterChange:
    """What settling a reservation adds to one counter: `held` while Redis still holds the
    reservation, `lost` when Redis lost it with its data (the counter, if it exists again, was
    seeded from the ledger since, without the reservation and without this call's cost)."""

    counter: Counter
    held: int
    lost: int


@dataclass(frozen=True)
class ReserveResult:
    ok: bool
    stale_version: str | None = None
    refused_index: int | None = None
    refused_current: int = 0
    missing: tuple[int, ...] = ()  # indexes of the counters to seed from the ledger first


@dataclass(frozen=True)
class RateResult:
    allowed: bool
    used: int
    oldest_ms: int | None
    now_ms: int


@dataclass(frozen=True)
class BreakerThresholds:
    failure_threshold: int
    success_threshold: int
    cool_down_ms: int
    spike_threshold: int
    spike_factor: float


@dataclass(frozen=True)
class BreakerResult:
    decision: int
    retry_ms: int
    now_ms: int
    fields: dict[str, str]


@dataclass(frozen=True)
class AdmitResult:
    """The outcome of a combined admission or call-start script: ok, or what refused."""

    ok: bool
    probe: bool = False
    stale_version: str | None = None
    missing: tuple[int, ...] = ()  # indexes of the counters to seed from the ledger first
    budget_index: int | None = None
    budget_current: int = 0
    rate: RateResult | None = None
    breaker: BreakerResult | None = None


class CounterStore(Protocol):
    async def budget_version(self, tenant: str) -> str: ...

    async def bump_budget_version(self, tenant: str) -> None: ...

    def counter_key(self, tenant: str, *parts: str) -> str: ...

    async def reserve(
        self, tenant: str, version: str, amount: int, counters: Sequence[Counter], hold: str
    ) -> ReserveResult:
        """`hold`: a key of this reservation's own (`hold_key`), that says at settlement
        whether Redis still holds the reservation."""
        ...

    def hold_key(self, tenant: str) -> str:
        """A new key for the marker of one reservation."""
        ...

    async def settle(self, hold: str, changes: Sequence[CounterChange]) -> list[int | None]:
        """Add each change to its counter if the counter exists; a missing one (Redis lost
        it) is left to be seeded from the ledger. Returns the new values (None = missing)."""
        ...

    async def read(self, keys: Sequence[str]) -> list[int]: ...

    async def read_with_version(
        self, tenant: str, keys: Sequence[str]
    ) -> tuple[str, list[int]]: ...

    async def first_alert(self, counter: Counter, alert: str) -> bool:
        """True for the first caller that reports `alert` of `counter` (across every
        process)."""
        ...

    async def seed(self, values: Sequence[tuple[Counter, int]]) -> None: ...

    async def rate(self, key: str, limit: int, window_ms: int, take: bool) -> RateResult: ...

    async def rate_give_back(self, key: str, member: str) -> None:
        """Remove a slot that `admit` took under `member`."""
        ...

    def rate_key(self, tenant: str, kind: str, user: str) -> str: ...

    async def breaker(
        self, tenant: str, name: str, op: str, thresholds: BreakerThresholds, *extra: str | int
    ) -> BreakerResult: ...

    async def breaker_names(self, tenant: str) -> list[str]: ...

    async def admit(
        self,
        tenant: str,
        version: str,
        counters: Sequence[Counter],
        rate_key: str,
        rate_limit: int,
        window_ms: int,
        breaker: str,
        thresholds: BreakerThresholds,
        probe_ms: int,
        rate_member: str,
    ) -> AdmitResult:
        """`rate_member`: unique, the slot's name in the rate limit's window."""
        ...

    async def call_begin(
        self,
        tenant: str,
        version: str,
        amount: int,
        counters: Sequence[Counter],
        breaker: str,
        thresholds: BreakerThresholds,
        probe_ms: int,
        hold: str,
    ) -> AdmitResult: ...

    async def call_end(
        self,
        tenant: str,
        breaker: str,
        op: str,
        detail: str,
        thresholds: BreakerThresholds,
        hold: str,
        changes: Sequence[CounterChange],
    ) -> list[int | None]:
        """The provider breaker's feedback and `settle`, in one round trip."""
        ...


@dataclass(frozen=True)
class BudgetLimits:
    """A budget as stored: limits in USD (None = no limit for that period)."""

    scope: str  # TENANT | USER | CONVERSATION
    subject: str
    daily: Decimal | None
    monthly: Decimal | None
    total: Decimal | None
    per_turn: Decimal | None
    thresholds: tuple[int, ...] = (70, 85)
    update_time: datetime | None = None
    updated_by: str = ""


@dataclass(frozen=True)
class AlertRecord:
    tenant_id: str
    scope: str
    subject: str
    period: str
    period_id: str
    threshold_percent: int
    spent_usd: Decimal
    limit_usd: Decimal
    conversation_id: str
    turn_id: str


class BudgetStore(Protocol):
    async def seed(self, tenant: str, defaults: Sequence[BudgetLimits]) -> None:
        """Insert the default budgets the first time a tenant is seen (never again)."""
        ...

    async def applicable(
        self, tenant: str, user: str, conversation_id: str
    ) -> list[BudgetLimits]: ...

    async def get(self, tenant: str, scope: str, subject: str) -> BudgetLimits | None: ...

    async def upsert(self, tenant: str, budget: BudgetLimits, by: str) -> BudgetLimits: ...

    async def delete(self, tenant: str, scope: str, subject: str) -> bool: ...

    async def list_budgets(
        self, tenant: str, scope: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[BudgetLimits]: ...

    async def record_alert(self, alert: AlertRecord) -> None: ...

    async def ledger_spent(
        self, tenant: str, spans: Sequence[tuple[str, str, datetime | None]]
    ) -> list[Decimal]:
        """What the ledger says each (scope, subject) spent since its time (None = ever), in
        one query."""
        ...

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool: ...

    async def record_breaker_event(
        self,
        tenant: str,
        scope: str,
        provider: str,
        event: str,
        cause: str,
        reason: str,
        actor: str,
    ) -> None: ...
