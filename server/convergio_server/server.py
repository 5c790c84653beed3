"""The gRPC server: the call pipeline, services, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from convergio_server.api.access import AccessPolicy
from convergio_server.api.health import HealthMonitor
from convergio_server.api.pipeline import Authenticator, CallPipeline, PipelinedRegistry
from convergio_server.api.reflection import DocumentedReflectionServicer, documented_files
from convergio_server.api.rules import RULES
from convergio_server.api.services import ServiceContext, register_services
from convergio_server.api.validation import Validator
from convergio_server.config import Settings
from convergio_server.domain.auth import KeyManager, Principal, Role
from convergio_server.domain.errors import Unauthenticated
from convergio_server.infrastructure import Infrastructure, StartupError
from convergio_server.storage.keys import PgKeyStore
from convergio_server.telemetry import start_metrics_server
from convergio_server.tracing import start_tracing, stop_tracing

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


def bind_problem(setting: str, address: str) -> str | None:
    """One line saying why `address` (of the setting `setting`, named with where it was set)
    cannot be listened on, or None if it can. Asked before gRPC binds: gRPC only says that
    binding failed, and its core logs a line of its own to stderr."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"{setting}: cannot bind to {address}: {exc}"
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"{setting}: {address}: address in use"
                return f"{setting}: cannot bind to {address}: {exc.strerror or exc}"
    return None


@dataclass
class DevKey:
    """What start-up says about the development key: the token to print, or why none is."""

    token: str | None
    created: bool
    problem: str | None = None


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
                max_response_bytes=settings.max_message_bytes,
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
            unimplemented=self.context.unimplemented,
        )
        self.port = 0
        self._metrics: Any = None
        self._traces: TracerProvider | None = None

    async def start(self) -> int:
        """Bind both listeners, then serve. Raises StartupError when an address cannot be
        bound; on any failure nothing is left running."""
        try:
            return await self._start()
        except BaseException:
            await self.server.stop(None)
            if self._metrics is not None:
                self._metrics.shutdown()
                self._metrics = None
            stop_tracing(self._traces)
            self._traces = None
            raise

    async def _start(self) -> int:
        listen = self.settings.listen
        setting = f"listen ({self.settings.source('listen')})"
        problem = bind_problem(setting, listen)
        if problem is not None:
            raise StartupError(problem)
        try:
            self.port = self.server.add_insecure_port(listen)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise StartupError(
                bind_problem(setting, listen) or f"{setting}: cannot bind to {listen}"
            )
        # Bound before serving so that a taken metrics port stops the start, not a later call.
        try:
            self._metrics = start_metrics_server(self.settings.metrics_listen)
        except OSError as exc:
            metrics = f"metrics_listen ({self.settings.source('metrics_listen')})"
            address = self.settings.metrics_listen
            raise StartupError(
                bind_problem(metrics, address) or f"{metrics}: cannot bind to {address}: {exc}"
            ) from None
        # A collector that is down then holds up the server's stop no longer than a store.
        self._traces = start_tracing(
            self.settings.traces_endpoint,
            self.settings.traces_sample_ratio,
            timeout=self.settings.connect_timeout_seconds,
        )
        await self.health.check_once()
        for starter in self.context.starters:
            await starter()
        await self.server.start()
        self.health.start()
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
        tenant = self.settings.dev_tenant
        path = self.settings.data_dir / "dev-api-key"
        saved = path.read_text().strip() if path.is_file() else ""
        saved_tenant, saved_problem = await self._check_saved_key(saved)
        token = await self.keys.bootstrap(tenant)
        if token is not None:
            if saved_tenant is not None and saved_tenant != tenant:
                # Still a working key of another tenant: its secret exists only in this file.
                path.rename(path.with_name(f"dev-api-key.{saved_tenant}"))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
            return DevKey(token, created=True)
        if saved and saved_tenant == tenant:
            return DevKey(saved, created=False)
        # The tenant has keys already, so none is minted: a revoked key was revoked on
        # purpose, and a key of another tenant is not this one's to replace.
        hint = (
            f"convergio keys create --tenant {tenant} --name dev --role admin"
            " (or remove the file and the tenant's keys to have one made at start)"
        )
        if not saved:
            problem = f"tenant {tenant} has API keys already and none is saved in {path}"
        else:
            if saved_problem is None:
                saved_problem = f"belongs to tenant {saved_tenant}, not {tenant}"
            problem = f"the key in {path} {saved_problem}"
        return DevKey(None, created=False, problem=f"{problem}; for a new one: {hint}")

    async def _check_saved_key(self, token: str) -> tuple[str | None, str | None]:
        """The tenant of a saved key that still works, or why it does not."""
        if not token:
            return None, None
        try:
            principal = await self.keys.authenticate(token)
        except Unauthenticated as exc:
            if "revoked" in str(exc):
                return None, "was revoked"
            return None, "is not a key of this database"
        return principal.tenant_id, None

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let open ones finish within the grace period, close."""
        grace = self.settings.grace_period_seconds if grace is None else grace
        self.context.drain()
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
        # Off the event loop: the last spans may wait for the collector.
        await asyncio.to_thread(stop_tracing, self._traces)
        self._traces = None

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def serve_until_signalled(server: ConvergioServer) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; a second signal during
    the shutdown cancels the open streams and stops at once."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    forced: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not stopping.is_set():
            stopping.set()
        elif not forced:
            log.warning("second signal: stopping now, open streams are cancelled")
            # A smaller grace given to a stop in progress makes gRPC cancel every call now.
            forced.append(asyncio.create_task(server.server.stop(None)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    waiter = asyncio.create_task(server.wait_for_termination())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            log.info("shutting down", extra={"grace_seconds": server.settings.grace_period_seconds})
            await server.stop()
        for task in forced:
            await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        waiter.cancel()
        signalled.cancel()
