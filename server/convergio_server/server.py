"""The gRPC server: the call pipeline, services, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from convergio_server.api.access import AccessPolicy
from convergio_server.api.health import HealthMonitor
from convergio_server.api.pipeline import Authenticator, CallPipeline, PipelinedRegistry
from convergio_server.api.reflection import DocumentedReflectionServicer, documented_files
from convergio_server.api.rules import RULES
from convergio_server.api.services import ServiceContext, register_services
from convergio_server.api.validation import Validator
from convergio_server.config import Settings
from convergio_server.domain.auth import KeyManager, Principal, Role
from convergio_server.infrastructure import Infrastructure
from convergio_server.storage.keys import PgKeyStore
from convergio_server.telemetry import start_metrics_server

log = logging.getLogger(__name__)
# At most this long of the grace period goes to ending the work still running (see `stop`).
STOP_WORK_SECONDS = 2.0


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients (the SDK) ping every 30 s; accept pings at most every 10 s.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def anonymous_callers(settings: Settings) -> dict[str, Principal]:
    """Who calls without an API key are: only flagd evaluation calls, as a member of
    `flagd_tenant` (OpenFeature's flagd provider in RPC mode sends no metadata)."""
    tenant = settings.anonymous_flagd_tenant
    if not tenant:
        return {}
    principal = Principal(tenant, "flagd", frozenset({Role.MEMBER}), "")
    return {"/flagd.evaluation.v1.Service/": principal}


@dataclass
class DevKey:
    token: str
    created: bool


class ConvergioServer:
    """One server process. `start()` binds and serves; `stop()` drains and closes."""

    def __init__(self, settings: Settings, infra: Infrastructure) -> None:
        self.settings = settings
        self.infra = infra
        self.keys = KeyManager(
            PgKeyStore(infra.pool), settings.auth_cache_seconds, settings.key_check_seconds
        )
        self.server = grpc.aio.server(options=server_options(settings))
        # Every handler wrapped by the call pipeline as it is added, not on every call.
        handlers = PipelinedRegistry(
            self.server,
            CallPipeline(
                Authenticator(self.keys, AccessPolicy(), anonymous_callers(settings)),
                Validator(RULES),
            ),
        )
        self.context = ServiceContext(settings=settings, infra=infra, keys=self.keys)
        service_names = register_services(handlers, self.context)
        self.health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, handlers)
        self.service_names = service_names
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DocumentedReflectionServicer(
                [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME],
                documented_files(),
            ),
            handlers,
        )
        self.health = HealthMonitor(
            self.health_servicer,
            service_names,
            {"postgresql": infra.check_postgres, "redis": infra.check_redis},
            settings.health_interval_seconds,
        )
        self.port = 0
        self._metrics: Any = None

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.listen}: address in use or invalid")
        await self.health.check_once()
        for starter in self.context.starters:
            await starter()
        await self.server.start()
        self.health.start()
        self._metrics = start_metrics_server(self.settings.metrics_listen)
        log.info("listening", extra={"address": self.address})
        return self.port

    @property
    def address(self) -> str:
        host = self.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def bootstrap_dev_key(self) -> DevKey | None:
        """Create the development tenant's admin key on first start and keep it in
        the data directory (mode 0600) so later starts can print it again."""
        if not self.settings.bootstrap_dev_key:
            return None
        path = self.settings.data_dir / "dev-api-key"
        token = await self.keys.bootstrap(self.settings.dev_tenant)
        if token is not None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
            return DevKey(token, created=True)
        if path.exists():
            return DevKey(path.read_text().strip(), created=False)
        return None

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let open ones finish within the grace period, close."""
        grace = self.settings.grace_period_seconds if grace is None else grace
        await self.health.stop()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        # Work still running near the end of the grace period (turns) is ended while its
        # streams are open, so that clients get its last events; then gRPC cancels the rest.
        margin = min(grace / 2, STOP_WORK_SECONDS)
        done, _ = await asyncio.wait({stopping}, timeout=grace - margin)
        if not done:
            try:
                async with asyncio.timeout(margin):
                    await self.context.stop_work()
            except TimeoutError:
                log.warning("running work did not end within the grace period")
        await stopping
        await self.keys.close()
        await self.context.close()
        if self._metrics is not None:
            self._metrics.shutdown()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def serve_until_signalled(server: ConvergioServer) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    waiter = asyncio.create_task(server.wait_for_termination())
    signalled = asyncio.create_task(stopping.wait())
    await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if stopping.is_set():
        log.info("shutting down", extra={"grace_seconds": server.settings.grace_period_seconds})
        await server.stop()
    waiter.cancel()
    signalled.cancel()
