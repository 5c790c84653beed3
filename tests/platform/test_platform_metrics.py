"""Prometheus metrics an operator scrapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from convergio import AsyncClient, errors

from tests.platform.procs import free_port
from tests.support.server import running_server, scrape_metrics, server_settings


async def test_metrics_count_calls_by_method_and_code(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics_listen=address)
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
    address = f"127.0.0.1:{free_port()}"
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics_listen=address)
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
