"""`convergio serve` as an operator runs it: start-up failures, the embedded
stores with data that survives a restart, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from convergio import AsyncClient, errors
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.platform.procs import (
    CONVERGIO,
    free_port,
    read_until,
    server_env,
    start_serve,
    wait_exit,
)


def _run_serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVERGIO, "serve"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def test_unreachable_postgres_exits_non_zero_naming_it(tmp_path: Path) -> None:
    env = server_env(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        REDIS_URL="redis://127.0.0.1:1/0",
        CONVERGIO_CONNECT_TIMEOUT_SECONDS="2",
        CONVERGIO_DATA_DIR=str(tmp_path),
    )
    done = await asyncio.to_thread(_run_serve, env, tmp_path)
    assert done.returncode == 2
    assert "PostgreSQL" in done.stderr and "unreachable" in done.stderr


async def test_unreachable_redis_exits_non_zero_naming_it(tmp_path: Path, pg_dsn: str) -> None:
    env = server_env(
        DATABASE_URL=pg_dsn,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CONVERGIO_CONNECT_TIMEOUT_SECONDS="2",
        CONVERGIO_DATA_DIR=str(tmp_path),
    )
    done = await asyncio.to_thread(_run_serve, env, tmp_path)
    assert done.returncode == 2
    assert "Redis" in done.stderr and "unreachable" in done.stderr


async def test_bad_setting_is_reported_not_a_traceback(tmp_path: Path) -> None:
    env = server_env(CONVERGIO_LISTEN="no-port-here", CONVERGIO_DATA_DIR=str(tmp_path))
    done = await asyncio.to_thread(_run_serve, env, tmp_path)
    assert done.returncode == 2
    assert "listen must be host:port" in done.stderr
    assert "Traceback" not in done.stderr


async def test_embedded_stores_print_key_and_keep_data_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(
        CONVERGIO_LISTEN=f"127.0.0.1:{port}",
        CONVERGIO_GRACE_PERIOD_SECONDS="1",
    )
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    first = start_serve(env, tmp_path, stderr=log)
    try:
        banner = await asyncio.to_thread(read_until, first, "grpcurl")
        assert f"listening on 127.0.0.1:{port}" in banner
        assert "PostgreSQL embedded" in banner and "Redis embedded" in banner
        token = next(w for w in banner.split() if w.startswith("cvg_"))
        assert (tmp_path / ".convergio" / "dev-api-key").read_text().strip() == token
        async with AsyncClient(f"127.0.0.1:{port}", api_key=token) as client:
            assert await client.health() == "SERVING"
            with pytest.raises(errors.Unimplemented):
                await client.workflows.list_workflows()
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(wait_exit, first, log_path) == 0
    finally:
        if first.poll() is None:
            first.kill()
    second = start_serve(env, tmp_path, stderr=log)
    try:
        banner = await asyncio.to_thread(read_until, second, "grpcurl")
        # The same key, read back from the data directory, still authenticates.
        assert token in banner and "from" in banner
        async with AsyncClient(f"127.0.0.1:{port}", api_key=token) as client:
            with pytest.raises(errors.Unimplemented):
                await client.workflows.list_workflows()
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.to_thread(wait_exit, second, log_path) == 0
        finally:
            if second.poll() is None:
                second.kill()
            log.close()


async def test_sigterm_lets_open_streams_end_and_exits_cleanly(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = server_env(
        DATABASE_URL=pg_dsn,
        REDIS_URL=redis_url,
        CONVERGIO_REDIS_PREFIX=redis_prefix,
        CONVERGIO_LISTEN=f"127.0.0.1:{port}",
        CONVERGIO_DATA_DIR=str(tmp_path),
        CONVERGIO_GRACE_PERIOD_SECONDS="5",
    )
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    process = start_serve(env, tmp_path, stderr=log)
    try:
        await asyncio.to_thread(read_until, process, "listening")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            # The open stream is told the server is going away, then ends.
            statuses = [first.status]
            try:
                while (update := await watch.read()) is not grpc.aio.EOF:
                    statuses.append(update.status)
            except grpc.aio.AioRpcError:
                pass
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
        assert await asyncio.to_thread(wait_exit, process, log_path) == 0
        # Stopped: it no longer accepts connections.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            assert caught.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
