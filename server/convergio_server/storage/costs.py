"""PostgreSQL side of the cost guards: the ledger, budgets, budget alerts and breaker events.
Every query filters by tenant_id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from convergio_server.domain.costs.ledger import LedgerEntry
from convergio_server.domain.costs.ports import AlertRecord, BudgetLimits
from convergio_server.domain.costs.prices import ModelPrice
from convergio_server.storage.postgres import Pool

_LEDGER_COLUMNS = (
    "tenant_id", "id", "time", "principal", "conversation_id", "turn_id", "execution_id",
    "step_id", "agent", "provider", "model", "call_kind", "prompt_tokens", "completion_tokens",
    "cached_tokens", "cost_usd", "price_source", "input_price", "output_price",
    "cached_input_price", "latency_ms", "outcome", "error_reason",
)  # fmt: skip

_INSERT_LEDGER = f"""
INSERT INTO cost_ledger ({", ".join(_LEDGER_COLUMNS)})
SELECT * FROM unnest(
    $1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[],
    $15::bigint[], $16::numeric[], $17::text[], $18::numeric[], $19::numeric[], $20::numeric[],
    $21::bigint[], $22::text[], $23::text[])
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class Totals:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    calls: int
    cost: Decimal


@dataclass(frozen=True)
class GroupTotals:
    key: str
    today: Totals
    month: Totals


def _row_to_budget(row: asyncpg.Record) -> BudgetLimits:
    return BudgetLimits(
        scope=row["scope"],
        subject=row["subject"],
        daily=row["daily_limit"],
        monthly=row["monthly_limit"],
        total=row["total_limit"],
        per_turn=row["per_turn_limit"],
        thresholds=tuple(row["alert_thresholds"]),
        update_time=row["update_time"],
        updated_by=row["updated_by"],
    )


def _row_to_entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        entry_id=str(row["id"]),
        tenant_id=row["tenant_id"],
        time=row["time"],
        principal=row["principal"],
        conversation_id=row["conversation_id"],
        turn_id=row["turn_id"],
        execution_id=row["execution_id"],
        step_id=row["step_id"],
        agent=row["agent"],
        provider=row["provider"],
        model=row["model"],
        call_kind=row["call_kind"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_tokens=row["cached_tokens"],
        cost_usd=row["cost_usd"],
        price_source=row["price_source"],
        price=ModelPrice(row["input_price"], row["output_price"], row["cached_input_price"]),
        latency_ms=row["latency_ms"],
        outcome=row["outcome"],
        error_reason=row["error_reason"],
    )


class PgCostStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # Ledger.
    async def insert_entries(self, entries: Sequence[LedgerEntry]) -> None:
        columns: list[list[Any]] = [[] for _ in _LEDGER_COLUMNS]
        for e in entries:
            values = (
                e.tenant_id, uuid.UUID(e.entry_id), e.time, e.principal, e.conversation_id,
                e.turn_id, e.execution_id, e.step_id, e.agent, e.provider, e.model, e.call_kind,
                e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cost_usd,
                e.price_source, e.price.input, e.price.output, e.price.cached_input,
                e.latency_ms, e.outcome, e.error_reason,
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await self.pool.execute(_INSERT_LEDGER, *columns)

    async def list_entries(
        self,
        tenant: str,
        *,
        user: str,
        conversation_id: str,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        clauses = ["tenant_id = $1"]
        args: list[Any] = [tenant]

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if user:
            add("principal = ?", user)
        if conversation_id:
            add("conversation_id = ?", conversation_id)
        if start is not None:
            add("time >= ?", start)
        if end is not None:
            add("time < ?", end)
        if after is not None:
            args += [after[0], uuid.UUID(after[1])]
            clauses.append(f"(time, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self.pool.fetch(
            f"SELECT * FROM cost_ledger WHERE {' AND '.join(clauses)} "
            f"ORDER BY time DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_row_to_entry(r) for r in rows]

    async def summary(
        self,
        tenant: str,
        *,
        user: str,
        conversation_id: str,
        group: str | None,
        day_start: datetime,
        month_start: datetime,
        group_limit: int,
    ) -> tuple[Totals, Totals, list[GroupTotals], bool]:
        """Totals for today and this month, and per group (highest month cost first)."""
        clauses = ["tenant_id = $1", "time >= $2"]
        args: list[Any] = [tenant, month_start, day_start]
        if user:
            args.append(user)
            clauses.append(f"principal = ${len(args)}")
        if conversation_id:
            args.append(conversation_id)
            clauses.append(f"conversation_id = ${len(args)}")
        key_sql = {
            None: "''",
            "AGENT": "agent",
            "MODEL": "provider || '/' || model",
            "USER": "principal",
            "CONVERSATION": "conversation_id",
        }[group]
        sums = []
        for label, cond in (("d", "time >= $3"), ("m", "true")):
            sums += [
                f"coalesce(sum(prompt_tokens) FILTER (WHERE {cond}), 0) AS {label}_prompt",
                f"coalesce(sum(completion_tokens) FILTER (WHERE {cond}), 0) AS {label}_completion",
                f"coalesce(sum(cached_tokens) FILTER (WHERE {cond}), 0) AS {label}_cached",
                f"count(*) FILTER (WHERE {cond}) AS {label}_calls",
                f"coalesce(sum(cost_usd) FILTER (WHERE {cond}), 0) AS {label}_cost",
            ]
        sql = (
            f"SELECT {key_sql} AS key, {', '.join(sums)} FROM cost_ledger "
            f"WHERE {' AND '.join(clauses)} GROUP BY 1 ORDER BY m_cost DESC, key"
        )
        rows = await self.pool.fetch(sql, *args)

        def totals(row: asyncpg.Record | None, label: str) -> Totals:
            if row is None:
                return Totals(0, 0, 0, 0, Decimal(0))
            return Totals(
                int(row[f"{label}_prompt"]), int(row[f"{label}_completion"]),
                int(row[f"{label}_cached"]), int(row[f"{label}_calls"]),
                Decimal(row[f"{label}_cost"]),
            )  # fmt: skip

        def add(a: Totals, b: Totals) -> Totals:
            return Totals(
                a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens,
                a.cached_tokens + b.cached_tokens, a.calls + b.calls, a.cost + b.cost,
            )  # fmt: skip

        today = month = Totals(0, 0, 0, 0, Decimal(0))
        for row in rows:
            today, month = add(today, totals(row, "d")), add(month, totals(row, "m"))
        groups: list[GroupTotals] = []
        if group is not None:
            groups = [GroupTotals(r["key"], totals(r, "d"), totals(r, "m")) for r in rows]
        truncated = len(groups) > group_limit
        return today, month, groups[:group_limit], truncated

    # Budgets.
    async def seed(self, tenant: str, defaults: Sequence[BudgetLimits]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                "INSERT INTO cost_budget_seeds (tenant_id) SELECT id FROM tenants WHERE id = $1 "
                "ON CONFLICT DO NOTHING RETURNING tenant_id",
                tenant,
            )
            if first is None:
                return
            for b in defaults:
                await conn.execute(
                    "INSERT INTO cost_budgets (tenant_id, scope, subject, daily_limit, "
                    "monthly_limit, total_limit, per_turn_limit, alert_thresholds, updated_by) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'default') ON CONFLICT DO NOTHING",
                    tenant, b.scope, b.subject, b.daily, b.monthly, b.total, b.per_turn,
                    list(b.thresholds),
                )  # fmt: skip

    async def applicable(self, tenant: str, user: str, conversation_id: str) -> list[BudgetLimits]:
        rows = await self.pool.fetch(
            "SELECT * FROM cost_budgets WHERE tenant_id = $1 AND ("
            "(scope = 'TENANT' AND subject = '') OR "
            "(scope = 'USER' AND subject IN ('', $2)) OR "
            "(scope = 'CONVERSATION' AND subject IN ('', $3)))",
            tenant,
            user,
            conversation_id,
        )
        return [_row_to_budget(r) for r in rows]

    async def get(self, tenant: str, scope: str, subject: str) -> BudgetLimits | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM cost_budgets WHERE tenant_id = $1 AND scope = $2 AND subject = $3",
            tenant,
            scope,
            subject,
        )
        return None if row is None else _row_to_budget(row)

    async def upsert(self, tenant: str, budget: BudgetLimits, by: str) -> BudgetLimits:
        row = await self.pool.fetchrow(
            "INSERT INTO cost_budgets (tenant_id, scope, subject, daily_limit, monthly_limit, "
            "total_limit, per_turn_limit, alert_thresholds, updated_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (tenant_id, scope, subject) DO UPDATE SET "
            "daily_limit = EXCLUDED.daily_limit, monthly_limit = EXCLUDED.monthly_limit, "
            "total_limit = EXCLUDED.total_limit, per_turn_limit = EXCLUDED.per_turn_limit, "
            "alert_thresholds = EXCLUDED.alert_thresholds, updated_by = EXCLUDED.updated_by, "
            "update_time = now() RETURNING *",
            tenant, budget.scope, budget.subject, budget.daily, budget.monthly, budget.total,
            budget.per_turn, list(budget.thresholds), by,
        )  # fmt: skip
        assert row is not None
        return _row_to_budget(row)

    async def delete(self, tenant: str, scope: str, subject: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM cost_budgets WHERE tenant_id = $1 AND scope = $2 AND subject = $3",
            tenant,
            scope,
            subject,
        )
        return bool(status.endswith(" 1"))

    async def list_budgets(
        self, tenant: str, scope: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[BudgetLimits]:
        # Scopes sort TENANT, USER, CONVERSATION (the API's order), then by subject.
        order = "array_position(ARRAY['TENANT','USER','CONVERSATION'], scope)"
        args: list[Any] = [tenant]
        clauses = ["tenant_id = $1"]
        if scope is not None:
            args.append(scope)
            clauses.append(f"scope = ${len(args)}")
        if after is not None:
            args += [after[0], after[1]]
            clauses.append(
                f"({order}, subject) > (array_position(ARRAY['TENANT','USER','CONVERSATION'], "
                f"${len(args) - 1}::text), ${len(args)})"
            )
        args.append(limit)
        rows = await self.pool.fetch(
            f"SELECT * FROM cost_budgets WHERE {' AND '.join(clauses)} "
            f"ORDER BY {order}, subject LIMIT ${len(args)}",
            *args,
        )
        return [_row_to_budget(r) for r in rows]

    async def record_alert(self, alert: AlertRecord) -> None:
        await self.pool.execute(
            "INSERT INTO cost_budget_alerts (tenant_id, scope, subject, period, period_id, "
            "threshold_percent, spent_usd, limit_usd, conversation_id, turn_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            alert.tenant_id, alert.scope, alert.subject, alert.period, alert.period_id,
            alert.threshold_percent, alert.spent_usd, alert.limit_usd, alert.conversation_id,
            alert.turn_id,
        )  # fmt: skip

    async def ledger_spent(
        self, tenant: str, spans: Sequence[tuple[str, str, datetime | None]]
    ) -> list[Decimal]:
        if not spans:
            return []
        args: list[Any] = [tenant]
        sums = []
        for scope, subject, since in spans:
            clauses = ["tenant_id = $1"]
            if since is not None:
                args.append(since)
                clauses.append(f"time >= ${len(args)}")
            if scope == "USER":
                args.append(subject)
                clauses.append(f"principal = ${len(args)}")
            elif scope == "CONVERSATION":
                args.append(subject)
                clauses.append(f"conversation_id = ${len(args)}")
            sums.append(
                "(SELECT coalesce(sum(cost_usd), 0) FROM cost_ledger "
                f"WHERE {' AND '.join(clauses)})"
            )
        row = await self.pool.fetchrow(f"SELECT {', '.join(sums)}", *args)
        assert row is not None
        return [Decimal(v) for v in row]

    async def list_alerts(self, tenant: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM cost_budget_alerts WHERE tenant_id = $1 ORDER BY id", tenant
        )
        return [dict(r) for r in rows]

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        try:
            conv = uuid.UUID(conversation_id)
        except ValueError:
            return False
        # The conversations table belongs to the conversation capability; without it no
        # conversation exists.
        exists = await self.pool.fetchval("SELECT to_regclass('conversations') IS NOT NULL")
        if not exists:
            return False
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $1 AND id = $2)",
                tenant,
                conv,
            )
        )

    async def record_breaker_event(
        self,
        tenant: str,
        scope: str,
        provider: str,
        event: str,
        cause: str,
        reason: str,
        actor: str,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO cost_breaker_events (tenant_id, scope, provider, event, cause, reason, "
            "actor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            tenant, scope, provider, event, cause, reason, actor,
        )  # fmt: skip
