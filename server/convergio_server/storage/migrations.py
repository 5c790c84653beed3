"""Versioned SQL migrations.

Files `NNNN_name.sql` in the `migrations/` directory next to this module are applied in
version order, each in its own transaction, and recorded in `schema_migrations` with a checksum
of the file. Applied files must never change: a different checksum is an error, and the fix is
a new migration. A whole run holds a PostgreSQL advisory lock, so several server processes that
start together apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

PoolOrConnection: TypeAlias = (
    "asyncpg.Pool[Any] | asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
)
_Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# Session-level advisory lock key shared by every process migrating this database:
# the bytes of "cvg-migr" read as a (positive) int64.
ADVISORY_LOCK_KEY = int.from_bytes(b"cvg-migr", "big")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      int PRIMARY KEY,
    name         text NOT NULL,
    checksum     text NOT NULL,
    applied_time timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migration files or the recorded history are inconsistent; the message names the
    file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file name without ".sql", for example "0001_tenancy"
    sql: str
    checksum: str  # sha256 hex of the SQL with normalised line endings

    @property
    def file_name(self) -> str:
        return f"{self.name}.sql"


def _default_directory() -> Traversable:
    return files(__package__ or "convergio_server.storage") / "migrations"


def list_migrations(directory: Traversable | None = None) -> list[Migration]:
    """All migrations in `directory` (default: the packaged ones), in version order."""
    root = directory if directory is not None else _default_directory()
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name} is not named NNNN_name.sql "
                "(four digits, then lowercase letters, digits and underscores)"
            )
        # A checkout with CRLF line endings must not look like an edited migration.
        sql = entry.read_bytes().decode("utf-8").replace("\r\n", "\n")
        migration = Migration(
            version=int(match["version"]),
            name=entry.name.removesuffix(".sql"),
            sql=sql,
            checksum=hashlib.sha256(sql.encode("utf-8")).hexdigest(),
        )
        other = found.get(migration.version)
        if other is not None:
            raise MigrationError(
                f"migration files {other.file_name} and {migration.file_name} "
                f"share version {migration.version}"
            )
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


async def apply_migrations(
    pool_or_conn: PoolOrConnection, *, directory: Traversable | None = None
) -> list[str]:
    """Apply the pending migrations; returns the names applied by this call (empty when the
    schema is current). Safe to run concurrently from several processes."""
    migrations = list_migrations(directory)
    if isinstance(pool_or_conn, asyncpg.Pool):
        # One dedicated connection: the advisory lock belongs to the session that took it.
        async with pool_or_conn.acquire() as conn:
            return await _apply_locked(conn, migrations)
    return await _apply_locked(pool_or_conn, migrations)


async def _apply_locked(conn: _Conn, migrations: list[Migration]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        return await _apply(conn, migrations)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def _apply(conn: _Conn, migrations: list[Migration]) -> list[str]:
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    applied = {int(row["version"]): str(row["checksum"]) for row in rows}
    # Check the whole history before changing anything. Versions recorded in the database but
    # missing here come from newer code (a rolling deploy) and are left alone.
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"migration file {migration.file_name} was changed after it was applied "
                f"(checksum {checksum[:12]} in schema_migrations, {migration.checksum[:12]} "
                "on disk); revert the change and add a new migration instead"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration file {migration.file_name} failed: {exc}") from exc
        done.append(migration.name)
    return done
