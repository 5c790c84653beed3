"""`convergio cost` against a running server: budgets set and shown, breaker reset, ledger,
summary and limits as tables and JSON; bad input explained."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from autogen_core.models import UserMessage
from convergio_server.domain.costs.breaker import TENANT
from convergio_server.domain.costs.enforcement import CostGuards
from convergio_server.domain.guards import CallInfo
from convergio_server.domain.models.offline import OfflineChatCompletionClient

from tests.costs.costs_support import new_scope
from tests.support.server import RunningServer

CONVERGIO = str(Path(sys.executable).with_name("convergio"))


def cost_cli(
    server: RunningServer, key: str, cwd: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `convergio cost ARGS` against `server` with `key`."""
    env = {**os.environ, "CONVERGIO_TARGET": server.target, "CONVERGIO_API_KEY": key}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONVERGIO, "cost", *args], env=env, cwd=cwd, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    return run


async def test_cost_commands(
    server: RunningServer,
    tenant: str,
    key_for: Callable[..., Awaitable[str]],
    guards: CostGuards,
    tmp_path: Path,
) -> None:
    key = await key_for("operator", "ops")
    run = cost_cli(server, key, tmp_path)

    async def cli(*args: str, ok: bool = True) -> str:
        done = await asyncio.to_thread(run, *args)
        assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
        return done.stdout if ok else done.stderr

    model = guards.wrap_model_client(
        OfflineChatCompletionClient(),
        CallInfo(new_scope(tenant, "ops"), "amy", "openai", "gpt-4o-mini", "agent_reply"),
    )
    await model.create([UserMessage(content="Price the Q3 campaign.", source="ops")])
    await guards.ledger.flush()

    table = await cli("budget", "set", "tenant", "--daily", "25", "--per-turn", "0.75")
    assert "25.000000" in table and "0.750000" in table and "70%,85%" in table
    listed = json.loads(await cli("budget", "list", "--json"))
    assert [b["scope"] for b in listed][:1] == ["BUDGET_SCOPE_TENANT"]
    shown = await cli("budget", "get", "user", "ops")
    assert "yes" in shown  # inherited: no budget of its own
    assert "SPENT_TOTAL" in shown  # a conversation's default limit is a total
    refused = await cli("budget", "delete", "user", "nobody", ok=False)
    assert "budget" in refused and "Traceback" not in refused

    ledger = await cli("ledger")
    assert "gpt-4o-mini" in ledger and "agent_reply" in ledger and "table" in ledger
    summary = json.loads(await cli("summary", "--by", "model", "--json"))
    assert summary["groups"][0]["key"] == "openai/gpt-4o-mini"
    assert "TOTAL" in await cli("summary")

    await guards.breakers.trip(tenant, TENANT, "FAILURES", "provider timeouts")
    assert "open" in await cli("breaker", "get")
    assert "closed" in await cli("breaker", "reset", "--reason", "fixed upstream")
    limits = await cli("limits")
    assert "turns_per_minute" in limits and "conversations_per_hour" in limits


