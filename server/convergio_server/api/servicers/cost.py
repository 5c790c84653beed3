"""CostService: cost summary and ledger, budgets, circuit breakers, rate limits. Also builds
the cost guards (`ctx.components["guards"]`) that turns call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from convergio.common.v1 import common_pb2
from convergio.cost.v1 import cost_pb2, cost_pb2_grpc
from google.protobuf import duration_pb2, timestamp_pb2

from convergio_server.api.context import current_principal
from convergio_server.api.idempotency import once
from convergio_server.api.page_fit import FittingPage
from convergio_server.api.services import COMPONENT_SETUPS, FACTORIES, ServiceContext
from convergio_server.api.timestamps import timestamp_field
from convergio_server.domain import pagination
from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.costs.breaker import TENANT, Breakers, BreakerState, provider_name
from convergio_server.domain.costs.budgets import (
    Budgets,
    check_limit,
    check_thresholds,
)
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.costs.ledger import LedgerEntry, LedgerWriter
from convergio_server.domain.costs.money import fmt, parse_amount, parse_usd
from convergio_server.domain.costs.ports import BreakerThresholds, BudgetLimits
from convergio_server.domain.costs.prices import PriceTable
from convergio_server.domain.costs.ratelimits import RateLimits
from convergio_server.domain.costs.screening import Screener, load_rules
from convergio_server.domain.errors import InvalidArgument, NotFound, PermissionDenied
from convergio_server.storage.cost_counters import RedisCostCounters
from convergio_server.storage.costs import PgCostStore, Totals
from convergio_server.telemetry import watch_model_calls

log = logging.getLogger(__name__)
_OPERATORS = frozenset({Role.OPERATOR})
_SCOPES: dict[int, str] = {
    common_pb2.BUDGET_SCOPE_TENANT: "TENANT",
    common_pb2.BUDGET_SCOPE_USER: "USER",
    common_pb2.BUDGET_SCOPE_CONVERSATION: "CONVERSATION",
}
_SCOPE_PB: dict[str, Any] = {v: k for k, v in _SCOPES.items()}
_GROUPS = {
    cost_pb2.COST_GROUP_BY_UNSPECIFIED: None,
    cost_pb2.COST_GROUP_BY_AGENT: "AGENT",
    cost_pb2.COST_GROUP_BY_MODEL: "MODEL",
    cost_pb2.COST_GROUP_BY_USER: "USER",
    cost_pb2.COST_GROUP_BY_CONVERSATION: "CONVERSATION",
}
_KIND_PB = {
    "AGENT_REPLY": cost_pb2.MODEL_CALL_KIND_AGENT_REPLY,
    "SPEAKER_SELECTION": cost_pb2.MODEL_CALL_KIND_SPEAKER_SELECTION,
    "TOOL_CHOICE": cost_pb2.MODEL_CALL_KIND_TOOL_CHOICE,
}
_OUTCOME_PB = {
    "OK": cost_pb2.CALL_OUTCOME_OK,
    "ERROR": cost_pb2.CALL_OUTCOME_ERROR,
    "CANCELLED": cost_pb2.CALL_OUTCOME_CANCELLED,
    "CLIENT_GONE": cost_pb2.CALL_OUTCOME_CLIENT_GONE,
}
_PROVIDER_PB = {
    "offline": common_pb2.MODEL_PROVIDER_OFFLINE,
    "openai": common_pb2.MODEL_PROVIDER_OPENAI,
}
_STATE_PB = {
    "CLOSED": cost_pb2.CIRCUIT_STATE_CLOSED,
    "OPEN": cost_pb2.CIRCUIT_STATE_OPEN,
    "HALF_OPEN": cost_pb2.CIRCUIT_STATE_HALF_OPEN,
}
_CAUSE_PB = {
    "FAILURES": cost_pb2.CIRCUIT_OPEN_CAUSE_FAILURES,
    "BUDGET_BREACH": cost_pb2.CIRCUIT_OPEN_CAUSE_BUDGET_BREACH,
    "COST_SPIKES": cost_pb2.CIRCUIT_OPEN_CAUSE_COST_SPIKES,
}
_RATE_PB = {
    "TURNS_PER_MINUTE": cost_pb2.RATE_LIMIT_KIND_TURNS_PER_MINUTE,
    "CONVERSATIONS_PER_HOUR": cost_pb2.RATE_LIMIT_KIND_CONVERSATIONS_PER_HOUR,
}
_MAX_GROUPS = 1000


def _limit(text: str, setting: str) -> Decimal | None:
    """A default limit from the settings; empty = none. A bad value stops the server rather
    than silently leaving spending unlimited."""
    if not text.strip():
        return None
    value = parse_amount(text)
    if value is None:
        raise ValueError(
            f"{setting} must be a decimal amount such as 50.00 (at most 9 decimals) or empty, "
            f"got {text!r}"
        )
    return value


def default_budgets(settings: Any) -> list[BudgetLimits]:
    """The limits a new tenant starts with (the original system's, unless configured)."""
    daily = _limit(settings.cost_default_tenant_daily_usd, "cost_default_tenant_daily_usd")
    per_turn = _limit(settings.cost_default_tenant_per_turn_usd, "cost_default_tenant_per_turn_usd")
    conversation = _limit(
        settings.cost_default_conversation_total_usd, "cost_default_conversation_total_usd"
    )
    out: list[BudgetLimits] = []
    if daily is not None or per_turn is not None:
        out.append(BudgetLimits("TENANT", "", daily, None, None, per_turn))
    if conversation is not None:
        out.append(BudgetLimits("CONVERSATION", "", None, None, conversation, None))
    return out


def setup_guards(ctx: ServiceContext) -> None:
    """Build the cost guards once per server and share them as ctx.components["guards"]."""
    s = ctx.settings
    store = PgCostStore(ctx.infra.pool)
    counters = RedisCostCounters(ctx.infra.redis, ctx.infra.hot_redis, ctx.redis_keys)
    fallback_in = parse_usd(s.cost_fallback_input_usd)
    fallback_out = parse_usd(s.cost_fallback_output_usd)
    if fallback_in is None or fallback_out is None or fallback_in < 0 or fallback_out < 0:
        raise ValueError("cost_fallback_input_usd / _output_usd must be decimals >= 0")
    thresholds = BreakerThresholds(
        failure_threshold=s.breaker_failure_threshold,
        success_threshold=s.breaker_success_threshold,
        cool_down_ms=int(s.breaker_cool_down_seconds * 1000),
        spike_threshold=s.breaker_cost_spike_threshold,
        spike_factor=s.breaker_cost_spike_factor,
    )
    ledger = LedgerWriter(store, s.ledger_flush_interval_seconds, s.ledger_batch_size)
    guards = CostGuards(
        prices=PriceTable.load(s.cost_prices_file, fallback_in, fallback_out),
        budgets=Budgets(store, counters, default_budgets(s)),
        breakers=Breakers(counters, thresholds),
        limits=RateLimits(
            counters, s.rate_limit_turns_per_minute, s.rate_limit_conversations_per_hour
        ),
        screener=Screener(load_rules(s.screening_rules_file), s.screening_action),
        ledger=ledger,
        default_max_output_tokens=s.cost_default_max_output_tokens,
        gate=lambda: ctx.components.get("flags"),
    )
    watch_model_calls(guards.call_stats)
    ctx.components["guards"] = guards
    ctx.components["cost_store"] = store
    ctx.closers.append(ledger.close)


COMPONENT_SETUPS.append(setup_guards)


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _totals(t: Totals) -> cost_pb2.CostTotals:
    return cost_pb2.CostTotals(
        usage=common_pb2.Usage(
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            cached_tokens=t.cached_tokens,
            model_calls=t.calls,
        ),
        cost_usd=fmt(t.cost),
    )


def _entry(e: LedgerEntry) -> cost_pb2.LedgerEntry:
    latency = duration_pb2.Duration()
    latency.FromMilliseconds(e.latency_ms)
    error_reason: Any = 0
    if e.error_reason:
        try:
            error_reason = common_pb2.ErrorReason.Value(f"ERROR_REASON_{e.error_reason}")
        except ValueError:
            error_reason = common_pb2.ERROR_REASON_INTERNAL
    return cost_pb2.LedgerEntry(
        entry_id=e.entry_id,
        time=_ts(e.time),
        user=e.principal,
        conversation_id=e.conversation_id,
        turn_id=e.turn_id,
        execution_id=e.execution_id,
        step_id=e.step_id,
        agent=e.agent,
        provider=_PROVIDER_PB.get(e.provider.split(":", 1)[0], common_pb2.MODEL_PROVIDER_OPENAI),
        model=e.model,
        call_kind=_KIND_PB.get(e.call_kind, cost_pb2.MODEL_CALL_KIND_UNSPECIFIED),
        prompt_tokens=e.prompt_tokens,
        completion_tokens=e.completion_tokens,
        cached_tokens=e.cached_tokens,
        cost_usd=fmt(e.cost_usd),
        price_source=(
            cost_pb2.PRICE_SOURCE_FALLBACK
            if e.price_source == "FALLBACK"
            else cost_pb2.PRICE_SOURCE_TABLE
        ),
        price=cost_pb2.ModelPrice(
            input_per_million_tokens_usd=fmt(e.price.input),
            output_per_million_tokens_usd=fmt(e.price.output),
            cached_input_per_million_tokens_usd=fmt(e.price.cached_input),
        ),
        latency=latency,
        outcome=_OUTCOME_PB.get(e.outcome, cost_pb2.CALL_OUTCOME_UNSPECIFIED),
        error_reason=error_reason,
    )


def _opt(value: Decimal | None) -> str:
    return "" if value is None else fmt(value)


class CostServicer(cost_pb2_grpc.CostServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.guards: CostGuards = ctx.components["guards"]
        self.store: PgCostStore = ctx.components["cost_store"]

    @property
    def budgets(self) -> Budgets:
        return self.guards.budgets

    @property
    def breakers(self) -> Breakers:
        return self.guards.breakers

    # Who may see what.
    @staticmethod
    def _user_filter(principal: Principal, requested: str, field: str) -> str:
        if principal.has_any(_OPERATORS):
            return requested
        if requested and requested != principal.name:
            raise PermissionDenied(
                f"a member sees only their own costs; leave {field} empty or use "
                f"{principal.name!r}, or use an operator key"
            )
        return principal.name

    async def GetCostSummary(
        self, request: cost_pb2.GetCostSummaryRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.GetCostSummaryResponse:
        principal = current_principal()
        if request.group_by not in _GROUPS:
            raise InvalidArgument.for_field("group_by", "use AGENT, MODEL, USER or CONVERSATION")
        if request.group_limit < 0:
            raise InvalidArgument.for_field("group_limit", "must not be negative")
        if request.group_limit > _MAX_GROUPS:
            raise InvalidArgument.for_field("group_limit", "must be at most 1000")
        user = self._user_filter(principal, request.user, "user")
        now = datetime.now(UTC)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        today, month, groups, truncated = await self.store.summary(
            principal.tenant_id,
            user=user,
            conversation_id=request.conversation_id,
            group=_GROUPS[request.group_by],
            day_start=day_start,
            month_start=day_start.replace(day=1),
            group_limit=request.group_limit or 100,
        )
        return cost_pb2.GetCostSummaryResponse(
            today=_totals(today),
            month=_totals(month),
            groups=[
                cost_pb2.CostGroup(key=g.key, today=_totals(g.today), month=_totals(g.month))
                for g in groups
            ],
            groups_truncated=truncated,
            as_of_time=_ts(now),
        )

    async def ListLedgerEntries(
        self, request: cost_pb2.ListLedgerEntriesRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.ListLedgerEntriesResponse:
        principal = current_principal()
        user = self._user_filter(principal, request.user, "user")
        start = timestamp_field(request, "start_time")
        end = timestamp_field(request, "end_time")
        if start is not None and end is not None and end < start:
            raise InvalidArgument.for_field("end_time", "must not be before start_time")
        filters = [user, request.conversation_id, str(start), str(end)]
        cursor = pagination.decode_token(request.page_token, filters)
        after = None
        if cursor is not None:
            try:
                after = (datetime.fromisoformat(str(cursor.after[0])), str(cursor.after[1]))
            except (ValueError, IndexError):
                raise InvalidArgument.for_field(
                    "page_token", "is not a token this list returned; start again without it"
                ) from None
        size = pagination.page_size(request.page_size)
        entries = await self.store.list_entries(
            principal.tenant_id,
            user=user,
            conversation_id=request.conversation_id,
            start=start,
            end=end,
            after=after,
            limit=size + 1,
        )
        more = len(entries) > size
        page = FittingPage(_entry, self.ctx.settings.max_message_bytes)
        entries, cut = pagination.keep_fitting(entries[:size], page)
        token = ""
        if more or cut:
            last = entries[-1]
            token = pagination.encode_token([last.time.isoformat(), last.entry_id], filters)
        return cost_pb2.ListLedgerEntriesResponse(entries=page.messages, next_page_token=token)

    # Budgets.
    async def _scope_subject(
        self, principal: Principal, scope_value: int, subject: str, prefix: str
    ) -> tuple[str, str]:
        scope = _SCOPES.get(scope_value)
        if scope is None:
            raise InvalidArgument.for_field(
                f"{prefix}scope", "is required: TENANT, USER or CONVERSATION"
            )
        if subject != subject.strip():
            # " " used to be taken as empty: the scope's default for everyone.
            raise InvalidArgument.for_field(
                f"{prefix}subject",
                "must not start or end with white space; leave it empty for the default of "
                "the scope",
            )
        if scope == "TENANT" and subject:
            raise InvalidArgument.for_field(f"{prefix}subject", "must be empty for TENANT")
        if len(subject) > 200:
            raise InvalidArgument.for_field(f"{prefix}subject", "must be at most 200 characters")
        if scope == "CONVERSATION" and subject:
            if not await self.store.conversation_exists(principal.tenant_id, subject):
                raise NotFound(
                    f"no conversation {subject!r} in this tenant",
                    metadata={"conversation_id": subject},
                )
        return scope, subject

    async def _budget_pb(
        self, tenant: str, budget: BudgetLimits, subject: str, inherited: bool
    ) -> cost_pb2.Budget:
        spent = await self.budgets.spent(tenant, budget, subject)
        return cost_pb2.Budget(
            scope=_SCOPE_PB[budget.scope],
            subject=subject,
            daily_limit_usd=_opt(budget.daily),
            monthly_limit_usd=_opt(budget.monthly),
            total_limit_usd=_opt(budget.total),
            per_turn_limit_usd=_opt(budget.per_turn),
            alert_thresholds_percent=list(budget.thresholds),
            spent_today_usd=fmt(spent["today"]),
            spent_month_usd=fmt(spent["month"]),
            spent_total_usd=fmt(spent["total"]),
            reserved_usd=fmt(spent["reserved"]),
            inherited=inherited,
            update_time=_ts(budget.update_time),
            updated_by=budget.updated_by,
        )

    async def GetBudget(
        self, request: cost_pb2.GetBudgetRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.GetBudgetResponse:
        principal = current_principal()
        scope, subject = await self._scope_subject(principal, request.scope, request.subject, "")
        if not principal.has_any(_OPERATORS) and scope == "USER" and subject != principal.name:
            raise PermissionDenied(
                "a member may read the tenant budget, their own USER budget and conversation "
                "budgets; use an operator key for other users"
            )
        tenant = principal.tenant_id
        await self.budgets.ensure_seeded(tenant)
        own = await self.store.get(tenant, scope, subject)
        inherited = own is None and bool(subject)
        budget = own
        if budget is None and subject:
            budget = await self.store.get(tenant, scope, "")
        if budget is None:
            budget = BudgetLimits(scope, subject, None, None, None, None)
            inherited = bool(subject)
        return cost_pb2.GetBudgetResponse(
            budget=await self._budget_pb(tenant, budget, subject, inherited)
        )

    async def ListBudgets(
        self, request: cost_pb2.ListBudgetsRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.ListBudgetsResponse:
        principal = current_principal()
        principal.require(_OPERATORS, "ListBudgets")
        scope = _SCOPES.get(request.scope) if request.scope else None
        if request.scope and scope is None:
            raise InvalidArgument.for_field("scope", "use TENANT, USER or CONVERSATION")
        tenant = principal.tenant_id
        await self.budgets.ensure_seeded(tenant)
        cursor = pagination.decode_token(request.page_token, [scope])
        after = None
        if cursor is not None:
            if len(cursor.after) != 2:
                raise InvalidArgument.for_field("page_token", "is not a token this list returned")
            after = (str(cursor.after[0]), str(cursor.after[1]))
        size = pagination.page_size(request.page_size)
        rows = await self.store.list_budgets(tenant, scope, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode_token([rows[-1].scope, rows[-1].subject], [scope])
        return cost_pb2.ListBudgetsResponse(
            budgets=[await self._budget_pb(tenant, b, b.subject, False) for b in rows],
            next_page_token=token,
        )

    async def SetBudget(
        self, request: cost_pb2.SetBudgetRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.SetBudgetResponse:
        principal = current_principal()
        b = request.budget
        scope, subject = await self._scope_subject(principal, b.scope, b.subject, "budget.")
        limits: dict[str, Decimal | None] = {}
        for name in ("daily_limit_usd", "monthly_limit_usd", "total_limit_usd",
                     "per_turn_limit_usd"):  # fmt: skip
            text = getattr(b, name).strip()
            value = parse_amount(text) if text else None
            if text and value is None:
                raise InvalidArgument.for_field(
                    f"budget.{name}",
                    f'{text[:40]!r} is not an amount such as "50.00" (ASCII digits, at most '
                    "9 decimals)",
                )
            check_limit(f"budget.{name}", value)
            limits[name] = value
        thresholds = check_thresholds(
            "budget.alert_thresholds_percent", list(b.alert_thresholds_percent)
        )
        tenant = principal.tenant_id

        async def act() -> cost_pb2.SetBudgetResponse:
            await self.budgets.ensure_seeded(tenant)
            stored = await self.store.upsert(
                tenant,
                BudgetLimits(
                    scope,
                    subject,
                    limits["daily_limit_usd"],
                    limits["monthly_limit_usd"],
                    limits["total_limit_usd"],
                    limits["per_turn_limit_usd"],
                    thresholds,
                ),
                principal.name,
            )
            await self._changed(tenant)
            return cost_pb2.SetBudgetResponse(
                budget=await self._budget_pb(tenant, stored, subject, False)
            )

        return await once(
            self.ctx.idempotency, tenant, "SetBudget", request, cost_pb2.SetBudgetResponse, act
        )

    async def _changed(self, tenant: str) -> None:
        await self.budgets.changed(tenant)

    async def DeleteBudget(
        self, request: cost_pb2.DeleteBudgetRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.DeleteBudgetResponse:
        principal = current_principal()
        scope, subject = await self._scope_subject(principal, request.scope, request.subject, "")
        tenant = principal.tenant_id
        await self.budgets.ensure_seeded(tenant)
        if not await self.store.delete(tenant, scope, subject):
            raise NotFound(
                f"no {scope.lower()} budget {'default' if not subject else repr(subject)} was set",
                metadata={"budget": f"{scope.lower()}:{subject}"},
            )
        await self._changed(tenant)
        return cost_pb2.DeleteBudgetResponse()

    # Circuit breakers.
    def _breaker_name(self, scope: int, provider: str) -> str:
        if scope == cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT:
            if provider:
                raise InvalidArgument.for_field("provider", "must be empty for TENANT scope")
            return TENANT
        if scope == cost_pb2.CIRCUIT_BREAKER_SCOPE_PROVIDER:
            if not provider.strip() or len(provider) > 200:
                raise InvalidArgument.for_field(
                    "provider", 'names the provider endpoint for PROVIDER scope, e.g. "openai"'
                )
            return provider_name(provider.strip())
        raise InvalidArgument.for_field("scope", "is required: TENANT or PROVIDER")

    def _breaker_pb(self, state: BreakerState) -> cost_pb2.CircuitBreaker:
        t = self.breakers.thresholds
        cool_down = duration_pb2.Duration()
        cool_down.FromMilliseconds(t.cool_down_ms)
        return cost_pb2.CircuitBreaker(
            scope=(
                cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT
                if state.scope == "TENANT"
                else cost_pb2.CIRCUIT_BREAKER_SCOPE_PROVIDER
            ),
            provider=state.provider,
            state=_STATE_PB[state.state],
            consecutive_failures=state.consecutive_failures,
            cost_spikes=state.cost_spikes,
            half_open_successes=state.half_open_successes,
            moving_average_cost_usd=fmt(state.moving_average_usd),
            open_cause=_CAUSE_PB.get(state.open_cause, cost_pb2.CIRCUIT_OPEN_CAUSE_UNSPECIFIED),
            reason=state.reason,
            opened_time=_ts(state.opened_time),
            next_probe_time=_ts(state.next_probe_time),
            settings=cost_pb2.CircuitBreakerSettings(
                failure_threshold=t.failure_threshold,
                cost_spike_threshold=t.spike_threshold,
                cost_spike_factor=t.spike_factor,
                cool_down=cool_down,
                success_threshold=t.success_threshold,
            ),
        )

    async def GetCircuitBreaker(
        self, request: cost_pb2.GetCircuitBreakerRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.GetCircuitBreakerResponse:
        principal = current_principal()
        name = self._breaker_name(request.scope, request.provider)
        state = await self.breakers.get(principal.tenant_id, name)
        return cost_pb2.GetCircuitBreakerResponse(circuit_breaker=self._breaker_pb(state))

    async def ListCircuitBreakers(
        self, request: cost_pb2.ListCircuitBreakersRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.ListCircuitBreakersResponse:
        principal = current_principal()
        principal.require(_OPERATORS, "ListCircuitBreakers")
        cursor = pagination.decode_token(request.page_token, ["breakers"])
        names = await self.breakers.names(principal.tenant_id)
        if cursor is not None:
            last = str(cursor.after[0]) if cursor.after else ""
            names = [n for n in names if (n != TENANT, n) > (last != TENANT, last)]
        size = pagination.page_size(request.page_size)
        # Only breakers with state: not CLOSED, or with counters above zero.
        states: list[BreakerState] = []
        more = False
        for name in names:
            state = await self.breakers.get(principal.tenant_id, name)
            if state.state == "CLOSED" and not (
                state.consecutive_failures or state.cost_spikes or state.half_open_successes
            ):
                continue
            if len(states) == size:
                more = True
                break
            states.append(state)
        token = ""
        if more and states:
            final = states[-1]
            final_name = provider_name(final.provider) if final.scope == "PROVIDER" else TENANT
            token = pagination.encode_token([final_name], ["breakers"])
        return cost_pb2.ListCircuitBreakersResponse(
            circuit_breakers=[self._breaker_pb(s) for s in states], next_page_token=token
        )

    async def ResetCircuitBreaker(
        self, request: cost_pb2.ResetCircuitBreakerRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.ResetCircuitBreakerResponse:
        principal = current_principal()
        name = self._breaker_name(request.scope, request.provider)
        if len(request.reason) > 500:
            raise InvalidArgument.for_field("reason", "must be at most 500 characters")
        before = await self.breakers.get(principal.tenant_id, name)
        state = await self.breakers.reset(principal.tenant_id, name)
        log.info(
            "circuit breaker %s of tenant %s reset by %s (was %s): %s",
            name, principal.tenant_id, principal.name, before.state, request.reason or "-",
        )  # fmt: skip
        await self.store.record_breaker_event(
            principal.tenant_id, before.scope, before.provider, "RESET", before.open_cause,
            request.reason, principal.name,
        )  # fmt: skip
        return cost_pb2.ResetCircuitBreakerResponse(circuit_breaker=self._breaker_pb(state))

    async def GetRateLimitStatus(
        self, request: cost_pb2.GetRateLimitStatusRequest, context: grpc.aio.ServicerContext
    ) -> cost_pb2.GetRateLimitStatusResponse:
        principal = current_principal()
        user = request.user.strip() or principal.name
        if user != principal.name and not principal.has_any(_OPERATORS):
            raise PermissionDenied("another user's rate limits need the operator role")
        statuses = await self.guards.limits.status(principal.tenant_id, user)
        out = []
        for s in statuses:
            window = duration_pb2.Duration(seconds=s.limit.window_seconds)
            out.append(
                cost_pb2.RateLimitStatus(
                    kind=_RATE_PB[s.limit.kind],
                    window=window,
                    limit=s.limit.limit,
                    used=s.used,
                    remaining=s.remaining,
                    reset_time=_ts(s.reset_time),
                )
            )
        return cost_pb2.GetRateLimitStatusResponse(user=user, limits=out)


FACTORIES["convergio.cost.v1.CostService"] = CostServicer
