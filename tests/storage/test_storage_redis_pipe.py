"""The pipelined Redis connection of the hot paths: replies reach the right callers, errors
stay with their command and keep redis-py's types, scripts survive a flush, and a lost,
silent or unreachable Redis fails the waiting commands clearly and is reconnected after."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import redis.exceptions
from convergio_server.storage import redis as rds
from convergio_server.storage.embedded import EmbeddedRedis
from convergio_server.storage.redis import Keys
from convergio_server.storage.redis_pipe import PipelinedRedis, _Target


@pytest.fixture
def keys(redis_prefix: str) -> Keys:
    return Keys(redis_prefix)


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    connection = PipelinedRedis(redis_url)
    yield connection
    await connection.aclose()


async def test_callers_sharing_the_connection_get_their_own_replies(
    pipe: PipelinedRedis, keys: Keys
) -> None:
    counter = keys.k("pipe", "counter")
    values = await asyncio.gather(*(pipe.execute("INCR", counter) for _ in range(500)))
    assert values == list(range(1, 501))  # written in call order, answered in that order
    for i in range(20):
        await pipe.set(keys.k("pipe", "k", i), f"v{i}".encode())
    got = await asyncio.gather(*(pipe.get(keys.k("pipe", "k", i)) for i in range(20)))
    assert got == [f"v{i}".encode() for i in range(20)]
    assert await pipe.get(keys.k("pipe", "missing")) is None


class _CountedWrites:
    """The connection's transport, its writes counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def test_commands_of_one_moment_go_out_in_one_write(pipe: PipelinedRedis, keys: Keys) -> None:
    counter = keys.k("pipe", "batched")
    await pipe.execute("PING")  # connected
    wire = pipe._wire
    assert wire is not None and wire.transport is not None
    counted = _CountedWrites(wire.transport)
    wire.transport = counted  # type: ignore[assignment]
    values = await asyncio.gather(*(pipe.execute("INCR", counter) for _ in range(200)))
    assert values == list(range(1, 201))
    # 200 callers in the same turn of the event loop: one system call, not 200.
    assert counted.writes == 1
    assert await pipe.execute("INCR", counter) == 201  # a lone command is not held back
    assert counted.writes == 2


async def test_set_answers_like_redis_py(pipe: PipelinedRedis, keys: Keys) -> None:
    key = keys.k("pipe", "lease")
    assert await pipe.set(key, "a", px=5000, nx=True) is True
    assert await pipe.set(key, "b", px=5000, nx=True) is None  # taken
    assert await pipe.get(key) == b"a"
    assert 0 < await pipe.execute("PTTL", key) <= 5000
    assert await pipe.set(key, "c", px=5000) is True
    assert await pipe.get(key) == b"c"


