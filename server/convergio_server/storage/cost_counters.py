"""Redis side of the cost guards: budget counters with atomic reservation, circuit breakers
and sliding-window rate limits. Every decision is one Lua script, so every server process sees
the same state and concurrent callers cannot race past a limit; the checks of one step of a
turn are combined into one script (one round trip): admission (budgets spent? rate limit,
tenant breaker), the start of a model call (provider breaker, reservation) and its end
(settlement, provider breaker feedback). Times come from Redis (TIME), so processes with
skewed clocks still agree.

Amounts are integer nano-dollars (see domain/costs/money.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from convergio_server.domain.costs.ports import (
    AdmitResult,
    BreakerResult,
    BreakerThresholds,
    Counter,
    CounterChange,
    RateResult,
    ReserveResult,
    counters_unavailable,
)
from convergio_server.storage.redis import Keys
from convergio_server.storage.redis_pipe import PipelinedRedis

T = TypeVar("T")

# A reservation's marker outlives any model call (a call that outlived it anyway is settled as
# if Redis had lost the reservation: counted at the reservation plus its cost, the safe side),
# and does not outlive by long a process that died before settling.
_HOLD_TTL_SECONDS = 86_400

# Functions shared by the scripts. Breaker parameters `p`: failure threshold, success
# threshold, cool-down ms, spike threshold, spike factor (as text).
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Numbers passed as one comma-separated argument (far cheaper to send than one each).
local function csv(text)
  local out = {}
  for v in string.gmatch(text, '[^,]+') do out[#out + 1] = tonumber(v) end
  return out
end

-- Reserve `amount` on the counters from KEYS[first] and mark the reservation as held (`hold`,
-- for `settle`). The only place a counter is created by adding to it: one seeded from the
-- ledger exists by now (budget_room saw to it); the others (a turn's, what is reserved) start
-- with their first reservation. ttls, in seconds: a positive one is set on a counter without
-- an expiry (created now, or left without one by an older version), so that a period's
-- counter ends with its period however busy it was; a negative one (a total's) is renewed on
-- every use, so that only a counter left unused for that long expires and is seeded again
-- from the ledger.
local function add(first, count, amount, ttls, hold, hold_ttl)
  for i = 1, count do
    local key = KEYS[first + i - 1]
    local v = redis.call('INCRBY', key, string.format('%d', amount))
    local ttl = ttls[i]
    if ttl < 0 then
      redis.call('EXPIRE', key, -ttl)
    elseif ttl > 0 and (v == amount or redis.call('TTL', key) == -1) then
      redis.call('EXPIRE', key, ttl)
    end
  end
  redis.call('SET', hold, string.format('%d', amount), 'EX', hold_ttl)
end

-- Settle a reservation on the counters from KEYS[first]: each gets `held[i]` while the
-- reservation's marker `hold` is there, else `lost[i]`: Redis lost the reservation with its
-- data, so a counter that exists again was seeded from the ledger since, without the
-- reservation and without this call (its ledger entry is queued after this script). A missing
-- counter is left missing, not recreated from what is added (often negative: it would start
-- at 0, without expiry, and never be seeded): the next reservation seeds it from the ledger,
-- which counts this call. `renew`: indexes of counters whose alert record (KEYS after the
-- counters, in that order) expires with them. Returns the new values, -1 for a missing one.
local function settle(hold, first, count, held, lost, renew)
  local deltas = lost
  if redis.call('DEL', hold) == 1 then deltas = held end
  local out = {}
  for i = 1, count do
    local key = KEYS[first + i - 1]
    local v = -1
    if redis.call('EXISTS', key) == 1 then
      v = redis.call('INCRBY', key, string.format('%d', deltas[i]))
      -- Back to 0 by adding, not SET, which would drop the counter's expiry.
      if v < 0 then
        redis.call('INCRBY', key, string.format('%d', -v))
        v = 0
      end
    end
    out[i] = v
  end
  for j, i in ipairs(renew) do
    local ms = redis.call('PTTL', KEYS[first + i - 1])
    if ms > 0 then redis.call('PEXPIRE', KEYS[first + count + j - 1], ms) end
  end
  return out
end

-- Budget counters: index of the first counter without room for `amount`, and its value; or
-- -1 and the indexes of every counter that must be seeded from the ledger first (`seeds` has
-- a '1' for those: after Redis lost its data, or at the start of a period), so that all are
-- seeded at once. A seeded counter without an expiry counts as missing: every counter made
-- here has one, so it was recreated by an older version's settlement from a delta alone.
local function budget_room(keys, first, limits, amount, seeds)
  local missing, values = {}, {}
  for i = 1, #limits do
    local seeded = string.sub(seeds, i, i) == '1'
    if limits[i] >= 0 or seeded then
      local key = keys[first + i - 1]
      local raw = redis.call('GET', key)
      if seeded and (not raw or redis.call('TTL', key) == -1) then
        missing[#missing + 1] = i
      end
      values[i] = tonumber(raw or '0')
    end
  end
  if #missing > 0 then return -1, missing end
  for i = 1, #limits do
    if limits[i] >= 0 and values[i] + amount > limits[i] then return i, values[i] end
  end
  return 0, 0
end

-- Sliding-window log in a sorted set of call times: allowed, used, oldest time (-1 = none).
local function rate_step(key, limit, window, member, take, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local used = redis.call('ZCARD', key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local oldest = -1
  if first[2] then oldest = tonumber(first[2]) end
  if used >= limit then return 0, used, oldest end
  if take then
    redis.call('ZADD', key, now, tostring(now) .. ':' .. member)
    redis.call('PEXPIRE', key, window)
    used = used + 1
    if oldest < 0 then oldest = now end
  end
  return 1, used, oldest
end

-- One event of a circuit breaker. Returns the decision (1 go, 2 go as the half-open probe,
-- 0 refused) and the retry delay in ms.
local function breaker_step(key, index, member, op, p, a1, a2, now)
  local failure_threshold = tonumber(p[1])
  local success_threshold = tonumber(p[2])
  local cool_down = tonumber(p[3])
  local spike_threshold = tonumber(p[4])
  local spike_factor = tonumber(p[5])
  local function get(f, d)
    local v = redis.call('HGET', key, f)
    if v then return v end
    return d
  end
  local function open(cause, reason)
    redis.call('HSET', key, 'state', 'OPEN', 'opened_ms', now, 'cause', cause,
      'reason', reason, 'successes', 0, 'probe_until', 0)
    redis.call('SADD', index, member)
  end
  local state = get('state', 'CLOSED')
  if state == 'OPEN' and now >= tonumber(get('opened_ms', '0')) + cool_down then
    state = 'HALF_OPEN'
    redis.call('HSET', key, 'state', 'HALF_OPEN', 'successes', 0, 'probe_until', 0)
  end
  local decision, retry = 1, 0
  if op == 'check' then
    if state == 'OPEN' then
      decision = 0
      retry = tonumber(get('opened_ms', '0')) + cool_down - now
    elseif state == 'HALF_OPEN' then
      local probe_until = tonumber(get('probe_until', '0'))
      if probe_until > now then
        decision = 0
        retry = probe_until - now
      else
        decision = 2
        redis.call('HSET', key, 'probe_until', now + tonumber(a1))
      end
    end
  elseif op == 'success' then
    if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'failures', 0) end
    if state == 'HALF_OPEN' then
      local s = redis.call('HINCRBY', key, 'successes', 1)
      redis.call('HSET', key, 'probe_until', 0)
      if s >= success_threshold then
        redis.call('HSET', key, 'state', 'CLOSED', 'successes', 0, 'spikes', 0, 'flags', '')
      end
    end
  elseif op == 'release' then
    if state == 'HALF_OPEN' then redis.call('HSET', key, 'probe_until', 0) end
  elseif op == 'failure' then
    local f = redis.call('HINCRBY', key, 'failures', 1)
    redis.call('SADD', index, member)
    if state == 'HALF_OPEN' then
      open('FAILURES', 'the half-open probe failed: ' .. a1)
    elseif state == 'CLOSED' and f >= failure_threshold then
      open('FAILURES', f .. ' consecutive failures; last: ' .. a1)
    end
  elseif op == 'cost' then
    local cost = tonumber(a1)
    -- The baseline is the last 10 ordinary turns: spikes stay out of it, so that a sustained
    -- jump keeps counting as spikes instead of raising the average it is measured against.
    local ordinary = {}
    for v in string.gmatch(get('ordinary', ''), '[^,]+') do
      ordinary[#ordinary + 1] = tonumber(v)
    end
    local flags = get('flags', '')
    local spike = '0'
    if #ordinary >= 5 then
      local sum = 0
      for _, v in ipairs(ordinary) do sum = sum + v end
      if sum > 0 and cost > spike_factor * sum / #ordinary then spike = '1' end
    end
    if spike == '0' then ordinary[#ordinary + 1] = cost end
    flags = flags .. spike
    while #ordinary > 10 do table.remove(ordinary, 1) end
    if #flags > 10 then flags = string.sub(flags, -10) end
    local strs = {}
    for i, v in ipairs(ordinary) do strs[i] = string.format('%d', v) end
    local _, spikes = string.gsub(flags, '1', '')
    redis.call('HSET', key, 'ordinary', table.concat(strs, ','), 'flags', flags, 'spikes', spikes)
    redis.call('SADD', index, member)
    if state == 'CLOSED' and spikes >= spike_threshold then
      open('COST_SPIKES', spikes .. ' of the last ' .. #flags .. ' turns cost over ' ..
        p[5] .. 'x the moving average')
    end
  elseif op == 'trip' then
    if state ~= 'OPEN' then open(a1, a2) end
  elseif op == 'reset' then
    redis.call('DEL', key)
    redis.call('SREM', index, member)
  end
  return decision, retry
end

local function breaker_out(out, key, now)
  out[#out + 1] = 'now_ms'
  out[#out + 1] = now
  for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
  return out
end
"""

