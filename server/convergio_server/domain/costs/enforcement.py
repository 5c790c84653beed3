"""The cost and safety guards of a turn (the `Guards` contract of domain/guards.py):
screening, rate limits, circuit breakers and budgets before a turn, and per model call
reservation, settlement and the ledger.

Redis holds every counter. When it cannot be reached the guards fail closed: the turn or call
is refused with UNAVAILABLE, because running it would mean spending without a budget check.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from convergio_server.domain.auth import Principal
from convergio_server.domain.costs.billing import BilledModelClient
from convergio_server.domain.costs.breaker import TENANT, Breakers, endpoint_key, provider_name
from convergio_server.domain.costs.budgets import (
    Budgets,
    Reservation,
    no_room,
    settle_changes,
    spent_up,
)
from convergio_server.domain.costs.call_stats import ModelCallStats
from convergio_server.domain.costs.ledger import LedgerEntry, LedgerWriter
from convergio_server.domain.costs.money import to_nanos
from convergio_server.domain.costs.prices import PriceQuote, PriceTable, call_cost
from convergio_server.domain.costs.ratelimits import RateLimits
from convergio_server.domain.costs.screening import Screener
from convergio_server.domain.errors import Unavailable, domain_cause
from convergio_server.domain.events.failures import error_event
from convergio_server.domain.features import COST_SAFETY, FeatureGate
from convergio_server.domain.guards import Admission, CallInfo, ScreenedResult, TurnScope
from convergio_server.domain.models.errors import ModelError

log = logging.getLogger(__name__)

# Model errors that say the endpoint is unwell, and so count toward its breaker. The others
# (a bad key, an unknown model, a request or prompt the endpoint rejects, a selection that
# cannot be served) are the caller's or the configuration's: the endpoint answered, or was
# never asked.
_PROVIDER_FAULTS = frozenset(
    {"timeout", "rate_limited", "unavailable", "server_error", "invalid_response"}
)


def _error_reason(error: BaseException) -> str:
    """The reason the turn's Error event gives for `error`: a failed call's ledger entry
    must say what the turn that made it said."""
    return error_event(error).reason


def _breaker_op(outcome: str, error: BaseException | None) -> str:
    """How a finished call moves its endpoint's breaker: "success" resets the failure count,
    "failure" counts one, "release" neither (it only frees a half-open probe slot)."""
    if outcome == "OK":
        return "success"
    if outcome != "ERROR" or error is None:  # cancelled: not the endpoint's doing
        return "release"
    cause = domain_cause(error)
    if isinstance(cause, ModelError):
        return "failure" if cause.kind in _PROVIDER_FAULTS else "release"
    if cause is not None:  # refused by the platform itself
        return "release"
    return "failure"  # a client that raised something of its own: the endpoint failed it


@dataclass
class CallTicket:
    """A model call in flight: what was reserved for it and when it started."""

    call: CallInfo
    quote: PriceQuote
    prompt_estimate: int
    reservation: Reservation | None
    started: float
    guarded: bool
    breaker: str  # the name of the provider endpoint's breaker


class CostGuards:
    def __init__(
        self,
        *,
        prices: PriceTable,
        budgets: Budgets,
        breakers: Breakers,
        limits: RateLimits,
        screener: Screener,
        ledger: LedgerWriter,
        default_max_output_tokens: int,
        gate: Callable[[], FeatureGate | None] = lambda: None,
    ) -> None:
        self.prices = prices
        self.budgets = budgets
        self.breakers = breakers
        self.limits = limits
        self.screener = screener
        self.ledger = ledger
        self.call_stats = ModelCallStats()
        self.default_max_output_tokens = default_max_output_tokens
        self._gate = gate

    def active(self, principal: Principal) -> bool:
        """The `cost_safety` flag, once flags exist; on until then. Billing (the ledger)
        happens either way."""
        gate = self._gate()
        if gate is None:
            return True
        # Fail safe: a flag that cannot be evaluated (missing, not loaded) leaves the guards on;
        # only an explicit "off" turns them off.
        evaluate = getattr(gate, "evaluate", None)
        if evaluate is not None:
            result: Any = evaluate(principal, COST_SAFETY)
            if str(getattr(result, "reason", "")) == "ERROR":
                return True
            return bool(result.value)
        return gate.enabled(principal, COST_SAFETY)

    # The Guards contract.
    async def conversation_created(self, principal: Principal) -> None:
        if not self.active(principal):
            return
        await self.limits.take(principal.tenant_id, principal.name, self.limits.conversations)

    async def conversation_stored(self, principal: Principal, conversation_id: str) -> None:
        if not self.active(principal):
            return
        # The budgets in force for its first turn too, which would otherwise look them up
        # before it is admitted.
        started, _ = await asyncio.gather(
            self.budgets.start_conversation(principal.tenant_id, conversation_id),
            self.budgets.resolved(TurnScope(principal, conversation_id, "")),
            return_exceptions=True,
        )
        if isinstance(started, Exception):  # the first model call seeds them from the ledger
            log.debug("conversation %s: budget counters not started: %s", conversation_id, started)

    async def admit_turn(
        self, scope: TurnScope, content: str, documents: Sequence[str] = ()
    ) -> Admission:
        principal = scope.principal
        if not self.active(principal):
            return Admission()
        findings = self.screener.check_user_message(content)
        # Documents reach every agent as the message does: screened the same way.
        for index, document in enumerate(documents):
            findings += self.screener.check_user_message(
                document, f"documents[{index}].content", f"document {index + 1}"
            )
        tenant, user = principal.tenant_id, principal.name
        budgets, limit = self.budgets, self.limits.turns
        rate_key = budgets.counters.rate_key(tenant, limit.kind.lower(), user)
        rate_member = secrets.token_hex(8)
        # One round trip: budgets spent?, the rate limit, the tenant breaker, in that
        # order; nothing is counted unless all of them let the turn through.
        for attempt in range(3):
            version, resolved = await budgets.resolved(scope, reload=attempt > 0)
            applied = [
                a
                for a in budgets.applied(tenant, resolved, "", datetime.now(UTC))
                if a.counter.limit_nanos is not None
            ]
            result = await budgets.counters.admit(
                tenant, version, [a.counter for a in applied], rate_key, limit.limit,
                limit.window_seconds * 1000, TENANT, self.breakers.thresholds,
                self.breakers.probe_ms, rate_member,
            )  # fmt: skip
            if result.stale_version is None:
                break
        if result.budget_index is not None:
            raise spent_up(applied[result.budget_index], result.budget_current)
        if result.rate is not None:
            raise self.limits.refusal(user, limit, result.rate)
        if result.breaker is not None:
            raise self.breakers.refusal(TENANT, result.breaker)
        if not result.ok:
            raise Unavailable("budgets are being changed; retry", retry_after_seconds=1.0)
        return Admission(
            flagged_input=[f.rule for f in findings],
            rate_slot=(rate_key, rate_member),
            probe=result.probe,
        )

    async def turn_not_started(self, scope: TurnScope, admission: Admission) -> None:
        try:
            if admission.rate_slot is not None:
                await self.budgets.counters.rate_give_back(*admission.rate_slot)
            if admission.probe:
                await self.breakers.release(scope.principal.tenant_id, TENANT)
        except Exception:  # the slot expires with its window, the probe with its time
            log.warning("could not give back a turn's admission", exc_info=True)

    def wrap_model_client(self, client: Any, call: CallInfo) -> Any:
        return BilledModelClient(client, call, self)

    async def screen_tool_result(self, scope: TurnScope, content: str) -> ScreenedResult:
        if not self.active(scope.principal):
            return ScreenedResult(content)
        cleaned, found = self.screener.clean_tool_result(content)
        rules = tuple(dict.fromkeys(f.rule for f in found))
        return ScreenedResult(cleaned, rules, blocked=self.screener.withholds(found))

    async def turn_finished(
        self,
        scope: TurnScope,
        cost_usd: Decimal,
        failed: bool,
        ordinary: bool = True,
        *,
        neutral: bool = False,
    ) -> None:
        principal = scope.principal
        if not self.active(principal):
            return
        tenant = principal.tenant_id
        try:
            if neutral:
                await self.breakers.release(tenant, TENANT)
            elif failed:
                await self.breakers.failure(tenant, TENANT, f"turn {scope.turn_id} failed")
            elif ordinary:
                await self.breakers.turn_succeeded(tenant, cost_usd)
            else:  # not a failure, but its cost says nothing of what turns cost
                await self.breakers.success(tenant, TENANT)
        except Unavailable:
            log.warning("could not update the tenant circuit breaker", exc_info=True)

    # Per model call (used by BilledModelClient).
    async def begin_call(
        self, call: CallInfo, prompt_tokens: int, max_output: int, breaker: str = ""
    ) -> CallTicket:
        """`breaker` names the provider endpoint's breaker (`provider_name(endpoint_key(...))`);
        by default the one of the provider's own endpoint."""
        quote = self.prices.quote(call.provider, call.model)
        guarded = self.active(call.scope.principal)
        name = breaker or provider_name(endpoint_key(call.provider or "offline"))
        reservation = None
        if guarded:
            reservation = await self._reserve(
                call, call_cost(quote.price, prompt_tokens, max_output), name
            )
        return CallTicket(call, quote, prompt_tokens, reservation, time.monotonic(), guarded, name)

    async def _reserve(self, call: CallInfo, amount: Decimal, name: str) -> Reservation:
        """One round trip: room in every budget, the provider breaker, then the reservation."""
        scope, budgets = call.scope, self.budgets
        tenant = scope.principal.tenant_id
        nanos = to_nanos(amount)
        hold = budgets.counters.hold_key(tenant)
        reload = False
        for _ in range(6):  # seeds every missing counter at once; budgets may change meanwhile
            version, resolved = await budgets.resolved(scope, reload=reload)
            applied = budgets.applied(tenant, resolved, scope.turn_id, datetime.now(UTC))
            reserved = budgets.reserved_counters(tenant, resolved)
            result = await budgets.counters.call_begin(
                tenant, version, nanos, [a.counter for a in applied] + reserved, name,
                self.breakers.thresholds, self.breakers.probe_ms, hold,
            )  # fmt: skip
            reload = result.stale_version is not None
            if result.missing:
                # Calls this process settled without those counters (Redis lost them) are
                # counted by the ledger alone: it must have them before it is read.
                await self.ledger.write_uncounted()
                await budgets.seed(tenant, [applied[i] for i in result.missing])
            elif not reload:
                break
        if result.budget_index is not None:
            raise no_room(applied[result.budget_index], result.budget_current, amount)
        if result.breaker is not None:
            raise self.breakers.refusal(name, result.breaker)
        if not result.ok:
            raise Unavailable("budgets are being changed; retry", retry_after_seconds=1.0)
        return Reservation(tenant, nanos, applied, reserved, scope, hold)

    async def end_call(
        self,
        ticket: CallTicket,
        kind: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        call = ticket.call
        scope = call.scope
        cost = call_cost(ticket.quote.price, prompt_tokens, completion_tokens, cached_tokens)
        reason = _error_reason(error) if error is not None else ""
        provider, model = call.provider or "offline", call.model or "offline"
        seconds = time.monotonic() - ticket.started
        self.call_stats.call_ended(provider, model, outcome, seconds, cost)
        entry = LedgerEntry(
            entry_id=str(uuid.uuid4()),
            tenant_id=scope.principal.tenant_id,
            time=datetime.now(UTC),
            principal=scope.principal.name,
            conversation_id=scope.conversation_id,
            turn_id=scope.turn_id,
            execution_id=scope.execution_id,
            step_id=scope.step_id,
            # The speaker selector is no agent (the API reports it as "").
            agent="" if kind == "SPEAKER_SELECTION" else call.agent,
            provider=provider,
            model=model,
            call_kind=kind,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cost_usd=cost,
            price_source=ticket.quote.source.upper(),
            price=ticket.quote.price,
            latency_ms=int(seconds * 1000),
            outcome=outcome,
            error_reason=reason,
        )
        if not ticket.guarded:
            self.ledger.add(entry)
            return
        tenant, name = scope.principal.tenant_id, ticket.breaker
        op = _breaker_op(outcome, error)
        detail = f"{type(error).__name__}: {error}"[:200] if op == "failure" else ""
        reservation = ticket.reservation
        changes = settle_changes(reservation, cost) if reservation is not None else []
        hold = reservation.hold if reservation is not None else ""
        values: list[int | None] = []
        try:
            try:
                values = await self.budgets.counters.call_end(
                    tenant, name, op, detail, self.breakers.thresholds, hold, changes
                )
            finally:
                # Queued only once the settlement is done: a seed that reads this call from
                # the ledger then comes after it, so the counters that seed creates were
                # missing when the settlement ran, and the call is counted once.
                self.ledger.add(entry, uncounted=None in values)
            if reservation is None:
                return
            alerts, breached = await self.budgets.after_settle(reservation, values)
            if breached:
                await self.breakers.trip(
                    tenant,
                    TENANT,
                    "BUDGET_BREACH",
                    f"{breached[0].quota_subject} went past its limit",
                )
            if scope.alerts is not None:
                for alert in alerts:
                    try:
                        await scope.alerts(alert)
                    except Exception:
                        log.exception("the turn's alert sink failed")
        except Unavailable as exc:
            # The reservation stays counted (the safe side); the ledger has the real cost.
            # An outage says what it is: no traceback per call.
            log.warning("could not settle a model call's reservation: %s", exc)
