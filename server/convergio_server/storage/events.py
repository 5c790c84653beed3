"""Both halves of conversation event logs: `RedisLiveEvents` (the live window, one Redis
stream per conversation whose entry ids are `<sequence>-0`) and `PgDurableEvents`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from convergio_server.domain.errors import NotFound, Unavailable, store_unavailable
from convergio_server.domain.events.model import Event, body_dict, body_from_dict
from convergio_server.storage import postgres as pg
from convergio_server.storage import redis as rds
from convergio_server.storage.redis import Keys
from convergio_server.storage.redis_pipe import PipelinedRedis

# Allocate the next sequences and append, for a batch of events of any conversations, in one
# step: each stream is in sequence order whoever appends, and the batch costs one command.
# Each event is also noted as the latest of its turn. KEYS: per event, its conversation's
# counter, stream and turns hash. ARGV: maxlen, window ms, counter ttl ms, then per event:
# payload, seed ('' = answer -1 when the counter is missing), turn id, ordinal. The ordinal
# (1, 2, ... within the turn; 0 = none) makes the append idempotent: an event whose ordinal
# the turn already reached was appended by an earlier call whose answer was lost (Redis
# stalled past the client's timeout, then ran it): it is not appended again, and its
# sequence is answered, found near the stream's top (-2 when no longer there). Answers per
# event its sequence, -1, -2, or "ERR <message>" when that event failed (the others still
# count).
_APPEND = """
local maxlen, window, ttl = ARGV[1], ARGV[2], ARGV[3]
local out, touched = {}, {}
local function appended_before(stream, mark)
  local recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 2000)
  for _, entry in ipairs(recent) do
    local fields = entry[2]
    for f = 1, #fields - 1, 2 do
      if fields[f] == 'o' and fields[f + 1] == mark then
        return tonumber(string.match(entry[1], '^(%d+)'))
      end
    end
  end
  return -2
