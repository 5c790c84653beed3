"""The embedded servers, including stopping them under live clients: the private pair of
`tests/storage/conftest.py`, never the session's shared servers."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import redis.exceptions
from convergio_server.domain.errors import Unavailable
from convergio_server.storage import postgres as pg
from convergio_server.storage import redis as rds
from convergio_server.storage.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError

_T = TypeVar("_T")


async def _eventually(call: Callable[[], Awaitable[_T]]) -> _T:
    """The first successful result of `call`, retried while the error is an outage."""
    async with asyncio.timeout(30.0):
        while True:
            try:
                return await call()
            except Exception as exc:
                if not (pg.is_unavailable_error(exc) or rds.is_unavailable_error(exc)):
                    raise
            await asyncio.sleep(0.05)


async def test_postgres_keeps_data_across_restart(private_postgres: EmbeddedPostgres) -> None:
    assert private_postgres.is_running()
    url = private_postgres.url
    table = f"kept_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_database()") == "convergio"
        await conn.execute(f"CREATE TABLE {table} (v text); INSERT INTO {table} VALUES ('x')")
    finally:
        await conn.close()

    await asyncio.to_thread(private_postgres.stop)
    assert not private_postgres.is_running()
    await asyncio.to_thread(private_postgres.stop)  # stopping twice is harmless
    await asyncio.to_thread(private_postgres.start)
    await asyncio.to_thread(private_postgres.start)  # so is starting twice
    assert private_postgres.is_running()
    assert private_postgres.url == url

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval(f"SELECT v FROM {table}") == "x"
    finally:
        await conn.close()


async def test_pool_recovers_after_postgres_restart(private_postgres: EmbeddedPostgres) -> None:
    pool = await pg.create_pool(private_postgres.url, min_size=2, max_size=2)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        in_flight = asyncio.create_task(pool.fetchval("SELECT pg_sleep(60)"))
        await _eventually(lambda: _wait_for_sleeping_backend(pool))

        await asyncio.to_thread(private_postgres.stop)
        with pytest.raises(Exception) as during:
            await in_flight
        assert pg.is_unavailable_error(during.value), repr(during.value)
        with pytest.raises(Exception) as after:
            await pool.fetchval("SELECT 1")
        assert pg.is_unavailable_error(after.value), repr(after.value)
        with pytest.raises(Unavailable):
            await pg.check_postgres(pool, timeout=5.0)

        await asyncio.to_thread(private_postgres.start)
        # The same pool, not a new one: broken connections are replaced on acquire.
        assert await _eventually(lambda: pool.fetchval("SELECT 2")) == 2
        await pg.check_postgres(pool, timeout=5.0)
    finally:
        await pool.close()


async def _wait_for_sleeping_backend(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    sleeping = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
    )
    if not sleeping:
        raise TimeoutError("the long query has not started yet")


async def test_postgres_starts_after_a_crash(private_postgres: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(private_postgres.url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS crash (v int); INSERT INTO crash VALUES (1)")
    finally:
        await conn.close()
    # Killed outright, the postmaster leaves its pid and socket lock files behind, and stays a
    # zombie until its parent reaps it (PostgreSQL treats a zombie's pid as a live server).
    postmaster = int((private_postgres.pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    await _eventually(lambda: _assert_stopped(private_postgres))

    await asyncio.to_thread(private_postgres.start)
    conn = await asyncpg.connect(private_postgres.url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM crash") >= 1
    finally:
        await conn.close()


async def _assert_stopped(server: EmbeddedPostgres | EmbeddedRedis) -> None:
    if server.is_running():
        raise TimeoutError("still running")


async def test_postgres_starts_over_a_reused_pid(private_postgres: EmbeddedPostgres) -> None:
    await asyncio.to_thread(private_postgres.stop)
    # The pid in the files left by a crash may by now belong to another process: here, this
    # test process.
    pgdata = private_postgres.pgdata
    me = str(os.getpid())
    lines = [me, str(pgdata), "1700000000", "5432", str(pgdata), "", "  5432001 0", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    (pgdata / ".s.PGSQL.5432.lock").write_text(f"{me}\n{pgdata}\n1700000000\n5432\n")
    assert not private_postgres.is_running()

    await asyncio.to_thread(private_postgres.start)
    assert private_postgres.is_running()
    conn = await asyncpg.connect(private_postgres.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_postgres_url_needs_a_start(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="never started"):
        _ = EmbeddedPostgres(tmp_path).url


async def test_redis_keeps_data_across_restart(private_redis: EmbeddedRedis) -> None:
    assert private_redis.is_running()
    client = rds.create_redis(private_redis.url)
    try:
        await client.set("kept", b"\x00binary\xff")
        await client.xadd("stream", {"k": "v"})

        await asyncio.to_thread(private_redis.stop)
        assert not private_redis.is_running()
        await asyncio.to_thread(private_redis.stop)  # stopping twice is harmless
        await asyncio.to_thread(private_redis.start)
        await asyncio.to_thread(private_redis.start)  # so is starting twice
        assert private_redis.is_running()

        assert await _eventually(lambda: client.get("kept")) == b"\x00binary\xff"
        assert await client.xlen("stream") == 1
    finally:
        await client.aclose()


async def test_redis_client_recovers_after_restart(private_redis: EmbeddedRedis) -> None:
    client = rds.create_redis(private_redis.url, retries=1)
    try:
        await client.set("recover", b"1")
        await asyncio.to_thread(private_redis.stop)
        with pytest.raises(redis.exceptions.ConnectionError) as down:
            await client.get("recover")
        assert rds.is_unavailable_error(down.value)
        with pytest.raises(Unavailable):
            await rds.check_redis(client, timeout=5.0)

        await asyncio.to_thread(private_redis.start)
        assert await _eventually(lambda: client.get("recover")) == b"1"
        await rds.check_redis(client, timeout=5.0)
    finally:
        await client.aclose()


async def test_redis_start_adopts_a_running_server(private_redis: EmbeddedRedis) -> None:
    client = rds.create_redis(private_redis.url)
    try:
        pid = (await client.info("server"))["process_id"]
        # As a second process on the same data directory would see it.
        other = EmbeddedRedis(private_redis.data_dir)
        await asyncio.to_thread(other.start)
        assert other.is_running()
        assert other.url == private_redis.url
        assert (await client.info("server"))["process_id"] == pid
    finally:
        await client.aclose()


async def test_redis_starts_after_a_crash(private_redis: EmbeddedRedis) -> None:
    client = rds.create_redis(private_redis.url, retries=0)
    try:
        await client.set("crash", b"kept")
        pid = (await client.info("server"))["process_id"]
        # The reply comes after the append-only file was written (fsync is not needed to
        # survive a killed process, only a lost machine).
        os.kill(pid, signal.SIGKILL)
        await _eventually(lambda: _assert_stopped(private_redis))

        await asyncio.to_thread(private_redis.start)
        assert await _eventually(lambda: client.get("crash")) == b"kept"
    finally:
        await client.aclose()


async def test_redis_socket_falls_back_to_a_short_path(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 110)
    server = EmbeddedRedis(data_dir)
    assert len(str(server.dir / "redis.sock")) > 107
    assert server.socket_path.parent.parent == Path("/tmp")
    assert EmbeddedRedis(data_dir).socket_path == server.socket_path  # stable per directory
    await asyncio.to_thread(server.start)
    try:
        client = rds.create_redis(server.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
        assert (data_dir / "redis" / "appendonly.aof").exists()
    finally:
        await asyncio.to_thread(server.stop)


async def test_redis_start_failure_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "redis").write_text("a file where the directory should be")
    with pytest.raises(EmbeddedServerError, match="embedded Redis"):
        await asyncio.to_thread(EmbeddedRedis(tmp_path).start)