# KEYS: version key, hold marker, counters...; ARGV: version, amount, limits, ttls
# (comma-separated, one per counter; limit -1 = none, ttl 0 = no expiry, a negative ttl is
# renewed on every use), seed flags, the marker's ttl. Returns {1}, {0, i, current} (no room),
# {-1, version} (stale) or {-2, i, j...} (seed counters i, j... from the ledger first).
_RESERVE = (
    _LIB
    + """
local version = redis.call('GET', KEYS[1]) or '0'
if version ~= ARGV[1] then return {-1, version} end
local amount = tonumber(ARGV[2])
local refused, cur = budget_room(KEYS, 3, csv(ARGV[3]), amount, ARGV[5])
if refused < 0 then return {-2, unpack(cur)} end
if refused > 0 then return {0, refused, cur} end
add(3, #KEYS - 2, amount, csv(ARGV[4]), KEYS[2], ARGV[6])
return {1}
"""
)

# KEYS: hold marker, counters..., alert records...; ARGV: deltas if the reservation is held,
# deltas if it was lost (one per counter), indexes of the counters whose alert record follows
# (all comma-separated). Returns the counters after the change (-1 = missing, left so).
_SETTLE = (
    _LIB
    + """
local renew = csv(ARGV[3])
return settle(KEYS[1], 2, #KEYS - 1 - #renew, csv(ARGV[1]), csv(ARGV[2]), renew)
"""
)

