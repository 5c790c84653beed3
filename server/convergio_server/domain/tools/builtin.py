"""The built-in tools. All work offline: the knowledge base and the cost ledger are in
PostgreSQL, the calculator and the workflow catalog are local."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from convergio_server.domain.knowledge import KnowledgeBase, KnowledgeStore
from convergio_server.domain.tools import finance
from convergio_server.domain.tools.base import (
    ConvergioTool,
    RiskLevel,
    ToolContext,
    ToolError,
    ToolErrorKind,
)
from convergio_server.domain.workflows.catalog import WorkflowCatalog

# --------------------------------------------------------------------- knowledge base


class SearchKnowledgeBaseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1, max_length=1000, description="what to look for, in plain words"
    )
    limit: int = Field(5, ge=1, le=20, description="most documents to return")


class SearchKnowledgeBaseTool(ConvergioTool[SearchKnowledgeBaseArgs]):
    name = "search_knowledge_base"
    description = (
        "Search the organisation's knowledge base (documents, policies, reports, notes) "
        "by keywords with full-text ranking. Returns the best-matching documents with their "
        "id, title, score and the matching passages."
    )
    args_model = SearchKnowledgeBaseArgs
    timeout_seconds = 10.0

    def __init__(self, store_factory: Callable[[Any], KnowledgeStore] | None = None) -> None:
        self._store_factory = store_factory

    def knowledge_base(self, ctx: ToolContext) -> KnowledgeBase:
        component = ctx.components.get("knowledge")
        if isinstance(component, KnowledgeBase):
            return component
        if self._store_factory is not None and ctx.pool is not None:
            return KnowledgeBase(self._store_factory(ctx.pool))
        raise ToolError(ToolErrorKind.PERMANENT, "no knowledge base is configured")

    async def run(self, args: SearchKnowledgeBaseArgs, ctx: ToolContext) -> str:
        hits = await self.knowledge_base(ctx).search(ctx.tenant_id, args.query, limit=args.limit)
        if not hits:
            return f"No documents in the knowledge base match {args.query!r}."
        lines = [f"{len(hits)} document(s) match {args.query!r}:"]
        for rank, hit in enumerate(hits, 1):
            title = hit.title or hit.document_id
            lines.append(
                f"[{rank}] {title} (id {hit.document_id}, score {hit.score:.3f}): {hit.snippet}"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------- calculator

Operation = Literal[
    "npv", "irr", "roi", "cagr", "break_even", "loan_payment", "future_value", "expression"
]


class FinancialCalculatorArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: Operation = Field(
        description=(
            "npv: rate + values = cash flows, first at t=0; irr: values = cash flows; "
            "roi: values = [investment, final value]; cagr: values = [start, end, years]; "
            "break_even: values = [fixed costs, price per unit, variable cost per unit]; "
            "loan_payment: rate = annual rate + values = [principal, years]; "
            "future_value (compound interest): rate = annual interest rate + values = "
            "[principal, years], optionally periods_per_year and contribution; "
            "expression: an arithmetic expression"
        )
    )
    values: list[float] = Field(
        default_factory=list, max_length=1000, description="the numbers the operation needs"
    )
    rate: float | None = Field(
        None, gt=-1, le=10, description="a rate as a fraction, e.g. 0.08 for 8%"
    )
    expression: str | None = Field(
        None, max_length=500, description="for operation=expression, e.g. (1200-950)/950*100"
    )
    periods_per_year: int | None = Field(
        None,
        ge=1,
        le=365,
        description=(
            "for operation=future_value: how often interest compounds in a year "
            "(1 yearly, the default; 4 quarterly; 12 monthly; 365 daily)"
        ),
    )
    contribution: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "for operation=future_value: the amount added at the end of every compounding "
            "period (default 0)"
        ),
    )


_NEEDS: dict[str, tuple[int, str]] = {
    "npv": (2, "cash flows, first at t=0"),
    "irr": (2, "cash flows, first at t=0"),
    "roi": (2, "[investment, final value]"),
    "cagr": (3, "[start value, end value, years]"),
    "break_even": (3, "[fixed costs, price per unit, variable cost per unit]"),
    "loan_payment": (2, "[principal, years]"),
    "future_value": (2, "[principal, years]"),
}


class FinancialCalculatorTool(ConvergioTool[FinancialCalculatorArgs]):
    name = "financial_calculator"
    description = (
        "Financial calculator: net present value (npv), internal rate of return (irr), "
        "return on investment (roi), compound annual growth rate (cagr), break-even units, "
        "monthly loan payment, future value of an investment with compound interest "
        "(future_value), or an arithmetic expression. Exact decimal arithmetic."
    )
    args_model = FinancialCalculatorArgs
    timeout_seconds = 5.0

    async def run(self, args: FinancialCalculatorArgs, ctx: ToolContext) -> str:
        try:
            return self.calculate(args)
        except finance.CalculationError as exc:
            raise ToolError(ToolErrorKind.INVALID_ARGUMENTS, str(exc)) from exc

    def calculate(self, args: FinancialCalculatorArgs) -> str:
        op = args.operation
        if op != "future_value" and (
            args.periods_per_year is not None or args.contribution is not None
        ):
            raise finance.CalculationError(
                "periods_per_year and contribution apply only to operation future_value"
            )
        if op == "expression":
            if not args.expression:
                raise finance.CalculationError("operation expression needs `expression`")
            value = finance.evaluate(args.expression)
            return f"{args.expression} = {finance.plain(value)}"
        needed, meaning = _NEEDS[op]
        if len(args.values) < needed:
            raise finance.CalculationError(
                f"{op} needs at least {needed} values: {meaning}; got {len(args.values)}"
            )
        values = [Decimal(str(v)) for v in args.values]
        rate = Decimal(str(args.rate)) if args.rate is not None else None
        if op == "npv":
            if rate is None:
                raise finance.CalculationError("npv needs `rate` (e.g. 0.08 for 8%)")
            result = finance.npv(rate, values)
            flows = ", ".join(f"{v.normalize():f}" for v in values)
            return (
                f"NPV = {finance.money(result)} at a {finance.percent(rate)} discount rate "
                f"for cash flows [{flows}] (the first at t=0)."
            )
        if op == "irr":
            return f"IRR = {finance.percent(finance.irr(values))} for {len(values)} cash flows."
        if op == "roi":
            result = finance.roi(values[0], values[1])
            return (
                f"ROI = {finance.percent(result)} (investment {finance.money(values[0])}, "
                f"final value {finance.money(values[1])}, gain "
                f"{finance.money(values[1] - values[0])})."
            )
        if op == "cagr":
            result = finance.cagr(values[0], values[1], values[2])
            return (
                f"CAGR = {finance.percent(result)} from {finance.money(values[0])} to "
                f"{finance.money(values[1])} over {values[2].normalize():f} years."
            )
        if op == "break_even":
            units = finance.break_even_units(values[0], values[1], values[2])
            return (
                f"Break-even = {units.quantize(Decimal('0.01'))} units "
                f"(fixed costs {finance.money(values[0])}, unit margin "
                f"{finance.money(values[1] - values[2])}); revenue at break-even "
                f"{finance.money(units * values[1])}."
            )
        if op == "future_value":
            return _future_value(values, rate, args.periods_per_year, args.contribution)
        # loan_payment
        annual = rate if rate is not None else Decimal(0)
        payment = finance.loan_payment(values[0], annual, values[1])
        months = int(values[1] * 12)
        return (
            f"Monthly payment = {finance.money(payment)} for {finance.money(values[0])} "
            f"over {months} months at {finance.percent(annual)} a year; total paid "
            f"{finance.money(payment * months)}."
        )


_COMPOUNDING = {
    1: "yearly",
    2: "twice a year",
    4: "quarterly",
    12: "monthly",
    52: "weekly",
    365: "daily",
}


def _future_value(
    values: list[Decimal],
    rate: Decimal | None,
    periods_per_year: int | None,
    contribution: float | None,
) -> str:
    if rate is None:
        raise finance.CalculationError(
            "future_value needs `rate`, the annual interest rate (e.g. 0.07 for 7%)"
        )
    principal, years = values[0], values[1]
    per_year = periods_per_year or 1
    added = Decimal(str(contribution)) if contribution is not None else Decimal(0)
    value = finance.future_value(principal, rate, years, per_year, added)
    periods = years * per_year
    compounded = _COMPOUNDING.get(per_year, f"{per_year} times a year")
    text = (
        f"Future value = {finance.money(value)} after {years.normalize():f} years: "
        f"{finance.money(principal)} at {finance.percent(rate)} a year compounded "
        f"{compounded}"
    )
    paid_in = principal
    if added:
        paid_in += added * periods
        text += (
            f", plus {finance.money(added)} at the end of each of {periods.normalize():f} periods"
        )
    return f"{text}; interest earned {finance.money(value - paid_in)}."


# ------------------------------------------------------------------- conversation cost


@dataclass(frozen=True)
class CostSoFar:
    usd: Decimal
    prompt_tokens: int
    completion_tokens: int
    calls: int
    note: str = ""


@runtime_checkable
class ConversationCostSource(Protocol):
    """What the cost capability offers this tool (as `components["costs"]`)."""

    async def conversation_cost(self, tenant_id: str, conversation_id: str) -> CostSoFar: ...


class LedgerCostSource:
    """Reads the cost ledger table directly (when the cost capability is not wired in)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def conversation_cost(self, tenant_id: str, conversation_id: str) -> CostSoFar:
        exists = await self._pool.fetchval("SELECT to_regclass('cost_ledger') IS NOT NULL")
        if not exists:
            return CostSoFar(Decimal(0), 0, 0, 0, "no cost ledger is configured")
        row = await self._pool.fetchrow(
            """SELECT coalesce(sum(cost_usd), 0) AS usd,
                      coalesce(sum(prompt_tokens), 0) AS prompt,
                      coalesce(sum(completion_tokens), 0) AS completion,
                      count(*) AS calls
               FROM cost_ledger WHERE tenant_id = $1 AND conversation_id = $2""",
            tenant_id,
            conversation_id,
        )
        return CostSoFar(
            Decimal(row["usd"]),
            int(row["prompt"]),
            int(row["completion"]),
            int(row["calls"]),
            "from the cost ledger (calls of the last fraction of a second may not be in yet)",
        )


class ConversationCostArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationCostTool(ConvergioTool[ConversationCostArgs]):
    name = "conversation_cost"
    description = (
        "The cost so far of this conversation: USD spent on model calls, prompt and "
        "completion tokens, and the number of calls."
    )
    args_model = ConversationCostArgs
    timeout_seconds = 5.0

    def source(self, ctx: ToolContext) -> ConversationCostSource | None:
        component = ctx.components.get("costs")
        if isinstance(component, ConversationCostSource):
            return component
        if ctx.pool is not None:
            return LedgerCostSource(ctx.pool)
        return None

    async def run(self, args: ConversationCostArgs, ctx: ToolContext) -> str:
        if not ctx.conversation_id:
            raise ToolError(ToolErrorKind.PERMANENT, "this call is not part of a conversation")
        source = self.source(ctx)
        cost = (
            await source.conversation_cost(ctx.tenant_id, ctx.conversation_id)
            if source is not None
            else CostSoFar(Decimal(0), 0, 0, 0, "no cost tracking is configured")
        )
        text = (
            f"This conversation has cost {cost.usd.quantize(Decimal('0.000001')).normalize():f} "
            f"USD so far: {cost.calls} model call(s), {cost.prompt_tokens} prompt and "
            f"{cost.completion_tokens} completion tokens."
        )
        return f"{text} Note: {cost.note}." if cost.note else text


