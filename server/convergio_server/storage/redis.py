"""Redis through redis.asyncio: client creation, a readiness probe, recognising unavailability,
and key naming. Every key of the product starts with a configurable prefix (`Keys`), so that
several deployments or test runs can share one Redis.

The client reconnects by itself: a command after Redis comes back opens a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from convergio_server import __version__
from convergio_server.domain.errors import Unavailable, store_unavailable

# What `CLIENT LIST` shows as lib-name: redis-py, used by Convergio. Given once: without it
# every new connection looks redis-py's version up in the installed packages (~0.2 ms).
_DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__).add_upstream_driver(
    "convergio", __version__
)


def create_redis(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    socket_connect_timeout: float | None = 2.0,
    health_check_interval: int = 30,
    retries: int = 2,
    max_connections: int | None = None,
) -> aioredis.Redis:
    """A client for `url` (`redis://`, `rediss://` or `unix://`) returning bytes.

    Connection errors and timeouts are retried `retries` times with a short jittered backoff
    (at most about a second in total), so that a blip is absorbed but an outage is reported
    quickly. Blocking reads (XREAD BLOCK, BLPOP) need a `socket_timeout` longer than their block
    time, or `None`, on a client of their own.
    """
    client = aioredis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        health_check_interval=health_check_interval,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
        max_connections=max_connections,
        driver_info=_DRIVER,
    )
    pool = client.connection_pool
    pool.connection_class = _FAST_PACKING.get(pool.connection_class, pool.connection_class)
    return client


class _HiredisPacking:
    """Builds the wire form of a command with hiredis (C) instead of redis-py's Python
    packer. The guards' and event log's scripts take dozens of arguments, and packing them
    in Python cost more than the Redis round trip itself."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # Like redis-py: "CONFIG GET" is sent as two words.
        if isinstance(first, str) and " " in first:
            args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _FastConnection(_HiredisPacking, aioredis.Connection):
    pass


class _FastUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


class _FastSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


_FAST_PACKING: dict[type[Any], type[Any]] = {
    aioredis.Connection: _FastConnection,
    aioredis.UnixDomainSocketConnection: _FastUnixConnection,
    aioredis.SSLConnection: _FastSSLConnection,
}


def is_unavailable_error(exc: BaseException) -> bool:
    """True if `exc` (or an exception it was raised from) says that Redis cannot be reached:
    refused or lost connections, timeouts, a server still loading its data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # BusyLoadingError is a ConnectionError; TimeoutError (asyncio's too) is an OSError.
        if isinstance(current, Unavailable | RedisConnectionError | RedisTimeoutError | OSError):
            return True
        current = current.__cause__
    return False


@contextlib.asynccontextmanager
async def outage_as_unavailable() -> AsyncIterator[None]:
    """Redis out of reach, raised as the domain's Unavailable, so that domain code can do
    without what Redis would have added (and tell an outage from a refusal)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, Unavailable) and is_unavailable_error(exc):
            raise store_unavailable(
                f"Redis is unreachable: {exc or type(exc).__name__}", "redis"
            ) from exc
        raise


# A probe owns its deadline, so it takes `timeout` rather than relying on the caller's scope.
async def check_redis(client: aioredis.Redis, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Readiness probe: PING within `timeout` seconds. Raises `Unavailable` on any failure."""
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        raise Unavailable(
            f"Redis is not ready: {detail}", metadata={"dependency": "redis"}
        ) from exc


_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*?[]"})


@dataclass(frozen=True)
class Keys:
    """Builds prefixed Redis keys: `Keys("cvg").k("flags", "t1") == "cvg:flags:t1"`."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.endswith(":"):
            raise ValueError(
                f"Redis key prefix must be non-empty without a trailing ':': {self.prefix!r}"
            )

    def k(self, *parts: str | int) -> str:
        """The key `<prefix>:<part>:<part>...`."""
        if not parts:
            raise ValueError("a key needs at least one part after the prefix")
        return ":".join((self.prefix, *map(str, parts)))

    def pattern(self, *parts: str | int) -> str:
        """SCAN MATCH pattern for every key under `<prefix>:<parts>:`, with glob characters of
        the prefix and parts escaped."""
        literal = ":".join((self.prefix, *map(str, parts))).translate(_GLOB_SPECIAL)
        return literal + ":*"