# KEYS[1]: the sorted set. ARGV: limit, window ms, member suffix, 'take' or 'peek'.
# Returns {allowed, used, oldest ms or -1, now ms}.
_RATE = (
    _LIB
    + """
local now = now_ms()
local allowed, used, oldest = rate_step(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  ARGV[3], ARGV[4] == 'take', now)
return {allowed, used, oldest, now}
"""
)

# KEYS: breaker hash, tenant's breaker index. ARGV: op, member, 5 parameters, 2 op arguments.
# Op "success+cost" is "success" then "cost" (a turn that ended well, and what it cost).
# Returns {decision, retry ms, hash fields...}.
_BREAKER = (
    _LIB
    + """
local now = now_ms()
local p = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}
local ops = {ARGV[1]}
if ARGV[1] == 'success+cost' then ops = {'success', 'cost'} end
local decision, retry
for _, op in ipairs(ops) do
  decision, retry = breaker_step(KEYS[1], KEYS[2], ARGV[2], op, p, ARGV[8] or '',
    ARGV[9] or '', now)
end
return breaker_out({decision, retry}, KEYS[1], now)
"""
)

# Admission of a turn, in this order, changing nothing unless all pass: budgets spent?, rate
# limit, tenant breaker (may take the half-open probe), then count the turn.
# KEYS: version, rate set, breaker hash, breaker index, budget counters...
# ARGV: version, rate limit, window ms, rate member (unique: `rate_give_back` removes it),
# breaker member, 5 breaker parameters, probe ms, limits (comma-separated, one per counter).
# Returns {1, decision} | {-1, version} | {0, 'budget', i, cur} | {0, 'rate', used, oldest,
# now} | {0, 'breaker', retry, fields...}.
_ADMIT = (
    _LIB
    + """
local version = redis.call('GET', KEYS[1]) or '0'
if version ~= ARGV[1] then return {-1, version} end
local now = now_ms()
local limits = csv(ARGV[12])
for i = 5, #KEYS do
  local limit = limits[i - 4]
  if limit >= 0 then
    local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
    if cur >= limit then return {0, 'budget', i - 4, cur} end
  end
end
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local allowed, used, oldest = rate_step(KEYS[2], limit, window, ARGV[4], false, now)
if allowed == 0 then return {0, 'rate', used, oldest, now} end
local p = {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}
local decision, retry = breaker_step(KEYS[3], KEYS[4], ARGV[5], 'check', p, ARGV[11], '', now)
if decision == 0 then return breaker_out({0, 'breaker', retry}, KEYS[3], now) end
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('PEXPIRE', KEYS[2], window)
return {1, decision}
"""
)

