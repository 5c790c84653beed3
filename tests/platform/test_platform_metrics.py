"""Prometheus metrics an operator scrapes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from convergio import AsyncClient, errors

from tests.support.server import running_server, scrape_metrics, server_settings


async def test_metrics_count_calls_by_method_and_code(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics=True)
    address = settings.metrics_listen
    async with running_server(settings) as running:
        async with AsyncClient(running.target, api_key=running.admin_key) as client:
            for _ in range(3):
                with pytest.raises(errors.InvalidArgument):
                    await client.workflows.get_execution(execution_id="bad")
        text = await asyncio.to_thread(scrape_metrics, address)
    method = "/convergio.workflow.v1.WorkflowService/GetExecution"
    line = next(
        row
        for row in text.splitlines()
        if row.startswith("convergio_rpc_requests_total{")
        and f'method="{method}"' in row
        and 'code="INVALID_ARGUMENT"' in row
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3
    assert 'convergio_store_up{store="postgresql"} 1.0' in text
    assert "convergio_rpc_duration_seconds_bucket" in text


def _series(text: str, name: str, method: str, labels: str = "") -> dict[str, float]:
    """The samples of `name` for `method` (and `labels`), by their `le` label (or "")."""
    found: dict[str, float] = {}
    for row in text.splitlines():
        if row.startswith(name + "{") and f'method="{method}"' in row and labels in row:
            le = row.split('le="', 1)[1].split('"', 1)[0] if 'le="' in row else ""
            found[le] = float(row.rsplit(" ", 1)[1])
    return found


async def test_call_durations_are_a_prometheus_histogram(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics=True)
    address = settings.metrics_listen
    method = "/convergio.flag.v1.FlagService/ListFlags"
    async with running_server(settings) as running:
        async with AsyncClient(running.target, api_key=running.admin_key) as client:
            await client.flags.list_flags()
            before = await asyncio.to_thread(scrape_metrics, address)
            for _ in range(4):
                await client.flags.list_flags()
        after = await asyncio.to_thread(scrape_metrics, address)
    buckets = _series(after, "convergio_rpc_duration_seconds_bucket", method)
    # Cumulative, from the smallest bound to +Inf, which holds every call.
    les = list(buckets)
    assert les[0] == "0.0005" and les[-1] == "+Inf"
    assert list(buckets.values()) == sorted(buckets.values())
    earlier = _series(before, "convergio_rpc_duration_seconds_bucket", method)
    assert buckets["+Inf"] - earlier["+Inf"] == 4
    count = "convergio_rpc_duration_seconds_count"
    assert _series(after, count, method)[""] - _series(before, count, method)[""] == 4
    total = "convergio_rpc_duration_seconds_sum"
    assert 0 < _series(after, total, method)[""] - _series(before, total, method)[""] < 40
    calls, ok = "convergio_rpc_requests_total", 'code="OK"'
    assert _series(after, calls, method, ok)[""] - _series(before, calls, method, ok)[""] == 4


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")


def _base(name: str) -> str:
    return _SUFFIXES.sub("", name)


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "convergio-rules.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "convergio-dashboard.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        exprs += [target["expr"] for target in panel["targets"]]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    return exprs


async def test_the_dashboard_and_the_alerts_use_metrics_the_server_serves(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    # A metric renamed in the server, or misspelt in deploy/, would leave a panel empty or
    # an alert silent for good.
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics=True)
    address = settings.metrics_listen
    async with running_server(settings):
        text = await asyncio.to_thread(scrape_metrics, address)
    served = {_base(row.split()[2]) for row in text.splitlines() if row.startswith("# TYPE ")}
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    exprs = [rule["expr"] for rule in rules] + _dashboard_exprs()
    used = {_base(name) for expr in exprs for name in re.findall(r"\bconvergio_[a-z_]+", expr)}
    for expr in exprs:  # valid PromQL (Grafana fills in $__rate_interval)
        promql_parser.parse(expr.replace("$__rate_interval", "5m"))
    assert used, "no metric found in deploy/"
    assert used <= served, f"not served: {sorted(used - served)}"
    for rule in rules:
        assert ("record" in rule) != ("alert" in rule), rule
        # A recording rule an alert or a panel uses is defined here.
        assert set(re.findall(r"\bconvergio:[a-z0-9_:]+", rule["expr"])) <= recorded, rule
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
