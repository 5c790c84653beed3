"""Budgets enforced by reservation.

Before a model call, the most it can cost is added atomically (one Redis script) to the
counter of every period of every budget that applies (tenant, user, conversation; daily,
monthly, total) and to the turn's counter (the per-turn cap), or nothing is added and the call
is refused. After the call the reservation is replaced by the real cost. Concurrent calls can
therefore never take a budget past its limit together.

Redis may lose the counters while a call is in flight (a restart without persistence, a
failover). Only a reservation creates counters, a missing period counter being first seeded
from the ledger: the settlement adds to counters that exist and leaves missing ones missing,
and a reservation Redis lost (its marker, `Reservation.hold`, is gone) is not taken back from
counters seeded since, which get the call's real cost instead. A caller that writes the
ledger adds the call's entry only after the settlement, so a seed that read it had no counter
to add it to: each call is counted once, by the counters or by the ledger.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from convergio_server.domain.costs.money import MAX_LIMIT_USD, fmt, from_nanos, to_nanos
from convergio_server.domain.costs.ports import (
    AlertRecord,
    BudgetLimits,
    BudgetStore,
    Counter,
    CounterChange,
    CounterStore,
)
from convergio_server.domain.errors import InvalidArgument, QuotaExceeded, QuotaViolation
from convergio_server.domain.guards import BudgetAlertInfo, TurnScope

log = logging.getLogger(__name__)

SCOPES = ("TENANT", "USER", "CONVERSATION")
DEFAULT_THRESHOLDS = (70, 85)
_DAY = 86_400
# A total's counter expires too (or every conversation ever made would keep one), but only
# once it has been unused for its whole time to live: each reservation renews it (see
# `Counter.sliding`). A period's counter expires the same time after its creation, since it
# is not used again once its period is over.
_TTL = {"DAILY": 2 * _DAY, "MONTHLY": 33 * _DAY, "TOTAL": 35 * _DAY, "PER_TURN": _DAY}
_RESERVED_TTL = _DAY
PERIODS = ("DAILY", "MONTHLY", "TOTAL")
_CACHE_SIZE = 4096


def check_limit(name: str, value: Decimal | None) -> None:
    if value is not None and (value < 0 or value > MAX_LIMIT_USD):
        raise InvalidArgument.for_field(name, "must be a decimal from 0 to 1000000 (USD)")


def check_thresholds(name: str, values: Sequence[int]) -> tuple[int, ...]:
    if not values:
        return DEFAULT_THRESHOLDS
    if any(v < 1 or v > 99 for v in values):
        raise InvalidArgument.for_field(name, "each threshold must be 1 to 99 (percent)")
    if list(values) != sorted(set(values)):
        raise InvalidArgument.for_field(name, "thresholds must be ascending without repeats")
    return tuple(values)


def period_ids(now: datetime) -> dict[str, str]:
    return {"DAILY": now.strftime("%Y-%m-%d"), "MONTHLY": now.strftime("%Y-%m"), "TOTAL": ""}


@dataclass(frozen=True)
class Applied:
    """One limit that a call counts against, and the Redis counter that tracks it."""

    scope: str
    subject: str
    period: str
    period_id: str
    limit: Decimal | None
    thresholds: tuple[int, ...]
    counter: Counter

    @property
    def quota_subject(self) -> str:
        return f"budget:{self.scope.lower()}:{self.subject}:{self.period.lower()}"


@dataclass
class Reservation:
    tenant_id: str
    amount_nanos: int
    applied: list[Applied]
    reserved_counters: list[Counter] = field(default_factory=list)
    scope: TurnScope | None = None
    # The key that says, at settlement, whether Redis still holds this reservation.
    hold: str = ""


def _effective(rows: list[BudgetLimits], user: str, conversation_id: str) -> list[BudgetLimits]:
    """The budgets in force: the tenant's, the user's (or the user default), the
    conversation's (or the conversation default), with the real subject filled in. A scope
    without any budget is still present with no limits, so that its spending is counted."""
    by_key = {(r.scope, r.subject): r for r in rows}
    out: list[BudgetLimits] = []
    for scope, subject in (("TENANT", ""), ("USER", user), ("CONVERSATION", conversation_id)):
        if scope != "TENANT" and not subject:
            continue
        own = by_key.get((scope, subject)) or by_key.get((scope, ""))
        if own is None:
            out.append(BudgetLimits(scope, subject, None, None, None, None))
        else:
            out.append(
                BudgetLimits(
                    scope, subject, own.daily, own.monthly, own.total, own.per_turn, own.thresholds
                )
            )
    return out


class Budgets:
    def __init__(
        self, store: BudgetStore, counters: CounterStore, defaults: Sequence[BudgetLimits]
    ) -> None:
        self.store = store
        self.counters = counters
        self.defaults = list(defaults)
        self._seeded: set[str] = set()
        self._cache: OrderedDict[tuple[str, str, str], tuple[str, list[BudgetLimits]]] = (
            OrderedDict()
        )
        self._alerted: set[str] = set()
        self._applied_cache: dict[
            tuple[str, tuple[BudgetLimits, ...], str],
            tuple[list[Applied], tuple[Decimal, BudgetLimits] | None],
        ] = {}

    async def ensure_seeded(self, tenant: str) -> None:
        if tenant not in self._seeded:
            await self.store.seed(tenant, self.defaults)
            self._seeded.add(tenant)

    async def _load(
        self, tenant: str, user: str, conversation_id: str
    ) -> tuple[str, list[BudgetLimits]]:
        await self.ensure_seeded(tenant)
        version = await self.counters.budget_version(tenant)
        rows = await self.store.applicable(tenant, user, conversation_id)
        resolved = (version, _effective(rows, user, conversation_id))
        key = (tenant, user, conversation_id)
        self._cache[key] = resolved
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return resolved

    async def resolved(
        self, scope: TurnScope, reload: bool = False
    ) -> tuple[str, list[BudgetLimits]]:
        """The budget version and the budgets in force for this scope (cached per process;
        callers pass the version to Redis, which says when it is stale)."""
        key = (scope.principal.tenant_id, scope.principal.name, scope.conversation_id)
        cached = None if reload else self._cache.get(key)
        return cached if cached is not None else await self._load(*key)

    async def seed(self, tenant: str, applied: Sequence[Applied]) -> None:
        """Create missing counters from the ledger (one query, one Redis call for all): after
        Redis lost its data a budget is not reset to zero. A caller that queues ledger entries
        writes them first (see `CostGuards._reserve`): calls settled while the counters were
        missing are counted by the ledger alone."""
        spans: list[tuple[str, str, datetime | None]] = []
        for a in applied:
            if a.period == "DAILY":
                since: datetime | None = datetime.strptime(a.period_id, "%Y-%m-%d")
            elif a.period == "MONTHLY":
                since = datetime.strptime(a.period_id, "%Y-%m")
            else:
                since = None
            spans.append((a.scope, a.subject, None if since is None else since.replace(tzinfo=UTC)))
        spent = await self.store.ledger_spent(tenant, spans)
        await self.counters.seed(
            [(a.counter, to_nanos(s)) for a, s in zip(applied, spent, strict=True)]
        )

    async def start_conversation(self, tenant: str, conversation_id: str) -> None:
        """A new conversation has spent nothing: its counters start at zero, so that its
        first model call does not seed them from the ledger."""
        ids = period_ids(datetime.now(UTC))
        await self.counters.seed(
            [
                (self._period_counter(tenant, "CONVERSATION", conversation_id, period, ids), 0)
                for period in PERIODS
            ]
        )

    def _period_counter(
        self,
        tenant: str,
        scope: str,
        subject: str,
        period: str,
        ids: dict[str, str],
        limit: Decimal | None = None,
    ) -> Counter:
        """The counter of one period of a budget (`subject` "" = the scope's default).
        Seeded from the ledger when missing even without a limit: a limit set later must
        find what the period already cost, not what was counted since Redis lost its data."""
        parts = (scope, subject or "-", period, ids[period])
        key = self.counters.counter_key(tenant, *parts)
        nanos = None if limit is None else to_nanos(limit)
        return Counter(
            key,
            nanos,
            _TTL[period],
            seed=True,
            sliding=period == "TOTAL",
            alerts_key=self.counters.counter_key(tenant, *parts, "alerts"),
        )

    async def changed(self, tenant: str) -> None:
        """Budgets of `tenant` were set or deleted: every process reloads them."""
        await self.counters.bump_budget_version(tenant)

    def applied(
        self, tenant: str, budgets: list[BudgetLimits], turn_id: str, now: datetime
    ) -> list[Applied]:
        """The limits a call counts against: every period of every budget in force, and the
        turn's counter under the lowest per-turn cap."""
        ids = period_ids(now)
        cache_key = (tenant, tuple(budgets), ids["DAILY"])
        cached = self._applied_cache.get(cache_key)
        if cached is None:
            cached = self._base_applied(tenant, budgets, ids)
            if len(self._applied_cache) > _CACHE_SIZE:
                self._applied_cache.clear()
            self._applied_cache[cache_key] = cached
        base, turn_cap = cached
        if turn_cap is None or not turn_id:
            return list(base)
        limit, b = turn_cap
        key = self.counters.counter_key(tenant, "turn", turn_id)
        alerts = self.counters.counter_key(tenant, "turn", turn_id, "alerts")
        turn = Applied(
            b.scope, b.subject, "PER_TURN", turn_id, limit, b.thresholds,
            Counter(key, to_nanos(limit), _TTL["PER_TURN"], alerts_key=alerts),
        )  # fmt: skip
        return [*base, turn]

    def _base_applied(
        self, tenant: str, budgets: list[BudgetLimits], ids: dict[str, str]
    ) -> tuple[list[Applied], tuple[Decimal, BudgetLimits] | None]:
        out: list[Applied] = []
        turn_cap: tuple[Decimal, BudgetLimits] | None = None
        for b in budgets:
            for period, limit in zip(PERIODS, (b.daily, b.monthly, b.total), strict=True):
                counter = self._period_counter(tenant, b.scope, b.subject, period, ids, limit)
                out.append(
                    Applied(b.scope, b.subject, period, ids[period], limit, b.thresholds, counter)
                )
            if b.per_turn is not None and (turn_cap is None or b.per_turn < turn_cap[0]):
                turn_cap = (b.per_turn, b)
        return out, turn_cap

    def reserved_counters(self, tenant: str, budgets: list[BudgetLimits]) -> list[Counter]:
        return [
            Counter(
                self.counters.counter_key(tenant, b.scope, b.subject or "-", "reserved"),
                None,
                _RESERVED_TTL,
            )
            for b in budgets
        ]

    async def reserve(self, scope: TurnScope, amount: Decimal) -> Reservation:
        """Reserve `amount` against every budget that applies, or raise BUDGET_EXHAUSTED."""
        tenant = scope.principal.tenant_id
        key = (tenant, scope.principal.name, scope.conversation_id)
        cached = self._cache.get(key)
        version, budgets = cached if cached is not None else await self._load(*key)
        nanos = to_nanos(amount)
        hold = self.counters.hold_key(tenant)
        for _ in range(6):  # seeds every missing counter at once; budgets may change meanwhile
            applied = self.applied(tenant, budgets, scope.turn_id, datetime.now(UTC))
            reserved = self.reserved_counters(tenant, budgets)
            counters = [a.counter for a in applied] + reserved
            result = await self.counters.reserve(tenant, version, nanos, counters, hold)
            if result.ok:
                return Reservation(tenant, nanos, applied, reserved, scope, hold)
            if result.stale_version is not None:
                version, budgets = await self._load(*key)
                continue
            if result.missing:
                await self.seed(tenant, [applied[i] for i in result.missing])
                continue
            assert result.refused_index is not None
            raise no_room(applied[result.refused_index], result.refused_current, amount)
        raise QuotaExceeded(  # budgets changed three times during one call: give up, retry
            "budgets are being changed; retry", reason="QUOTA_EXCEEDED", retry_after_seconds=1.0
        )

    async def settle(
        self, reservation: Reservation, actual: Decimal
    ) -> tuple[list[BudgetAlertInfo], list[Applied]]:
        """Replace the reservation by the real cost. Returns the alerts crossed for the first
        time and the limits now overspent (a breach: real cost above the reservation)."""
        values = await self.counters.settle(reservation.hold, settle_changes(reservation, actual))
        return await self.after_settle(reservation, values)

    async def after_settle(
        self, reservation: Reservation, values: Sequence[int | None]
    ) -> tuple[list[BudgetAlertInfo], list[Applied]]:
        """Alerts and breaches from the counters' values after settlement (None: a counter
        Redis lost, which tells nothing until it is seeded again)."""
        alerts: list[BudgetAlertInfo] = []
        breached: list[Applied] = []
        for applied, value in zip(reservation.applied, values, strict=False):
            if value is None or applied.limit is None or applied.counter.limit_nanos is None:
                continue
            limit_nanos = applied.counter.limit_nanos
            if value > limit_nanos:
                breached.append(applied)
            for threshold in (*applied.thresholds, 100):
                if limit_nanos == 0 or value * 100 < limit_nanos * threshold:
                    continue
                alert = await self._first_alert(reservation, applied, threshold, value)
                if alert is not None:
                    alerts.append(alert)
        return alerts, breached

    async def _first_alert(
        self, reservation: Reservation, applied: Applied, threshold: int, value: int
    ) -> BudgetAlertInfo | None:
        # Per limit: a limit raised or lowered alerts again at its own thresholds.
        name = f"{threshold}:{applied.counter.limit_nanos}"
        key = f"{applied.counter.alerts_key}:{name}"
        if key in self._alerted:
            return None
        first = await self.counters.first_alert(applied.counter, name)
        self._alerted.add(key)
        if len(self._alerted) > 100_000:
            self._alerted.clear()
        if not first:
            return None
        assert applied.limit is not None
        alert = BudgetAlertInfo(
            applied.scope,
            applied.subject,
            applied.period,
            threshold,
            from_nanos(value),
            applied.limit,
        )
        scope = reservation.scope
        try:
            await self.store.record_alert(
                AlertRecord(
                    reservation.tenant_id,
                    applied.scope,
                    applied.subject,
                    applied.period,
                    applied.period_id,
                    threshold,
                    alert.spent_usd,
                    applied.limit,
                    scope.conversation_id if scope else "",
                    scope.turn_id if scope else "",
                )
            )
        except Exception:  # the alert still reaches the stream; the record is best effort
            log.exception("could not record a budget alert")
        return alert

    async def exhausted(self, scope: TurnScope) -> None:
        """Refuse a new turn when any budget that applies is already spent (100%)."""
        tenant = scope.principal.tenant_id
        key = (tenant, scope.principal.name, scope.conversation_id)
        cached = self._cache.get(key)
        version, budgets = cached if cached is not None else await self._load(*key)
        for _ in range(3):
            applied = [
                a
                for a in self.applied(tenant, budgets, "", datetime.now(UTC))
                if a.counter.limit_nanos is not None
            ]
            # The version comes back with the counters: stale budgets are noticed for free.
            raw = await self.counters.read_with_version(tenant, [a.counter.key for a in applied])
            if raw[0] == version:
                break
            version, budgets = await self._load(*key)
        for a, value in zip(applied, raw[1], strict=True):
            if a.counter.limit_nanos is not None and value >= a.counter.limit_nanos:
                raise spent_up(a, value)

    async def spent(self, tenant: str, budget: BudgetLimits, subject: str) -> dict[str, Decimal]:
        """What the subject spent today, this month and in total (reservations included), and
        what is reserved now."""
        ids = period_ids(datetime.now(UTC))
        part = subject or "-"
        keys = [
            self.counters.counter_key(tenant, budget.scope, part, p, ids[p])
            for p in ("DAILY", "MONTHLY", "TOTAL")
        ] + [self.counters.counter_key(tenant, budget.scope, part, "reserved")]
        values = await self.counters.read(keys)
        return dict(
            zip(("today", "month", "total", "reserved"), map(from_nanos, values), strict=True)
        )


def settle_changes(reservation: Reservation, actual: Decimal) -> list[CounterChange]:
    """Counter changes that replace a reservation by the real cost: while Redis holds the
    reservation, the difference; once it lost it, the spending counters lack it and get the
    whole cost, and what is reserved has nothing to give back."""
    cost, amount = to_nanos(actual), reservation.amount_nanos
    changes = [CounterChange(a.counter, cost - amount, cost) for a in reservation.applied]
    changes += [CounterChange(c, -amount, 0) for c in reservation.reserved_counters]
    return changes


def no_room(a: Applied, current: int, amount: Decimal) -> QuotaExceeded:
    """A model call refused: the budget has no room for its reservation."""
    spent = from_nanos(current)
    return QuotaExceeded(
        f"the {a.period.lower().replace('_', '-')} budget of {_describe(a)} has no room for "
        f"this model call: {fmt(spent)} of {fmt(a.limit or Decimal(0))} USD used, and the call "
        f"may cost up to {fmt(amount)} USD",
        reason="BUDGET_EXHAUSTED",
        metadata={"budget": a.quota_subject},
        violations=[_violation(a, spent, f"this call needs up to {fmt(amount)} USD")],
    )


def spent_up(a: Applied, current: int) -> QuotaExceeded:
    """A new turn refused: a budget is at 100%."""
    spent = from_nanos(current)
    return QuotaExceeded(
        f"the {a.period.lower().replace('_', '-')} budget of {_describe(a)} is spent: "
        f"{fmt(spent)} of {fmt(a.limit or Decimal(0))} USD used; no new turn can start until "
        + ("it is raised" if a.period == "TOTAL" else "it is raised or the period resets"),
        reason="BUDGET_EXHAUSTED",
        metadata={"budget": a.quota_subject},
        violations=[_violation(a, spent, "the budget is spent")],
    )


def _describe(a: Applied) -> str:
    if a.scope == "TENANT":
        return "the tenant"
    return f"{a.scope.lower()} {a.subject!r}"


def _violation(a: Applied, spent: Decimal, why: str) -> QuotaViolation:
    return QuotaViolation(
        a.quota_subject,
        f"{a.period.lower()} limit {fmt(a.limit or Decimal(0))} USD, spent {fmt(spent)} USD; {why}",
    )
