from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.exceptions
from convergio_server import __version__
from convergio_server.domain.errors import Unavailable
from convergio_server.storage.redis import Keys, check_redis, create_redis, is_unavailable_error


def test_keys_carry_the_prefix() -> None:
    keys = Keys("cvg:test")
    assert keys.k("a", "b") == "cvg:test:a:b"
    assert keys.k("events", 7) == "cvg:test:events:7"
    assert keys.pattern() == "cvg:test:*"
    assert keys.pattern("flags") == "cvg:test:flags:*"
    assert Keys("we*ird[1]").pattern() == "we\\*ird\\[1\\]:*"
    with pytest.raises(ValueError):
        keys.k()
    with pytest.raises(ValueError):
        Keys("")
    with pytest.raises(ValueError):
        Keys("trailing:")


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        ConnectionResetError(),
        TimeoutError(),
        Unavailable("Redis is not ready"),
    ],
    ids=repr,
)
def test_unavailable_errors_are_recognised(exc: BaseException) -> None:
    assert is_unavailable_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        redis.exceptions.DataError("bad value"),
        ValueError("bad input"),
    ],
    ids=repr,
)
def test_other_errors_are_not_unavailability(exc: BaseException) -> None:
    assert not is_unavailable_error(exc)


async def test_client_returns_bytes_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    client = create_redis(redis_url)
    try:
        await check_redis(client, timeout=5.0)
        key = Keys(redis_prefix).k("storage", "bytes")
        await client.set(key, "välue")
        assert await client.get(key) == "välue".encode()
    finally:
        await client.aclose()


async def test_unreachable_redis_raises_unavailable(tmp_path: Path) -> None:
    client = create_redis(f"unix://{tmp_path}/missing.sock?db=0", retries=0)
    try:
        with pytest.raises(Unavailable) as probe:
            await check_redis(client, timeout=5.0)
        assert is_unavailable_error(probe.value)
        with pytest.raises(redis.exceptions.ConnectionError) as direct:
            await client.get("x")
        assert is_unavailable_error(direct.value)
    finally:
        await client.aclose()


async def test_commands_packed_in_c_reach_redis_intact(redis_url: str, redis_prefix: str) -> None:
    # Multi-word commands, floats, non-ASCII text, bytes and scripts with many arguments.
    client = create_redis(redis_url)
    keys = Keys(redis_prefix)
    try:
        await client.set(keys.k("packed", "float"), 2.5)
        assert await client.get(keys.k("packed", "float")) == b"2.5"
        await client.client_setname("convergio-test")
        assert await client.client_getname() in (b"convergio-test", "convergio-test")
        args = [f"värde-{i}" for i in range(40)] + [b"\x00\xff"]
        echoed = await client.eval("return ARGV", 0, *args)
        assert echoed == [a.encode() if isinstance(a, str) else a for a in args]
        async with client.pipeline() as pipe:
            pipe.incr(keys.k("packed", "n"))
            pipe.expire(keys.k("packed", "n"), 60)
            assert await pipe.execute() == [1, True]
    finally:
        await client.aclose()


async def test_connections_name_the_product_to_operators(redis_url: str) -> None:
    """`CLIENT LIST` tells an operator which connections are Convergio's (Redis 7.2 and
    later keep what a client says of itself)."""
    client = create_redis(redis_url)
    try:
        info = await client.client_info()
        driver = client.connection_pool.connection_kwargs["driver_info"]
        assert driver.formatted_name == f"redis-py(convergio_v{__version__})"
        assert driver.lib_version == redis.__version__
        if "lib-name" in info:
            assert info["lib-name"] == driver.formatted_name
    finally:
        await client.aclose()
