"""A lean Redis connection for the commands on the way of every turn and token: the event
log's appends, the run leases, the guards' scripts.

redis-py spends 120-270 µs of CPU per command on this kind of machine (a pool checkout with
a lock and a readiness probe, a retry wrapper, a timeout scope, observability hooks), more
than the round trip itself. Here every command is written at once to one socket and its
reply parsed by hiredis as it arrives, in order: about 40 µs a command, and callers that
come together share the socket (Redis answers a pipeline in order).

What it keeps of redis-py: its exception types (ConnectionError, TimeoutError,
ResponseError, NoScriptError, BusyLoadingError), so that callers and the API's error
mapping see no difference; a reconnect on the next command after the connection was lost;
scripts called by SHA and loaded again when Redis lost them. A command that was written
when the connection broke fails and is not sent again (scripts are not idempotent). Never
use it for blocking commands (XREAD BLOCK, BLPOP): they would hold up everything behind
them.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import typing
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

Arg = str | bytes | int | float
# (hiredis's stubs declare a one-element tuple)
_pack = typing.cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


def _reply_error(error: ResponseError) -> Exception:
    """The redis-py exception for an error reply."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    return error


class _Wire(asyncio.Protocol):
    """One connection: replies are matched to waiting commands in the order sent."""

    def __init__(self, on_lost: Any) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._on_lost = on_lost
        # Commands sent in one turn of the event loop go out in one write (one system call,
        # one packet for Redis to read) at its end, not one write each.
        self.outgoing: list[bytes] = []

    def queue(self, packed: bytes) -> None:
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.write_out)
        self.outgoing.append(packed)

    def write_out(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.open and outgoing:
            assert self.transport is not None
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # (uvloop's is not one)
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis sent a malformed reply: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # nothing asked for it: the stream is out of step
                self.fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _ = self.waiting.popleft()
            if future.done():  # its caller gave up (cancelled); the reply is dropped
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_reply_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = exc or "closed by the server"
        self.fail(RedisConnectionError(f"Connection to Redis lost: {reason}"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every command still waiting for a reply."""
        was_open, self.open = self.open, False
        self.outgoing.clear()
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if was_open:
            self._on_lost(self)


class PipelinedRedis:
    """One pipelined connection to the Redis of `url` (`redis://`, `rediss://`, `unix://`),
    opened on first use and again after it was lost. `timeout`: how long a command may wait
    for its reply before the connection is closed as dead."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        connect_retries: int = 2,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self._target = _Target(url)
        self._wire: _Wire | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        wire = self._wire
        if wire is None or not wire.open:
            wire = await self._connect()
        return await self._send(wire, _pack(args))

    def _send(self, wire: _Wire, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        wire.waiting.append((future, loop.time() + self.timeout))
        wire.queue(packed)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout, self._check, wire)
        return future

    def _check(self, wire: _Wire) -> None:
        """The oldest command's deadline: past it, the connection is dead (or Redis hangs)."""
        self._watchdog = None
        if not wire.open or not wire.waiting:
            return
        loop = asyncio.get_running_loop()
        left = wire.waiting[0][1] - loop.time()
        if left <= 0:
            wire.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout:g} s"))
        else:
            self._watchdog = loop.call_later(left, self._check, wire)

    def _lost(self, wire: _Wire) -> None:
        if self._wire is wire:
            self._wire = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _connect(self) -> _Wire:
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._wire is not None and self._wire.open:
                return self._wire
            for attempt in range(self.connect_retries + 1):
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        self._wire = await self._open()
                    return self._wire
                except (OSError, TimeoutError, RedisConnectionError) as exc:
                    if attempt == self.connect_retries:
                        raise RedisConnectionError(
                            f"Error connecting to Redis at {self._target.address}: "
                            f"{exc or type(exc).__name__}"
                        ) from exc
                    await asyncio.sleep(min(0.5, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    async def _open(self) -> _Wire:
        loop = asyncio.get_running_loop()
        target = self._target
        if target.path:
            _, wire = await loop.create_unix_connection(lambda: _Wire(self._lost), target.path)
        else:
            _, wire = await loop.create_connection(
                lambda: _Wire(self._lost),
                target.host,
                target.port,
                ssl=target.ssl,
                server_hostname=target.host if target.ssl else None,
            )
        try:
            if target.password is not None:
                auth: tuple[Arg, ...] = (target.password,)
                if target.username:
                    auth = (target.username, target.password)
                await self._send(wire, _pack(("AUTH", *auth)))
            if target.db:
                await self._send(wire, _pack(("SELECT", target.db)))
        except BaseException:
            wire.fail(RedisConnectionError("could not set up the Redis connection"))
            raise
        return wire

    def register_script(self, source: str) -> PipelinedScript:
        return PipelinedScript(self, source)

    # The few plain commands the hot paths use, with redis-py's answers.

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.execute("GET", key)
        return value

    async def set(
        self, key: str, value: Arg, *, px: int | None = None, nx: bool = False
    ) -> bool | None:
        args: list[Arg] = ["SET", key, value]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        reply = await self.execute(*args)
        return True if reply == b"OK" else None

    async def aclose(self) -> None:
        self._closed = True
        if self._wire is not None:
            self._wire.fail(RedisConnectionError("the Redis connection is closed"))


class PipelinedScript:
    """A Lua script called by its SHA, loaded again when Redis answers NOSCRIPT (it
    restarted, or its scripts were flushed): nothing of the first call ran then."""

    def __init__(self, redis: PipelinedRedis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            loaded = await self.redis.execute("SCRIPT", "LOAD", self.source)
            self.sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
            return await self.redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)


class _Target:
    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        query = parse_qs(parts.query)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        self.ssl: ssl.SSLContext | None = None
        self.path = ""
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        if parts.scheme == "unix":
            self.path = parts.path
            self.address = self.path
            db = query.get("db", ["0"])[0]
        elif parts.scheme in ("redis", "rediss"):
            self.address = f"{self.host}:{self.port}"
            db = parts.path.lstrip("/") or query.get("db", ["0"])[0]
            if parts.scheme == "rediss":
                self.ssl = _tls(query)
        else:
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self.db = int(db or 0)


def _tls(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The TLS settings of a `rediss://` URL, with redis-py's query parameters."""

    def value(name: str) -> str:
        return query.get(name, [""])[0]

    context = ssl.create_default_context(cafile=value("ssl_ca_certs") or None)
    if value("ssl_certfile"):
        context.load_cert_chain(value("ssl_certfile"), value("ssl_keyfile") or None)
    if value("ssl_cert_reqs").lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
