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
    refused = await cli("budget", "set", "tenant", "--daily", "-5", ok=False)
    assert "budget.daily_limit_usd" in refused

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
