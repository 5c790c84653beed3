"""PostgreSQL through asyncpg: pool creation, a readiness probe, and recognising the errors
that mean "PostgreSQL is not reachable right now" (as opposed to a bad query).

A pool survives a PostgreSQL restart by itself: asyncpg drops a connection that the server
closed and opens a new one on the next acquire. Queries that were in flight fail with an error
that `is_unavailable_error` recognises; the API layer reports those as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from convergio_server.domain.errors import Unavailable, store_unavailable

# asyncpg's classes are generic only in its stubs, hence the string aliases.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up or shutting
# down), 57P04 database_dropped, 57P05 idle_session_timeout. The rest of class 57 is not about
# availability: 57014 is a cancelled query (statement_timeout).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P")
# too_many_connections: the server refuses new sessions, like a refused connect.
_UNAVAILABLE_SQLSTATES = frozenset({"53300"})
_CLOSED_CONNECTION = re.compile(r"connection (is|was) closed")


def is_unavailable_error(exc: BaseException) -> bool:
    """True if `exc` (or an exception it was raised from) says that PostgreSQL cannot be
    reached: refused or lost connections, server shutdown or restart, connect timeouts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_unavailable(current):
            return True
        current = current.__cause__
    return False


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, Unavailable | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES) or (
            sqlstate in _UNAVAILABLE_SQLSTATES
        )
    if isinstance(exc, asyncpg.InterfaceError):
        return _CLOSED_CONNECTION.search(str(exc)) is not None
    # ConnectionRefusedError, a missing unix socket (FileNotFoundError), resets, and
    # TimeoutError (an OSError subclass; asyncio.TimeoutError is the same class).
    return isinstance(exc, OSError)


class PooledConnection(asyncpg.Connection):  # type: ignore[type-arg]
    """A pooled connection released without asyncpg's reset query (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL: one more round trip per release). Nothing here leaves such
    session state on a pooled connection: no LISTEN, no SET, no session advisory lock (the
    migrations take theirs on a connection of their own), no cursor outside a transaction.
    asyncpg still rolls back a transaction left open, whatever this returns."""

    def get_reset_query(self) -> str:
        return ""


@contextlib.asynccontextmanager
async def outage_as_unavailable() -> AsyncIterator[None]:
    """PostgreSQL out of reach, raised as the domain's Unavailable (worth retrying), so that
    domain code tells an outage from a statement PostgreSQL refused."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, Unavailable) and is_unavailable_error(exc):
            raise _unavailable(exc, "is unreachable") from exc
        raise


def _unavailable(exc: BaseException, what: str) -> Unavailable:
    detail = str(exc) or type(exc).__name__
    return store_unavailable(f"PostgreSQL {what}: {detail}", "postgresql")


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 5.0,
    command_timeout: float | None = None,
    init: Callable[[Connection], Coroutine[Any, Any, None]] | None = None,
) -> Pool:
    """Open an asyncpg pool. Raises `Unavailable` if PostgreSQL cannot be reached while the
    first `min_size` connections are opened (`min_size=0` connects lazily)."""
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
            init=init,
            connection_class=PooledConnection,
        )
    except Exception as exc:
        if is_unavailable_error(exc):
            raise _unavailable(exc, "is unreachable") from exc
        raise


# A probe owns its deadline, so it takes `timeout` rather than relying on the caller's scope.
async def check_postgres(pool_or_dsn: Pool | str, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Readiness probe: `SELECT 1` within `timeout` seconds. Raises `Unavailable` on any
    failure, since a probe only needs to know whether PostgreSQL serves queries."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(pool_or_dsn, str):
                conn = await asyncpg.connect(pool_or_dsn, timeout=timeout)
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close(timeout=timeout)
            else:
                await pool_or_dsn.fetchval("SELECT 1")
    except Exception as exc:
        raise _unavailable(exc, "is not ready") from exc


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials as `dsn`, on another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(dsn: str, name: str, *, connect_timeout: float = 10.0) -> str:
    """Create database `name` on the server of `dsn` unless it exists (two callers may race;
    both succeed). Returns the DSN of that database."""
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    except Exception as exc:
        if is_unavailable_error(exc):
            raise _unavailable(exc, "is unreachable") from exc
        raise
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                # Identifiers cannot be bound as parameters.
                await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # created concurrently by someone else
    finally:
        await conn.close(timeout=connect_timeout)
    return dsn_with_database(dsn, name)
