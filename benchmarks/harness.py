"""What every benchmark shares: the stores to run against and the result shape."""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    """One measured quantity. `baseline` is the same quantity measured on the bare
    baseline in the same run; `target` says what the ratio or value must meet."""

    area: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: str = ""
    ok: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


@dataclass
class BenchEnv:
    """Where benchmarks run: external stores from DATABASE_URL / REDIS_URL, or embedded
    ones under `data_dir`. `quick` shrinks every benchmark for smoke runs."""

    data_dir: Path
    database_url: str | None = os.environ.get("DATABASE_URL")
    redis_url: str | None = os.environ.get("REDIS_URL")
    quick: bool = os.environ.get("CONVERGIO_BENCH_QUICK") == "1"


def percentile(samples: list[float], pct: float) -> float:
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(pct * 10) - 1]


@contextlib.asynccontextmanager
async def running_convergio(env: BenchEnv, **overrides: Any) -> AsyncIterator[Any]:
    """A Convergio server in this process on the run's stores and a Redis prefix of its own;
    `overrides` are settings. Yields the `ConvergioServer` (`.infra`, `.settings`, `.keys`)."""
    from convergio_server.config import Settings
    from convergio_server.infrastructure import open_infrastructure
    from convergio_server.server import ConvergioServer

    settings = Settings.model_validate(
        {
            "listen": "127.0.0.1:0",
            "data_dir": env.data_dir,
            "database_url": env.database_url,
            "redis_url": env.redis_url,
            "redis_prefix": f"cvgbench:{secrets.token_hex(4)}",
            "log_level": "WARNING",
            "bootstrap_dev_key": False,
            **overrides,
        }
    )
    infra = await open_infrastructure(settings)
    server = ConvergioServer(settings, infra)
    try:
        await server.start()
        yield server
    finally:
        await server.stop(0.5)
        await infra.close()
