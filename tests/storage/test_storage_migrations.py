from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from convergio_server.infrastructure import open_infrastructure
from convergio_server.storage.migrations import (
    MigrationError,
    apply_migrations,
    list_migrations,
)
from convergio_server.storage.postgres import create_pool

from tests.platform.procs import CONVERGIO, server_env
from tests.support.server import server_settings

NewDatabase = Callable[[], Awaitable[str]]


def test_packaged_migrations_start_with_tenancy() -> None:
    migrations = list_migrations()
    assert migrations[0].version == 1
    assert migrations[0].name == "0001_tenancy"
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


async def test_apply_once_then_nothing(new_database: NewDatabase) -> None:
    conn = await asyncpg.connect(await new_database())
    try:
        expected = [m.name for m in list_migrations()]
        assert await apply_migrations(conn) == expected
        assert await apply_migrations(conn) == []
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == expected
        # The advisory lock is released after a run (pg_locks is server-wide: filter).
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert held == 0
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(new_database: NewDatabase) -> None:
    dsn = await new_database()
    pool_a = await create_pool(dsn, min_size=1, max_size=2)
    pool_b = await create_pool(dsn, min_size=1, max_size=2)
    try:
        results = await asyncio.gather(*(apply_migrations(p) for p in (pool_a, pool_b, pool_a)))
        expected = [m.name for m in list_migrations()]
        assert sorted(results, key=len) == [[], [], expected]
        assert await pool_a.fetchval("SELECT count(*) FROM schema_migrations") == len(expected)
    finally:
        await pool_a.close()
        await pool_b.close()


async def test_tenancy_schema(new_database: NewDatabase) -> None:
    pool = await create_pool(await new_database(), min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO tenants (id, name) VALUES ('t-schema', 'Acme')")
            await conn.execute(
                "INSERT INTO api_keys (key_id, tenant_id, name, principal, roles, secret_hash)"
                " VALUES ('k1', 't-schema', 'ci', 'svc:ci', ARRAY['admin'], '\\x00')"
            )
            await conn.execute(
                "INSERT INTO idempotency_keys (tenant_id, method, request_id, request_hash, status)"
                " VALUES ('t-schema', '/m', 'r1', '\\x01', 'pending')"
            )
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO idempotency_keys"
                        " (tenant_id, method, request_id, request_hash, status)"
                        " VALUES ('t-schema', '/m', 'r1', '\\x02', 'pending')"
                    )
            await conn.execute("DELETE FROM tenants WHERE id = 't-schema'")
            assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE key_id = 'k1'") == 0
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM idempotency_keys WHERE tenant_id = 't-schema'"
                )
                == 0
            )
            # The product rule: every table but tenants (and the migration log) has tenant_id.
            missing = await conn.fetch(
                """
                SELECT t.table_name FROM information_schema.tables t
                WHERE t.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                  AND t.table_name NOT IN ('tenants', 'schema_migrations')
                  AND NOT EXISTS (
                    SELECT 1 FROM information_schema.columns c
                    WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
                      AND c.column_name = 'tenant_id')
                """
            )
            assert [r["table_name"] for r in missing] == []
    finally:
        await pool.close()


async def test_changed_checksum_is_an_error_naming_the_file(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (tenant_id text);\n")
    (tmp_path / "README.txt").write_text("not a migration")
    conn = await asyncpg.connect(await new_database())
    try:
        assert await apply_migrations(conn, directory=tmp_path) == ["0001_first"]
        # Line endings alone do not count as a change.
        (tmp_path / "0001_first.sql").write_bytes(b"CREATE TABLE first (tenant_id text);\r\n")
        assert await apply_migrations(conn, directory=tmp_path) == []

        (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (tenant_id int);\n")
        (tmp_path / "0002_second.sql").write_text("CREATE TABLE second (tenant_id text);\n")
        with pytest.raises(MigrationError, match=r"0001_first\.sql"):
            await apply_migrations(conn, directory=tmp_path)
        # Nothing after the mismatch was applied.
        assert await conn.fetchval("SELECT to_regclass('second')") is None
    finally:
        await conn.close()


async def test_failed_migration_is_rolled_back(new_database: NewDatabase, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (tenant_id text);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE half (tenant_id text);\nSELECT no_such_function();"
    )
    conn = await asyncpg.connect(await new_database())
    try:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql"):
            await apply_migrations(conn, directory=tmp_path)
        assert await conn.fetchval("SELECT to_regclass('ok')") is not None
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]

        (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (tenant_id text);")
        assert await apply_migrations(conn, directory=tmp_path) == ["0002_broken"]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["1_short.sql"], r"1_short\.sql is not named"),
        (["0001_Upper.sql"], r"0001_Upper\.sql is not named"),
        (["0001_a.sql", "0001_b.sql"], r"share version 1"),
    ],
)
def test_bad_file_names_are_rejected(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        list_migrations(tmp_path)


async def test_a_changed_migration_stops_migrate_and_serve_with_one_line(
    new_database: NewDatabase, tmp_path: Path, redis_url: str
) -> None:
    # An operator's database whose history disagrees with the shipped files: one line
    # naming the file, no traceback.
    dsn = await new_database()
    env = server_env(
        DATABASE_URL=dsn, REDIS_URL=redis_url, CONVERGIO_DATA_DIR=str(tmp_path / "data")
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONVERGIO, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    assert (await asyncio.to_thread(run, "migrate")).returncode == 0
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = md5('x') WHERE version = 4")
    finally:
        await conn.close()
    for args in (("migrate",), ("serve", "--listen", "127.0.0.1:0")):
        done = await asyncio.to_thread(run, *args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "0004_flags.sql" in lines[0], done.stderr


async def test_a_start_that_migrates_says_which_migrations_it_applied(
    new_database: NewDatabase,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="convergio_server.infrastructure")
    settings = server_settings(tmp_path, await new_database(), redis_url, redis_prefix)
    said = []
    for _ in range(2):  # the second start has nothing to apply: it says nothing
        caplog.clear()
        infra = await open_infrastructure(settings)
        await infra.close()
        said.append([r.getMessage() for r in caplog.records if "migrations" in r.getMessage()])
    (first,) = said[0]
    assert "0001_tenancy" in first and list_migrations()[-1].name in first
    assert said[1] == []
