"""The standard health service, driven by probes of PostgreSQL and Redis.

Overall ("") and every Convergio service report SERVING while both stores
answer, NOT_SERVING while either does not, and recover on their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2

from convergio_server.domain.background import cancel_and_wait
from convergio_server.telemetry import STORE_UP

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


class HealthMonitor:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        probes: dict[str, Probe],
        interval: float,
        unimplemented: Sequence[str] = (),
    ) -> None:
        self._servicer = servicer
        self._services = ["", *services]
        # Services whose every call answers UNIMPLEMENTED: never ready, whatever the stores.
        self._unimplemented = list(unimplemented)
        self._probes = probes
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.unhealthy: dict[str, str] = {}

    async def check_once(self) -> bool:
        """Probe every store once and publish the result; True when all answer."""
        results = await asyncio.gather(
            *(self._probe(name, probe) for name, probe in self._probes.items())
        )
        failures = {name: error for name, error in results if error is not None}
        if failures != self.unhealthy:
            for name, error in failures.items():
                log.warning("%s is unreachable: %s", name, error)
            for name in set(self.unhealthy) - set(failures):
                log.info("%s is reachable again", name)
        self.unhealthy = failures
        for name in self._probes:
            STORE_UP.labels(name).set(0 if name in failures else 1)
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if failures
            else health_pb2.HealthCheckResponse.SERVING
        )
        for service in self._services:
            await self._servicer.set(service, status)
        for service in self._unimplemented:
            await self._servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        return not failures

    async def _probe(self, name: str, probe: Probe) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe(), timeout=max(self._interval, 1.0))
        except Exception as exc:
            return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return name, None

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # the monitor must outlive any single failure
                log.exception("health probe failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self._servicer.enter_graceful_shutdown()