# Start of a model call: room in every budget?, provider breaker (may take the probe), then
# reserve. KEYS: version, breaker hash, breaker index, hold marker, counters... ARGV: version,
# amount, breaker member, 5 breaker parameters, probe ms, limits, ttls (comma-separated, as
# for _RESERVE), seed flags, the marker's ttl.
# Returns {1, decision} | {-1, version} | {-2, i, j...} | {0, 'budget', i, cur} | {0,
# 'breaker', retry, fields...}.
_CALL_BEGIN = (
    _LIB
    + """
local version = redis.call('GET', KEYS[1]) or '0'
if version ~= ARGV[1] then return {-1, version} end
local now = now_ms()
local amount = tonumber(ARGV[2])
local refused, cur = budget_room(KEYS, 5, csv(ARGV[10]), amount, ARGV[12])
if refused < 0 then return {-2, unpack(cur)} end
if refused > 0 then return {0, 'budget', refused, cur} end
local p = {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]}
local decision, retry = breaker_step(KEYS[2], KEYS[3], ARGV[3], 'check', p, ARGV[9], '', now)
if decision == 0 then return breaker_out({0, 'breaker', retry}, KEYS[2], now) end
add(5, #KEYS - 4, amount, csv(ARGV[11]), KEYS[4], ARGV[13])
return {1, decision}
"""
)

# End of a model call: settle every counter and tell the provider breaker how it went.
# KEYS: breaker hash, breaker index, then (when the call had a reservation) the hold marker,
# counters... and alert records... as for _SETTLE. ARGV: breaker op (success, failure, release
# or none), breaker member, 5 breaker parameters, failure detail, then _SETTLE's arguments.
# Returns the counters after the change (-1 = missing, left so).
_CALL_END = (
    _LIB
    + """
local now = now_ms()
if ARGV[1] ~= 'none' then
  local p = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}
  breaker_step(KEYS[1], KEYS[2], ARGV[2], ARGV[1], p, ARGV[8], '', now)
end
if #KEYS == 2 then return {} end
local renew = csv(ARGV[11])
return settle(KEYS[3], 4, #KEYS - 3 - #renew, csv(ARGV[9]), csv(ARGV[10]), renew)
"""
)


