"""Prometheus metrics an operator scrapes."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from convergio import AsyncClient, errors

from tests.platform.procs import free_port
from tests.support.server import running_server, server_settings


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


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
        text = await asyncio.to_thread(_scrape, address)
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