# -------------------------------------------------------------------- workflow catalog


class WorkflowCatalogArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(
        None, max_length=500, description="what the workflow should do, e.g. 'launch a product'"
    )
    name: str | None = Field(
        None, max_length=64, description="exact workflow name, e.g. 'market_entry'"
    )


class WorkflowCatalogTool(ConvergioTool[WorkflowCatalogArgs]):
    name = "workflow_catalog"
    description = (
        "Look up the workflow catalog: multi-step workflows (strategic analysis, product "
        "launch, market entry, customer onboarding) with their steps, agents, dependencies "
        "and approval gates."
    )
    args_model = WorkflowCatalogArgs
    timeout_seconds = 5.0
    risk_level: ClassVar[RiskLevel] = RiskLevel.LOW

    def __init__(self, catalog: WorkflowCatalog | None = None) -> None:
        self._catalog = catalog

    @property
    def catalog(self) -> WorkflowCatalog:
        if self._catalog is None:
            self._catalog = WorkflowCatalog.load()
        return self._catalog

    async def run(self, args: WorkflowCatalogArgs, ctx: ToolContext) -> str:
        catalog = self.catalog
        if args.name:
            return catalog.get(args.name).describe()
        matches = catalog.search(args.query) if args.query else []
        if matches:
            return "\n\n".join(w.describe() for w in matches)
        names = ", ".join(f"{w.name} ({w.title})" for w in catalog.workflows())
        prefix = f"No workflow matches {args.query!r}. " if args.query else ""
        return f"{prefix}Available workflows: {names}."


def builtin_tools(
    *,
    knowledge_store: Callable[[Any], KnowledgeStore] | None = None,
    catalog: WorkflowCatalog | None = None,
) -> list[ConvergioTool[Any]]:
    """The built-in tools. `knowledge_store(pool)` builds the store the knowledge-base
    search uses when `components["knowledge"]` is not set (e.g. `PgKnowledgeStore`)."""
    return [
        SearchKnowledgeBaseTool(knowledge_store),
        FinancialCalculatorTool(),
        ConversationCostTool(),
        WorkflowCatalogTool(catalog),
    ]