async def test_an_error_reply_fails_its_command_alone(pipe: PipelinedRedis, keys: Keys) -> None:
    text = keys.k("pipe", "text")
    await pipe.set(text, "x")
    results = await asyncio.gather(
        pipe.execute("INCR", keys.k("pipe", "n")),
        pipe.execute("LPUSH", text, "y"),  # WRONGTYPE
        pipe.execute("INCR", keys.k("pipe", "n")),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(results[1])


async def test_a_script_is_loaded_again_after_redis_lost_it(
    pipe: PipelinedRedis, keys: Keys
) -> None:
    script = pipe.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    key = keys.k("pipe", "script")
    assert await script(keys=[key], args=["välue", 41]) == [
        key.encode(),
        "välue".encode(),
        42,
    ]
    real, script.sha = script.sha, "0" * 40  # unknown to Redis, as after a restart
    assert await script(keys=[key], args=[b"\x00\xff", 1]) == [key.encode(), b"\x00\xff", 2]
    assert script.sha == real


async def test_a_dropped_connection_fails_what_waits_and_the_next_command_reconnects(
    redis_url: str, keys: Keys
) -> None:
    pipe = PipelinedRedis(redis_url, timeout=10)
    admin = rds.create_redis(redis_url)
    try:
        blocked = keys.k("pipe", "blocked")
        client_id = await pipe.execute("CLIENT", "ID")
        # A command that waits on the server, then the connection is killed under it.
        waiting = asyncio.ensure_future(pipe.execute("BLPOP", blocked, 5))
        await asyncio.sleep(0.1)
        assert await admin.client_kill_filter(_id=client_id) == 1
        with pytest.raises(redis.exceptions.ConnectionError) as lost:
            await waiting
        assert rds.is_unavailable_error(lost.value)
        assert await pipe.execute("CLIENT", "ID") != client_id  # a new connection
        assert await pipe.execute("PING") == b"PONG"
    finally:
        await admin.aclose()
        await pipe.aclose()


async def test_a_silent_redis_times_out_and_the_connection_is_replaced(
    redis_url: str, keys: Keys
) -> None:
    pipe = PipelinedRedis(redis_url, timeout=0.2)
    try:
        first = await pipe.execute("CLIENT", "ID")
        # Redis answers nothing while a script runs: here for 0.6 s.
        busy = "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] " + (
            "repeat local n = redis.call('TIME') until n[1] * 1e6 + n[2] - s > 600000 return 1"
        )
        with pytest.raises(redis.exceptions.TimeoutError) as silent:
            await pipe.execute("EVAL", busy, 0)
        assert "did not answer within 0.2 s" in str(silent.value)
        assert rds.is_unavailable_error(silent.value)
        await asyncio.sleep(0.6)
        assert await pipe.execute("CLIENT", "ID") != first
    finally:
        await pipe.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(
    pipe: PipelinedRedis, keys: Keys
) -> None:
    await pipe.set(keys.k("pipe", "a"), "A")
    await pipe.set(keys.k("pipe", "b"), "B")
    gone = asyncio.ensure_future(pipe.get(keys.k("pipe", "a")))
    after = asyncio.ensure_future(pipe.get(keys.k("pipe", "b")))
    await asyncio.sleep(0)  # both written
    gone.cancel()
    assert await after == b"B"
    assert await pipe.get(keys.k("pipe", "a")) == b"A"


async def test_the_database_of_the_url_is_selected(redis_url: str, keys: Keys) -> None:
    parts = urlparse(redis_url)
    if parts.scheme == "unix":
        other = redis_url.replace("db=0", "db=5") if "db=" in redis_url else redis_url + "?db=5"
    else:
        other = urlunparse(parts._replace(path="/5"))
    pipe = PipelinedRedis(other)
    direct = rds.create_redis(other)
    try:
        key = keys.k("pipe", "db")
        await pipe.set(key, "five")
        assert await direct.get(key) == b"five"
        await direct.delete(key)
    finally:
        await direct.aclose()
        await pipe.aclose()


async def test_unreachable_redis_fails_fast_naming_it(tmp_path: Path) -> None:
    pipe = PipelinedRedis(f"unix://{tmp_path}/missing.sock", connect_retries=1)
    with pytest.raises(redis.exceptions.ConnectionError, match=r"missing\.sock") as down:
        await pipe.execute("PING")
    assert rds.is_unavailable_error(down.value)


async def test_a_restarted_redis_is_used_again(private_redis: EmbeddedRedis) -> None:
    pipe = PipelinedRedis(private_redis.url, connect_retries=0)
    try:
        await pipe.set("pipe-restart", b"1")
        await asyncio.to_thread(private_redis.stop)
        with pytest.raises(redis.exceptions.ConnectionError):
            await pipe.get("pipe-restart")
        await asyncio.to_thread(private_redis.start)
        for _ in range(100):
            try:
                assert await pipe.get("pipe-restart") == b"1"
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("Redis was not used again after it restarted")
    finally:
        await pipe.aclose()


async def test_a_closed_connection_refuses_commands(redis_url: str) -> None:
    pipe = PipelinedRedis(redis_url)
    await pipe.execute("PING")
    await pipe.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await pipe.execute("PING")


def test_urls_are_read_as_redis_py_reads_them() -> None:
    plain = _Target("redis://:s%40cret@cache.internal:6380/3")
    assert (plain.host, plain.port, plain.db, plain.password, plain.ssl) == (
        "cache.internal", 6380, 3, "s@cret", None,
    )  # fmt: skip
    assert _Target("redis://u:p@h?db=2").db == 2
    assert (_Target("redis://u:p@h").username, _Target("redis://h").password) == ("u", None)
    local = _Target("unix:///run/redis.sock?db=4")
    assert (local.path, local.db) == ("/run/redis.sock", 4)
    secure = _Target("rediss://h:6390/0")
    assert secure.ssl is not None and secure.ssl.verify_mode == ssl.CERT_REQUIRED
    lax = _Target("rediss://h/0?ssl_cert_reqs=none")
    assert lax.ssl is not None and lax.ssl.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="scheme"):
        _Target("http://h")