end
local reached_of = {}  -- per turn: the ordinal it reached (one HGET per turn and call)
-- The turns hash keeps the latest turns' fields only: it would otherwise grow with every
-- turn of a conversation in use (its expiry moves on at each append). A turn's fields serve
-- its retried appends and its latest sequence while it streams; a conversation has at most
-- eleven turns appending at once (one running, ten queued).
local keep_turns = 32
local function prune(turns)
  if redis.call('HLEN', turns) <= 4 * keep_turns then return end
  local fields, latest = redis.call('HGETALL', turns), {}
  for f = 1, #fields - 1, 2 do
    if string.sub(fields[f], -1) ~= '#' then
      latest[#latest + 1] = {fields[f], tonumber(fields[f + 1])}
    end
  end
  table.sort(latest, function(a, b) return a[2] < b[2] end)
  for i = 1, #latest - keep_turns do
    redis.call('HDEL', turns, latest[i][1], latest[i][1] .. '#')
  end
end
local function append(counter, stream, turns, payload, seed, turn, ordinal)
  local mark
  if ordinal ~= '0' then
    mark = turn .. '#' .. ordinal
    local reached = reached_of[turns .. turn]
    if reached == nil then
      reached = tonumber(redis.call('HGET', turns, turn .. '#') or '0')
    end
    if tonumber(ordinal) <= reached then return appended_before(stream, mark) end
  end
  if redis.call('EXISTS', counter) == 0 then
    if seed == '' then return -1 end
    local start = tonumber(seed)
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if top[1] then
      local tail = tonumber(string.match(top[1][1], '^(%d+)'))
      if tail > start then start = tail end
    end
    redis.call('SET', counter, start)
  end
  local seq = redis.call('INCR', counter)
  if mark then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', payload, 'o', mark)
    redis.call('HSET', turns, turn, seq, turn .. '#', ordinal)
    reached_of[turns .. turn] = tonumber(ordinal)
    if ordinal == '1' then prune(turns) end
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', payload)
    redis.call('HSET', turns, turn, seq)
  end
  touched[counter], touched[turns], touched[stream] = ttl, ttl, window
  return seq
end
for i = 1, #KEYS / 3 do
  local k, a = (i - 1) * 3, 3 + (i - 1) * 4
  local ok, result = pcall(append, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  if ok then
    out[i] = result
  else
    out[i] = 'ERR ' .. (type(result) == 'table' and result.err or tostring(result))
  end
end
for key, ms in pairs(touched) do redis.call('PEXPIRE', key, ms) end
return out
"""
# At most this many events per script call: a call blocks Redis while it runs.
_BATCH = 256
# After Redis was found out of reach, reads that can do without it skip it this long.
_SKIP_AFTER_OUTAGE_SECONDS = 5.0


@dataclass
class _Request:
    """The events of one `append` call, waiting for a script call."""

    keys: list[str]  # counter, stream, turns hash
    seed: str  # "" = no seed
    turn_id: str
    payloads: list[bytes]
    ordinals: Sequence[int] | None  # None = not idempotent
    done: asyncio.Future[list[int]]


def _entries(raw: Any) -> list[tuple[int, bytes]]:
    return [(int(entry_id.split(b"-", 1)[0]), fields[b"e"]) for entry_id, fields in raw]


class RedisLiveEvents:
    """`hot` carries the appends and the counter (on the way of every token); `blocking` is
    a client without socket timeout, used only for XREAD BLOCK."""

    def __init__(
        self,
        redis: aioredis.Redis,
        hot: PipelinedRedis,
        blocking: aioredis.Redis,
        keys: Keys,
        *,
        window_seconds: float,
        max_entries: int = 20_000,
    ) -> None:
        self.redis = redis
        self.hot = hot
        self.blocking = blocking
        self.keys = keys
        self.window_ms = int(window_seconds * 1000)
        self.max_entries = max_entries
        # The counter outlives the window so that sequences stay cheap for active conversations.
        self.counter_ttl_ms = max(self.window_ms, 24 * 3600 * 1000)
        self._append = hot.register_script(_APPEND)
        self._pending: deque[_Request] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._keys_of: dict[tuple[str, str], list[str]] = {}
        self._down_until = 0.0  # see `_optional`

    def _stream(self, tenant_id: str, conversation_id: str) -> str:
        return self.keys.k("conv", tenant_id, conversation_id, "events")

    def _append_keys(self, tenant_id: str, conversation_id: str) -> list[str]:
        """The keys of an append (built once per conversation: every token delta needs them)."""
        found = self._keys_of.get((tenant_id, conversation_id))
        if found is None:
            if len(self._keys_of) >= 4096:
                self._keys_of.clear()
            found = self._keys_of[(tenant_id, conversation_id)] = [
                self._counter(tenant_id, conversation_id),
                self._stream(tenant_id, conversation_id),
                self._turns(tenant_id, conversation_id),
            ]
        return found

    def _counter(self, tenant_id: str, conversation_id: str) -> str:
        return self.keys.k("conv", tenant_id, conversation_id, "seq")

    def _turns(self, tenant_id: str, conversation_id: str) -> str:
        return self.keys.k("conv", tenant_id, conversation_id, "turns")

    async def append(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        payloads: Sequence[bytes],
        seed: int | None,
        ordinals: Sequence[int] | None = None,
    ) -> list[int | None]:
        # Group commit: one script call in flight per process; the appends that come while
        # it runs (many conversations streaming at once) go together in the next one. One
        # round trip at once when idle, one command per round trip under load, and the
        # calls reach Redis in the order they were made.
        request = _Request(
            self._append_keys(tenant_id, conversation_id),
            "" if seed is None else str(seed),
            turn_id,
            list(payloads),
            ordinals,
            asyncio.get_running_loop().create_future(),
        )
        self._pending.append(request)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending(), name="event-appends")
        results: list[int] = await request.done
        # -1: the counter is missing (None); -2: appended before, out of the window now (0).
        return [sequence if sequence > 0 else None if sequence == -1 else 0 for sequence in results]

    async def _send_pending(self) -> None:
        while self._pending:
            batch: list[_Request] = []
            events = 0
            while self._pending and (
                not batch or events + len(self._pending[0].payloads) <= _BATCH
            ):
                request = self._pending.popleft()
                batch.append(request)
                events += len(request.payloads)
            try:
                results = await self._append_all(batch)
            except BaseException as exc:
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    for request in self._pending:  # shutting down: nobody will send them
                        if not request.done.done():
                            request.done.set_exception(exc)
                    self._pending.clear()
                    raise
                continue
            at = 0
            for request in batch:
                mine = results[at : at + len(request.payloads)]
                at += len(request.payloads)
                if request.done.done():
                    continue
                failed = next((r for r in mine if isinstance(r, bytes | str)), None)
                if failed is not None:
                    text = failed.decode(errors="replace") if isinstance(failed, bytes) else failed
                    request.done.set_exception(ResponseError(text))
                else:
                    request.done.set_result(mine)

    async def _append_all(self, batch: list[_Request]) -> list[Any]:
        """One script call for the batch. Through the registered script: when Redis lacks it
        (it restarted), it is loaded and the call made again (nothing of it ran)."""
        keys: list[str] = []
        args: list[Any] = [self.max_entries, self.window_ms, self.counter_ttl_ms]
        for request in batch:
            ordinals = request.ordinals or [0] * len(request.payloads)
            for payload, ordinal in zip(request.payloads, ordinals, strict=True):
                keys += request.keys
                args += (payload, request.seed, request.turn_id, ordinal)
        results: list[Any] = await self._append(keys=keys, args=args)
        return results

    async def range(
        self, tenant_id: str, conversation_id: str, after: int, upto: int | None, count: int
    ) -> list[tuple[int, bytes]]:
        raw = await self.redis.xrange(
            self._stream(tenant_id, conversation_id),
            min=f"({after}-0" if after > 0 else "-",
            max="+" if upto is None else f"{upto}-0",
            count=count,
        )
        return _entries(raw)

    async def start(self, tenant_id: str, conversation_id: str) -> None:
        await self.hot.set(
            self._counter(tenant_id, conversation_id), 0, px=self.counter_ttl_ms, nx=True
        )

    async def last_sequence(self, tenant_id: str, conversation_id: str) -> int | None:
        counter = self._counter(tenant_id, conversation_id)
        value = await self._optional(lambda: self.hot.get(counter))
        return None if value is None else int(value)

    async def turn_last_sequences(
        self, tenant_id: str, conversation_id: str, turn_ids: Sequence[str]
    ) -> list[int | None]:
        if not turn_ids:
            return []
        turns = self._turns(tenant_id, conversation_id)
        values = await self._optional(lambda: self.redis.hmget(turns, list(turn_ids)))
        return [None if value is None else int(value) for value in values]

    async def _optional(self, read: Callable[[], Awaitable[Any]]) -> Any:
        """A read its callers can do without: Unavailable when Redis is out of reach, at
        once for a while after it was (a hung Redis costs each read its whole timeout)."""
        if time.monotonic() < self._down_until:
            raise store_unavailable("Redis was unreachable a moment ago", "redis")
        try:
            async with rds.outage_as_unavailable():
                return await read()
        except Unavailable:
            self._down_until = time.monotonic() + _SKIP_AFTER_OUTAGE_SECONDS
            raise

    async def wait_after(
        self, tenant_id: str, conversation_id: str, after: int, block_ms: int
    ) -> list[tuple[int, bytes]]:
        stream = self._stream(tenant_id, conversation_id)
        raw: Any = await self.blocking.xread({stream: f"{after}-0"}, block=block_ms, count=1000)
        if not raw:
            return []
        return _entries(raw[0][1])

    async def delete(self, tenant_id: str, conversation_id: str) -> None:
        await self.redis.delete(
            self._stream(tenant_id, conversation_id),
            self._counter(tenant_id, conversation_id),
            self._turns(tenant_id, conversation_id),
        )


class PgDurableEvents:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    async def insert(self, tenant_id: str, event: Event) -> None:
        await self.insert_many([(tenant_id, event)])

    async def insert_many(self, rows: list[tuple[str, Event]]) -> None:
        try:
            # An outage is worth retrying; a row PostgreSQL refuses is not.
            async with pg.outage_as_unavailable():
                await self._insert_many(rows)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(
                "the conversation of these events was deleted", reason="CONVERSATION_DELETED"
            ) from None

    async def _insert_many(self, rows: list[tuple[str, Event]]) -> None:
        # One statement whatever the number of rows (executemany costs a round of the
        # protocol per row).
        await self.pool.execute(
            """
            INSERT INTO conversation_events
                (tenant_id, conversation_id, sequence, turn_id, kind, payload, event_time)
            SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::uuid[], $5::text[],
                $6::jsonb[], $7::timestamptz[])
            ON CONFLICT DO NOTHING
            """,
            [tenant_id for tenant_id, _ in rows],
            [e.conversation_id for _, e in rows],
            [e.sequence for _, e in rows],
            [e.turn_id for _, e in rows],
            [e.kind for _, e in rows],
            [json.dumps(body_dict(e.body)) for _, e in rows],
            [e.event_time for _, e in rows],
        )

    async def range(
        self, tenant_id: str, conversation_id: str, after: int, before: int | None, limit: int
    ) -> list[Event]:
        rows = await self.pool.fetch(
            """
            SELECT sequence, turn_id, kind, payload, event_time FROM conversation_events
            WHERE tenant_id = $1 AND conversation_id = $2 AND sequence > $3
              AND ($4::bigint IS NULL OR sequence < $4)
            ORDER BY sequence LIMIT $5
            """,
            tenant_id,
            conversation_id,
            after,
            before,
            limit,
        )
        return [
            Event(
                conversation_id,
                str(row["turn_id"]),
                row["sequence"],
                row["event_time"],
                body_from_dict(row["kind"], json.loads(row["payload"])),
            )
            for row in rows
        ]

    async def max_sequence(self, tenant_id: str, conversation_id: str) -> int:
        value = await self.pool.fetchval(
            "SELECT COALESCE(MAX(sequence), 0) FROM conversation_events "
            "WHERE tenant_id = $1 AND conversation_id = $2",
            tenant_id,
            conversation_id,
        )
        return int(value)
