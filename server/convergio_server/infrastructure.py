"""Start-up and shutdown of the stores: PostgreSQL and Redis, embedded or external."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from convergio_server.config import Settings
from convergio_server.storage import postgres as pg
from convergio_server.storage import redis as rds
from convergio_server.storage.embedded import EmbeddedPostgres, EmbeddedRedis
from convergio_server.storage.migrations import MigrationError, apply_migrations
from convergio_server.storage.redis_pipe import PipelinedRedis

log = logging.getLogger(__name__)


class StartupError(Exception):
    """A store could not be reached or prepared; the message says which and why."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass
class Infrastructure:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    database_url: str
    redis_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    applied_migrations: list[str] = field(default_factory=list)
    _hot_redis: PipelinedRedis | None = field(default=None, repr=False)

    @property
    def hot_redis(self) -> PipelinedRedis:
        """One pipelined connection for the commands on the way of every turn and token
        (see `storage.redis_pipe`), opened on first use."""
        if self._hot_redis is None:
            self._hot_redis = PipelinedRedis(
                self.redis_url,
                timeout=self.settings.connect_timeout_seconds,
                connect_timeout=self.settings.connect_timeout_seconds,
            )
        return self._hot_redis

    async def check_postgres(self) -> None:
        await pg.check_postgres(self.pool, timeout=2.0)

    async def check_redis(self) -> None:
        await rds.check_redis(self.redis, timeout=2.0)

    async def close(self) -> None:
        closing = [self.pool.close(), self.redis.aclose()]
        if self._hot_redis is not None:
            closing.append(self._hot_redis.aclose())
        await asyncio.gather(*closing, return_exceptions=True)
        # Another `convergio` process may share the embedded servers: the last one stops them.
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.release)
        if self.embedded_postgres is not None:
            await asyncio.to_thread(self.embedded_postgres.release)


async def open_infrastructure(settings: Settings, *, migrate: bool = True) -> Infrastructure:
    """Start embedded stores where no URL is set, connect, and apply migrations."""
    embedded_pg: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    try:
        database_url = settings.database_url
        if not database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            embedded_pg = EmbeddedPostgres(settings.data_dir)
            await _start_embedded("PostgreSQL", embedded_pg.start)
            database_url = embedded_pg.url
        redis_url = settings.redis_url
        if not redis_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            embedded_redis = EmbeddedRedis(settings.data_dir)
            await _start_embedded("Redis", embedded_redis.start)
            redis_url = embedded_redis.url
        try:
            pool = await pg.create_pool(
                database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                connect_timeout=settings.connect_timeout_seconds,
                command_timeout=settings.db_command_timeout_seconds,
            )
        except Exception as exc:
            raise StartupError(
                f"PostgreSQL at {redact(database_url)} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        client = rds.create_redis(
            redis_url,
            socket_timeout=settings.connect_timeout_seconds,
            health_check_interval=30,
        )
        try:
            await rds.check_redis(client, timeout=settings.connect_timeout_seconds)
        except Exception as exc:
            await pool.close()
            await client.aclose()
            raise StartupError(
                f"Redis at {redact(redis_url)} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        infra = Infrastructure(
            settings, pool, client, database_url, redis_url, embedded_pg, embedded_redis
        )
        if migrate:
            try:
                started = time.monotonic()
                infra.applied_migrations = await apply_migrations(pool)
                if infra.applied_migrations:  # (an upgrade: operators want to see it)
                    log.info(
                        "database migrations applied in %.1f s: %s",
                        time.monotonic() - started,
                        ", ".join(infra.applied_migrations),
                    )
            except MigrationError as exc:  # said in one line, naming the file
                await infra.close()
                raise StartupError(f"database migrations: {exc}") from exc
            except Exception:
                await infra.close()
                raise
        return infra
    except BaseException:
        for server in (embedded_redis, embedded_pg):
            if server is not None:
                await asyncio.to_thread(server.release)
        raise


async def _start_embedded(what: str, start: object) -> None:
    assert callable(start)
    try:
        await asyncio.to_thread(start)
    except Exception as exc:
        raise StartupError(f"could not start the embedded {what}: {exc}") from exc
