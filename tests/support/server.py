"""Start a real Convergio server in this process on an ephemeral port."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convergio_server.config import Settings
from convergio_server.infrastructure import Infrastructure, open_infrastructure
from convergio_server.server import ConvergioServer

from tests.platform.procs import free_port


@dataclass
class RunningServer:
    server: ConvergioServer
    infra: Infrastructure
    settings: Settings
    admin_key: str

    @property
    def target(self) -> str:
        return self.server.address


def server_settings(
    data_dir: Path,
    database_url: str | None,
    redis_url: str | None,
    redis_prefix: str,
    *,
    metrics: bool = False,
    **overrides: Any,
) -> Settings:
    """Settings of a test server; with `metrics`, it serves its metrics on a free port
    (`metrics_listen`, for `scrape_metrics`)."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "grace_period_seconds": 1.0,
        "health_interval_seconds": 0.2,
        "log_level": "WARNING",
    }
    if metrics:
        values["metrics_listen"] = f"127.0.0.1:{free_port()}"
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[RunningServer]:
    infra = await open_infrastructure(settings)
    server = ConvergioServer(settings, infra)
    try:
        await server.start()
        dev_key = await server.bootstrap_dev_key()
        if dev_key is not None and dev_key.token is not None:
            token = dev_key.token
        else:  # another server already bootstrapped this database
            _, token = await server.keys.create(settings.dev_tenant, "test admin", ["admin"])
        yield RunningServer(server, infra, settings, token)
    finally:
        await server.stop(0.5)
        await infra.close()


def scrape_metrics(address: str) -> str:
    """What a Prometheus scrape of the server's metrics address reads (blocking)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        body: bytes = response.read()
        return body.decode()
