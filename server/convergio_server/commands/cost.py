"""`convergio cost`: cost summary, ledger, budgets, circuit breakers and rate limits of the
API key's tenant, through the SDK. Tables by default, `--json` for scripts."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from convergio.common.v1 import common_pb2
from convergio.cost.v1 import cost_pb2
from google.protobuf import timestamp_pb2

from convergio_server.commands import (
    add_client_args,
    as_dict,
    client_from_args,
    enum_name,
    every_page,
    int_list,
    int_range,
    iso_time,
    print_table,
    time_text,
)
from convergio_server.domain.costs.money import MAX_LIMIT_USD, parse_amount

_GROUPS = {
    "agent": cost_pb2.COST_GROUP_BY_AGENT,
    "model": cost_pb2.COST_GROUP_BY_MODEL,
    "user": cost_pb2.COST_GROUP_BY_USER,
    "conversation": cost_pb2.COST_GROUP_BY_CONVERSATION,
}
_SCOPES = {
    "tenant": common_pb2.BUDGET_SCOPE_TENANT,
    "user": common_pb2.BUDGET_SCOPE_USER,
    "conversation": common_pb2.BUDGET_SCOPE_CONVERSATION,
}
_SCOPE_NAMES = {v: k for k, v in _SCOPES.items()}
_BREAKER_SCOPES = {
    "tenant": cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT,
    "provider": cost_pb2.CIRCUIT_BREAKER_SCOPE_PROVIDER,
}


def _usd(text: str) -> str:
    """An argparse `type=` for a USD limit (the server's rule: plain ASCII digits, at most
    nine decimals); "" is no limit."""
    text = text.strip()
    amount = parse_amount(text) if text else None
    if text and (amount is None or amount > MAX_LIMIT_USD):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount from 0 to {MAX_LIMIT_USD} USD, e.g. 12 or 0.05"
        )
    return text


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _dump(message: Any) -> None:
    _print_json(as_dict(message))


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


async def _summary(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.costs.get_cost_summary(
            group_by=_GROUPS.get(args.by or "", cost_pb2.COST_GROUP_BY_UNSPECIFIED),
            user=args.user or "",
            conversation_id=args.conversation or "",
            group_limit=args.limit,
        )
    if args.json:
        _dump(result)
        return 0
    rows: list[dict[str, Any]] = [
        {"key": "TOTAL", "today_usd": result.today.cost_usd, "month_usd": result.month.cost_usd,
         "calls_today": result.today.usage.model_calls,
         "calls_month": result.month.usage.model_calls,
         "tokens_month": result.month.usage.prompt_tokens + result.month.usage.completion_tokens}
    ]  # fmt: skip
    for g in result.groups:
        rows.append(
            {"key": g.key or "(none)", "today_usd": g.today.cost_usd, "month_usd": g.month.cost_usd,
             "calls_today": g.today.usage.model_calls, "calls_month": g.month.usage.model_calls,
             "tokens_month": g.month.usage.prompt_tokens + g.month.usage.completion_tokens}
        )  # fmt: skip
    print_table(
        rows, ("key", "today_usd", "month_usd", "calls_today", "calls_month", "tokens_month")
    )
    if result.groups_truncated:
        print(f"(only the {len(result.groups)} most expensive groups; raise --limit)")
    return 0


async def _ledger(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.costs.list_ledger_entries(
            conversation_id=args.conversation or "",
            user=args.user or "",
            start_time=_timestamp(args.since),
            end_time=_timestamp(args.until),
            page_size=args.limit,
            page_token=args.page_token or "",
        )
    if args.json:
        _dump(result)
        return 0
    rows = [
        {
            "time": time_text(e.time),
            "user": e.user,
            "conversation": e.conversation_id[:8],
            "agent": e.agent or "(selector)",
            "model": e.model,
            "kind": enum_name(cost_pb2.ModelCallKind, e.call_kind, "MODEL_CALL_KIND_"),
            "tokens": f"{e.prompt_tokens}/{e.completion_tokens}",
            "cost_usd": e.cost_usd,
            "price": enum_name(cost_pb2.PriceSource, e.price_source, "PRICE_SOURCE_"),
            "outcome": enum_name(cost_pb2.CallOutcome, e.outcome, "CALL_OUTCOME_"),
        }
        for e in result.entries
    ]
    print_table(rows, ("time", "user", "conversation", "agent", "model", "kind", "tokens",
                       "cost_usd", "price", "outcome"))  # fmt: skip
    if result.next_page_token:
        print(f"more: --page-token {result.next_page_token}")
    return 0


def _budget_row(b: cost_pb2.Budget) -> dict[str, Any]:
    return {
        "scope": _SCOPE_NAMES.get(b.scope, "?"),
        "subject": b.subject or ("(default)" if b.scope != common_pb2.BUDGET_SCOPE_TENANT else ""),
        "daily": b.daily_limit_usd or "-",
        "monthly": b.monthly_limit_usd or "-",
        "total": b.total_limit_usd or "-",
        "per_turn": b.per_turn_limit_usd or "-",
        "alerts": ",".join(f"{t}%" for t in b.alert_thresholds_percent),
        "spent_today": b.spent_today_usd,
        "spent_month": b.spent_month_usd,
        "spent_total": b.spent_total_usd,
        "reserved": b.reserved_usd,
        "inherited": "yes" if b.inherited else "",
    }


_BUDGET_COLUMNS = ("scope", "subject", "daily", "monthly", "total", "per_turn", "alerts",
                   "spent_today", "spent_month", "spent_total", "reserved",
                   "inherited")  # fmt: skip


async def _budget_get(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.costs.get_budget(scope=_SCOPES[args.scope], subject=args.subject)
    if args.json:
        _dump(result)
    else:
        print_table([_budget_row(result.budget)], _BUDGET_COLUMNS)
    return 0


async def _budget_list(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        budgets, _ = await every_page(
            lambda size, token: client.costs.list_budgets(
                scope=_SCOPES.get(args.scope or "", common_pb2.BUDGET_SCOPE_UNSPECIFIED),
                page_size=size,
                page_token=token,
            ),
            "budgets",
            page_size=1000,
        )
    if args.json:
        _print_json([as_dict(b) for b in budgets])
    else:
        print_table([_budget_row(b) for b in budgets], _BUDGET_COLUMNS)
    return 0


async def _budget_set(args: argparse.Namespace) -> int:
    budget = cost_pb2.Budget(
        scope=_SCOPES[args.scope],
        subject=args.subject,
        daily_limit_usd=args.daily or "",
        monthly_limit_usd=args.monthly or "",
        total_limit_usd=args.total or "",
        per_turn_limit_usd=args.per_turn or "",
        alert_thresholds_percent=args.alerts or [],
    )
    async with client_from_args(args) as client:
        result = await client.costs.set_budget(budget=budget, request_id=args.request_id or "")
    if args.json:
        _dump(result)
    else:
        print_table([_budget_row(result.budget)], _BUDGET_COLUMNS)
    return 0


async def _budget_delete(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        await client.costs.delete_budget(scope=_SCOPES[args.scope], subject=args.subject)
    if args.json:
        _print_json({"deleted": True, "scope": args.scope, "subject": args.subject})
    else:
        print(f"deleted the {args.scope} budget {args.subject or '(default)'}".rstrip())
    return 0


def _breaker_row(b: cost_pb2.CircuitBreaker) -> dict[str, Any]:
    return {
        "scope": enum_name(cost_pb2.CircuitBreakerScope, b.scope, "CIRCUIT_BREAKER_SCOPE_"),
        "provider": b.provider,
        "state": enum_name(cost_pb2.CircuitState, b.state, "CIRCUIT_STATE_"),
        "failures": b.consecutive_failures,
        "spikes": b.cost_spikes,
        "probes_ok": b.half_open_successes,
        "avg_cost_usd": b.moving_average_cost_usd,
        "cause": enum_name(cost_pb2.CircuitOpenCause, b.open_cause, "CIRCUIT_OPEN_CAUSE_"),
        "next_probe": time_text(b.next_probe_time),
        "reason": b.reason,
    }


_BREAKER_COLUMNS = ("scope", "provider", "state", "failures", "spikes", "probes_ok",
                    "avg_cost_usd", "cause", "next_probe", "reason")  # fmt: skip


async def _breaker_get(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        if args.list:
            breakers, _ = await every_page(
                lambda size, token: client.costs.list_circuit_breakers(
                    page_size=size, page_token=token
                ),
                "circuit_breakers",
                page_size=1000,
            )
        else:
            scope = "provider" if args.provider else "tenant"
            result = await client.costs.get_circuit_breaker(
                scope=_BREAKER_SCOPES[scope], provider=args.provider or ""
            )
            breakers = [result.circuit_breaker]
    if args.json:
        # An object, as from `breaker reset` and `budget get`.
        if args.list:
            _print_json({"circuit_breakers": [as_dict(b) for b in breakers]})
        else:
            _print_json({"circuit_breaker": as_dict(breakers[0])})
    else:
        print_table([_breaker_row(b) for b in breakers], _BREAKER_COLUMNS)
    return 0


async def _breaker_reset(args: argparse.Namespace) -> int:
    scope = "provider" if args.provider else "tenant"
    async with client_from_args(args) as client:
        result = await client.costs.reset_circuit_breaker(
            scope=_BREAKER_SCOPES[scope], provider=args.provider or "", reason=args.reason or ""
        )
    if args.json:
        _dump(result)
    else:
        print_table([_breaker_row(result.circuit_breaker)], _BREAKER_COLUMNS)
    return 0


async def _limits(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.costs.get_rate_limit_status(user=args.user or "")
    if args.json:
        _dump(result)
        return 0
    rows = [
        {
            "user": result.user,
            "limit": enum_name(cost_pb2.RateLimitKind, s.kind, "RATE_LIMIT_KIND_"),
            "window_s": s.window.seconds,
            "allowed": s.limit,
            "used": s.used,
            "remaining": s.remaining,
            "resets": time_text(s.reset_time),
        }
        for s in result.limits
    ]
    print_table(rows, ("user", "limit", "window_s", "allowed", "used", "remaining", "resets"))
    return 0


def register(subparsers: Any) -> None:
    cost = subparsers.add_parser(
        "cost",
        help="cost summary, ledger, budgets, circuit breakers, rate limits",
        description="Costs and guards of the API key's tenant.",
    )
    sub = cost.add_subparsers(dest="cost_command", required=True)

    def command(parent: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text
        )
        add_client_args(parser)
        parser.set_defaults(handler=handler)
        return parser

    summary = command(sub, "summary", _summary, "cost today and this month, optionally grouped")
    summary.add_argument("--by", choices=sorted(_GROUPS), help="group by agent/model/user/...")
    summary.add_argument("--user", help="only this user (operators)")
    summary.add_argument("--conversation", help="only this conversation id")
    summary.add_argument(
        "--limit", type=int_range(1, 1000), default=100, help="most groups, 1-1000 (default 100)"
    )

    ledger = command(sub, "ledger", _ledger, "model calls as billed, newest first")
    ledger.add_argument("--conversation", help="only this conversation id")
    ledger.add_argument("--user", help="only this user (operators)")
    ledger.add_argument(
        "--since",
        type=iso_time(),
        help="ISO-8601 start, e.g. 2026-11-01T00:00:00Z (UTC if no offset)",
    )
    ledger.add_argument("--until", type=iso_time(), help="ISO-8601 end (exclusive)")
    ledger.add_argument(
        "--limit", type=int_range(1, 1000), default=50, help="entries per page, 1-1000 (default 50)"
    )
    ledger.add_argument("--page-token", help="next page, as printed by the previous call")

    budget = sub.add_parser("budget", help="budgets: get, set, list, delete")
    budget_sub = budget.add_subparsers(dest="budget_command", required=True)
    getter = command(budget_sub, "get", _budget_get, "the budget in force, with what was spent")
    getter.add_argument("scope", choices=sorted(_SCOPES))
    getter.add_argument("subject", nargs="?", default="", help="user or conversation id")
    lister = command(budget_sub, "list", _budget_list, "budgets set explicitly (operators)")
    lister.add_argument("--scope", choices=sorted(_SCOPES))
    setter = command(budget_sub, "set", _budget_set, "set the limits of a budget (operators)")
    setter.add_argument("scope", choices=sorted(_SCOPES))
    setter.add_argument("subject", nargs="?", default="", help="empty = the scope's default")
    setter.add_argument("--daily", type=_usd, help="USD per UTC day, e.g. 50.00")
    setter.add_argument("--monthly", type=_usd, help="USD per UTC month")
    setter.add_argument("--total", type=_usd, help="USD over the subject's life")
    setter.add_argument("--per-turn", type=_usd, help="USD per turn")
    setter.add_argument(
        "--alerts",
        type=int_list(1, 99, "70,85", ascending=True),
        help="alert thresholds in percent, ascending, e.g. 70,85 (default 70,85)",
    )
    setter.add_argument("--request-id", help="idempotency key")
    deleter = command(budget_sub, "delete", _budget_delete, "remove a budget set explicitly")
    deleter.add_argument("scope", choices=sorted(_SCOPES))
    deleter.add_argument("subject", nargs="?", default="")

    breaker = sub.add_parser("breaker", help="circuit breakers: get, reset")
    breaker_sub = breaker.add_subparsers(dest="breaker_command", required=True)
    bget = command(
        breaker_sub, "get", _breaker_get, "state of the tenant's or a provider's breaker"
    )
    bget.add_argument("--provider", help="a provider endpoint key, e.g. openai")
    bget.add_argument("--list", action="store_true", help="every breaker with state (operators)")
    breset = command(breaker_sub, "reset", _breaker_reset, "close a breaker now (operators)")
    breset.add_argument("--provider", help="a provider endpoint key; unset = the tenant")
    breset.add_argument("--reason", help="why; logged with your id")

    limits = command(sub, "limits", _limits, "what is left of each rate limit")
    limits.add_argument("--user", help="another user (operators)")