async def test_bad_option_values_are_argparse_errors(
    server: RunningServer, key_for: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    key = await key_for("operator", "ops")
    run = cost_cli(server, key, tmp_path)

    async def refused(*args: str) -> str:
        done = await asyncio.to_thread(run, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        return done.stderr

    err = await refused("budget", "set", "user", "carol", "--alerts", "x")
    assert "convergio cost budget set: error: argument --alerts: 'x' is not a whole number" in err
    assert "from 1 to 99" in err
    err = await refused("budget", "set", "user", "carol", "--alerts", "50,,90")
    assert "argument --alerts: '50,,90' has an empty item" in err
    err = await refused("budget", "set", "user", "carol", "--alerts", "50,100")
    assert "argument --alerts: 100 is out of range" in err
    err = await refused("ledger", "--since", "yesterday")
    assert "convergio cost ledger: error: argument --since: 'yesterday' is not an ISO-8601" in err
    err = await refused("ledger", "--until", "2026-13-01")
    assert "argument --until: '2026-13-01' is not an ISO-8601 time" in err
    # In range as written, out of a Timestamp's range (years 1-9999) once in UTC.
    err = await refused("ledger", "--until", "0001-01-01T00:00:00+01:00")
    assert "argument --until: '0001-01-01T00:00:00+01:00' is out of range" in err
    err = await refused("ledger", "--since", "9999-12-31T23:59:59-01:00")
    assert "argument --since: '9999-12-31T23:59:59-01:00' is out of range" in err
    for alerts in ("90,50", "50,50"):
        err = await refused("budget", "set", "tenant", "--alerts", alerts)
        assert f"argument --alerts: '{alerts}' is not ascending without repeats" in err
    amounts = [
        ("--daily", "1_000"),
        ("--monthly", "\uff11\uff10"),  # full-width digits: Decimal() would take them
        ("--total", "1e3"),
        ("--per-turn", "-5"),
        ("--daily", "1000000.01"),
        ("--daily", "NaN"),
    ]
    for option, amount in amounts:
        err = await refused("budget", "set", "user", "carol", option, amount)
        assert f"argument {option}: {amount!r} is not an amount" in err
    for command, limit in [("ledger", "-1"), ("ledger", "0"), ("summary", "-1"),
                           ("summary", "5000")]:  # fmt: skip
        err = await refused(command, "--limit", limit)
        assert f"argument --limit: {limit!r} is not a whole number from 1 to 1000" in err

    # Nothing was sent: carol still has no budget of her own.
    shown = await asyncio.to_thread(run, "budget", "get", "user", "carol", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["budget"]["inherited"] is True
    # Good values still pass, a time without an offset taken as UTC.
    done = await asyncio.to_thread(
        run, "budget", "set", "user", "carol", "--alerts", "50, 90", "--monthly", "10", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["budget"]["alert_thresholds_percent"] == [50, 90]
    done = await asyncio.to_thread(run, "ledger", "--since", "2026-01-01", "--until", "")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(
        run, "ledger", "--since", "0001-01-01T00:00:00Z", "--until", "9999-12-31T23:59:59Z"
    )
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(run, "summary", "--limit", "1000", "--by", "user")
    assert done.returncode == 0, done.stderr


async def test_json_output_is_one_object_with_every_field(
    server: RunningServer, key_for: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    key = await key_for("operator", "ops")
    run = cost_cli(server, key, tmp_path)

    async def as_json(*args: str) -> Any:
        done = await asyncio.to_thread(run, *args, "--json")
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    set_ = await as_json("budget", "set", "user", "zed", "--daily", "0.05")
    assert set_["budget"]["daily_limit_usd"] == "0.050000"
    deleted = await as_json("budget", "delete", "user", "zed")
    assert deleted == {"deleted": True, "scope": "user", "subject": "zed"}

    breaker = await as_json("breaker", "get")
    assert breaker["circuit_breaker"]["consecutive_failures"] == 0
    listed = await as_json("breaker", "get", "--list")
    assert isinstance(listed["circuit_breakers"], list)
    reset = await as_json("breaker", "reset", "--reason", "test")
    assert set(reset["circuit_breaker"]) == set(breaker["circuit_breaker"])

    # Zeros and empty values are printed, not dropped: a fresh tenant has used nothing.
    limits = await as_json("limits")
    for status in limits["limits"]:
        assert status["used"] == "0" and status["remaining"] == status["limit"], status
    summary = await as_json("summary", "--by", "agent")
    assert summary["groups"] == [] and summary["groups_truncated"] is False
    assert summary["today"]["usage"]["model_calls"] == "0"  # int64: a JSON string
    ledger = await as_json("ledger")
    assert ledger == {"entries": [], "next_page_token": ""}
