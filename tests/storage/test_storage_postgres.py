from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import pytest
from convergio_server.domain.errors import Unavailable
from convergio_server.storage.postgres import (
    check_postgres,
    create_pool,
    dsn_with_database,
    ensure_database,
    is_unavailable_error,
)


def _caused_by(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CrashShutdownError("crash"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
        asyncpg.exceptions.ConnectionFailureError("failure"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory"),
        TimeoutError(),
        Unavailable("PostgreSQL is unreachable"),
        _caused_by(RuntimeError("wrapped"), ConnectionResetError()),
    ],
    ids=repr,
)
def test_unavailable_errors_are_recognised(exc: BaseException) -> None:
    assert is_unavailable_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        asyncpg.InterfaceError("pool is closing"),
        ValueError("bad input"),
    ],
    ids=repr,
)
def test_other_errors_are_not_unavailability(exc: BaseException) -> None:
    assert not is_unavailable_error(exc)


async def test_check_postgres_accepts_dsn_and_pool(pg_dsn: str) -> None:
    await check_postgres(pg_dsn, timeout=5.0)
    pool = await create_pool(pg_dsn, min_size=0, max_size=1)
    try:
        await check_postgres(pool, timeout=5.0)
    finally:
        await pool.close()


async def test_unreachable_server_raises_unavailable(tmp_path: Path) -> None:
    # A unix-socket directory with no server in it: refused at once, on any machine.
    dsn = f"postgresql://postgres@/convergio?host={tmp_path}"
    with pytest.raises(Unavailable) as probe:
        await check_postgres(dsn, timeout=5.0)
    assert is_unavailable_error(probe.value)
    with pytest.raises(Unavailable):
        await create_pool(dsn, min_size=1, max_size=1, connect_timeout=5.0)
    with pytest.raises(Unavailable):
        await ensure_database(dsn, "anything")


async def test_ensure_database_is_idempotent(pg_dsn: str) -> None:
    name = f"convergio_test_{secrets.token_hex(6)}"
    dsn = await ensure_database(pg_dsn, name)
    try:
        assert await ensure_database(pg_dsn, name) == dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def test_dsn_with_database_keeps_everything_else() -> None:
    assert (
        dsn_with_database("postgresql://u:p@h:5433/postgres?sslmode=disable", "other")
        == "postgresql://u:p@h:5433/other?sslmode=disable"
    )
    assert (
        dsn_with_database("postgresql://postgres@/convergio?host=/tmp/pg&port=5432", "x")
        == "postgresql://postgres@/x?host=/tmp/pg&port=5432"
    )