# KEYS: counters to create; ARGV: their values, their ttls (comma-separated, 0 = no expiry).
# A counter that exists by now (another process seeded it, or a call counted) is left alone,
# unless it has no expiry where it should have one: an older version's settlement recreated it
# from a delta alone, so the ledger's figure replaces it (never lowering it).
_SEED = (
    _LIB
    + """
local values, ttls = csv(ARGV[1]), csv(ARGV[2])
for i = 1, #KEYS do
  local value = values[i]
  if ttls[i] > 0 then
    if redis.call('TTL', KEYS[i]) == -1 then
      value = math.max(value, tonumber(redis.call('GET', KEYS[i])))
      redis.call('SET', KEYS[i], string.format('%d', value), 'EX', ttls[i])
    else
      redis.call('SET', KEYS[i], string.format('%d', value), 'NX', 'EX', ttls[i])
    end
  else
    redis.call('SET', KEYS[i], string.format('%d', value), 'NX')
  end
end
return #KEYS
"""
)

# KEYS: a counter's alert record (a hash: one field per alert given), the counter. ARGV: the
# alert, the counter's ttl. Returns 1 if the alert was not given yet. The record expires with
# the counter (a total's is renewed with it at each settlement, see `settle`): a threshold
# alerts once for as long as the counter counts, and the record does not outlive it.
_FIRST_ALERT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then return 0 end
local ms = redis.call('PTTL', KEYS[2])
if ms > 0 then
  redis.call('PEXPIRE', KEYS[1], ms)
elseif tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


async def _guarded(call: Awaitable[T]) -> T:
    """Redis failures become the guards' UNAVAILABLE with a reason a caller can act on."""
    try:
        return await call
    except RedisError as exc:
        raise counters_unavailable() from exc


def _s(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(items: Sequence[bytes | str | int]) -> tuple[int, dict[str, str]]:
    texts = [_s(v) for v in items]
    fields = dict(zip(texts[0::2], texts[1::2], strict=True))
    return int(fields.pop("now_ms")), fields


def _limits(counters: Sequence[Counter]) -> str:
    return ",".join("-1" if c.limit_nanos is None else str(c.limit_nanos) for c in counters)


def _ttls(counters: Sequence[Counter]) -> str:
    # A sliding expiry is sent as a negative ttl (see `add`), so it needs no argument of its own.
    return ",".join(str(-c.ttl_seconds if c.sliding else c.ttl_seconds) for c in counters)


def _seeds(counters: Sequence[Counter]) -> str:
    return "".join("1" if c.seed else "0" for c in counters)


def _settle_args(hold: str, changes: Sequence[CounterChange]) -> tuple[list[str], list[int | str]]:
    """KEYS and ARGV of `settle` (see _SETTLE)."""
    renew = [
        i for i, ch in enumerate(changes, start=1) if ch.counter.sliding and ch.counter.alerts_key
    ]
    keys = [hold, *(ch.counter.key for ch in changes)]
    keys += [changes[i - 1].counter.alerts_key for i in renew]
    args: list[int | str] = [
        ",".join(str(ch.held) for ch in changes),
        ",".join(str(ch.lost) for ch in changes),
        ",".join(map(str, renew)),
    ]
    return keys, args


def _settled(raw: Sequence[bytes | str | int]) -> list[int | None]:
    return [None if int(v) < 0 else int(v) for v in raw]


def _params(t: BreakerThresholds) -> list[int | str]:
    return [
        t.failure_threshold,
        t.success_threshold,
        t.cool_down_ms,
        t.spike_threshold,
        repr(t.spike_factor),
    ]


class RedisCostCounters:
    """The Redis scripts of the cost guards, keyed under the deployment's prefix."""

    def __init__(self, redis: aioredis.Redis, hot: PipelinedRedis, keys: Keys) -> None:
        self.redis = redis
        # The scripts and the budget version are read on every turn and model call.
        self.hot = hot
        self.keys = keys
        self._reserve = hot.register_script(_RESERVE)
        self._settle = hot.register_script(_SETTLE)
        self._rate = hot.register_script(_RATE)
        self._breaker = hot.register_script(_BREAKER)
        self._admit = hot.register_script(_ADMIT)
        self._call_begin = hot.register_script(_CALL_BEGIN)
        self._call_end = hot.register_script(_CALL_END)
        self._seed = hot.register_script(_SEED)
        self._first_alert = hot.register_script(_FIRST_ALERT)

    # Keys.
    def budget_version_key(self, tenant: str) -> str:
        return self.keys.k("cost", tenant, "budgets-version")

    def counter_key(self, tenant: str, *parts: str) -> str:
        return self.keys.k("cost", tenant, "spent", *parts)

    def hold_key(self, tenant: str) -> str:
        # Beside the counters, so that whatever loses them loses the marker too.
        return self.counter_key(tenant, "hold", secrets.token_hex(8))

    def rate_key(self, tenant: str, kind: str, user: str) -> str:
        return self.keys.k("cost", tenant, "rate", kind, user)

    def breaker_key(self, tenant: str, name: str) -> str:
        return self.keys.k("cost", tenant, "breaker", name)

    def breaker_index_key(self, tenant: str) -> str:
        return self.keys.k("cost", tenant, "breakers")

    # Budgets.
    async def budget_version(self, tenant: str) -> str:
        value = await _guarded(self.hot.get(self.budget_version_key(tenant)))
        return _s(value) if value else "0"

    async def bump_budget_version(self, tenant: str) -> None:
        await _guarded(self.redis.incr(self.budget_version_key(tenant)))

    async def reserve(
        self, tenant: str, version: str, amount: int, counters: Sequence[Counter], hold: str
    ) -> ReserveResult:
        args: list[int | str] = [
            version, amount, _limits(counters), _ttls(counters), _seeds(counters),
            _HOLD_TTL_SECONDS,
        ]  # fmt: skip
        raw = await _guarded(
            self._reserve(
                keys=[self.budget_version_key(tenant), hold, *(c.key for c in counters)],
                args=args,
            )
        )
        status = int(raw[0])
        if status == -1:
            return ReserveResult(False, stale_version=_s(raw[1]))
        if status == -2:
            return ReserveResult(False, missing=_indexes(raw[1:]))
        if status == 0:
            return ReserveResult(False, refused_index=int(raw[1]) - 1, refused_current=int(raw[2]))
        return ReserveResult(True)

    async def settle(self, hold: str, changes: Sequence[CounterChange]) -> list[int | None]:
        if not changes:
            return []
        keys, args = _settle_args(hold, changes)
        return _settled(await _guarded(self._settle(keys=keys, args=args)))

    async def read(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values = await _guarded(self.redis.mget(list(keys)))
        return [int(v) if v else 0 for v in values]

    async def read_with_version(self, tenant: str, keys: Sequence[str]) -> tuple[str, list[int]]:
        """The tenant's budget version and the counters, in one round trip."""
        values = await _guarded(self.redis.mget([self.budget_version_key(tenant), *keys]))
        version = _s(values[0]) if values[0] else "0"
        return version, [int(v) if v else 0 for v in values[1:]]

    async def seed(self, values: Sequence[tuple[Counter, int]]) -> None:
        """Create the missing counters with the values the ledger gives (those still missing:
        one round trip for all)."""
        if not values:
            return
        await _guarded(
            self._seed(
                keys=[c.key for c, _ in values],
                args=[
                    ",".join(str(v) for _, v in values),
                    ",".join(str(c.ttl_seconds) for c, _ in values),
                ],
            )
        )

    async def first_alert(self, counter: Counter, alert: str) -> bool:
        raw = await _guarded(
            self._first_alert(
                keys=[counter.alerts_key, counter.key], args=[alert, counter.ttl_seconds]
            )
        )
        return bool(int(raw))

    # Rate limits.
    async def rate(self, key: str, limit: int, window_ms: int, take: bool) -> RateResult:
        raw = await _guarded(
            self._rate(
                keys=[key],
                args=[limit, window_ms, secrets.token_hex(6), "take" if take else "peek"],
            )
        )
        oldest = int(raw[2])
        return RateResult(
            bool(int(raw[0])), int(raw[1]), None if oldest < 0 else oldest, int(raw[3])
        )

    async def rate_give_back(self, key: str, member: str) -> None:
        await _guarded(self.redis.zrem(key, member))

    # Circuit breakers.
    async def breaker(
        self,
        tenant: str,
        name: str,
        op: str,
        thresholds: BreakerThresholds,
        *extra: str | int,
    ) -> BreakerResult:
        raw = await _guarded(
            self._breaker(
                keys=[self.breaker_key(tenant, name), self.breaker_index_key(tenant)],
                args=[op, name, *_params(thresholds), *extra],
            )
        )
        now, fields = _fields(raw[2:])
        return BreakerResult(int(raw[0]), int(raw[1]), now, fields)

    async def breaker_names(self, tenant: str) -> list[str]:
        members = await _guarded(self.redis.smembers(self.breaker_index_key(tenant)))
        return sorted(_s(m) for m in members)

    # The combined steps of a turn.
    async def admit(
        self,
        tenant: str,
        version: str,
        counters: Sequence[Counter],
        rate_key: str,
        rate_limit: int,
        window_ms: int,
        breaker: str,
        thresholds: BreakerThresholds,
        probe_ms: int,
        rate_member: str,
    ) -> AdmitResult:
        raw = await _guarded(self._admit(
            keys=[
                self.budget_version_key(tenant),
                rate_key,
                self.breaker_key(tenant, breaker),
                self.breaker_index_key(tenant),
                *(c.key for c in counters),
            ],
            args=[
                version, rate_limit, window_ms, rate_member, breaker,
                *_params(thresholds), probe_ms, _limits(counters),
            ],
        ))  # fmt: skip
        return _admit_result(raw)

    async def call_begin(
        self,
        tenant: str,
        version: str,
        amount: int,
        counters: Sequence[Counter],
        breaker: str,
        thresholds: BreakerThresholds,
        probe_ms: int,
        hold: str,
    ) -> AdmitResult:
        args: list[int | str] = [
            version, amount, breaker, *_params(thresholds), probe_ms, _limits(counters),
            _ttls(counters), _seeds(counters), _HOLD_TTL_SECONDS,
        ]  # fmt: skip
        raw = await _guarded(
            self._call_begin(
                keys=[
                    self.budget_version_key(tenant),
                    self.breaker_key(tenant, breaker),
                    self.breaker_index_key(tenant),
                    hold,
                    *(c.key for c in counters),
                ],
                args=args,
            )
        )
        return _admit_result(raw)

    async def call_end(
        self,
        tenant: str,
        breaker: str,
        op: str,
        detail: str,
        thresholds: BreakerThresholds,
        hold: str,
        changes: Sequence[CounterChange],
    ) -> list[int | None]:
        keys = [self.breaker_key(tenant, breaker), self.breaker_index_key(tenant)]
        args: list[int | str] = [op, breaker, *_params(thresholds), detail]
        if changes:
            settle_keys, settle_args = _settle_args(hold, changes)
            keys += settle_keys
            args += settle_args
        raw = await _guarded(self._call_end(keys=keys, args=args))
        return _settled(raw)


def _indexes(raw: Sequence[bytes | str | int]) -> tuple[int, ...]:
    """The script's 1-based counter indexes as 0-based ones."""
    return tuple(int(v) - 1 for v in raw)


def _admit_result(raw: Sequence[bytes | str | int]) -> AdmitResult:
    status = int(raw[0])
    if status == 1:
        return AdmitResult(ok=True, probe=int(raw[1]) == 2)
    if status == -1:
        return AdmitResult(ok=False, stale_version=_s(raw[1]))
    if status == -2:
        return AdmitResult(ok=False, missing=_indexes(raw[1:]))
    what = _s(raw[1])
    if what == "budget":
        return AdmitResult(ok=False, budget_index=int(raw[2]) - 1, budget_current=int(raw[3]))
    if what == "rate":
        oldest = int(raw[3])
        return AdmitResult(
            ok=False,
            rate=RateResult(False, int(raw[2]), None if oldest < 0 else oldest, int(raw[4])),
        )
    now, fields = _fields(raw[3:])
    return AdmitResult(ok=False, breaker=BreakerResult(0, int(raw[2]), now, fields))
