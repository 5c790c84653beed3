"""Run leases of turns (which process runs a conversation's turn) and the cross-process
cancel channel, in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from convergio_server.domain.background import cancel_and_wait, worth_logging
from convergio_server.storage import redis as rds
from convergio_server.storage.redis import Keys
from convergio_server.storage.redis_pipe import PipelinedRedis

log = logging.getLogger(__name__)

# KEYS: leases; ARGV: ttl ms, then the holder of each. Answers 1 (renewed) or 0 per lease.
_RENEW_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    out[i] = redis.call('PEXPIRE', key, ARGV[1])
  else
    out[i] = 0
  end
end
return out
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeases:
    """Every lease command is on a turn's way: they go through the pipelined connection."""

    def __init__(self, redis: PipelinedRedis, keys: Keys, *, seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(seconds * 1000)
        self._renew_many = redis.register_script(_RENEW_MANY)
        self._release = redis.register_script(_RELEASE)

    def _key(self, tenant_id: str, conversation_id: str) -> str:
        return self.keys.k("conv", tenant_id, conversation_id, "lease")

    async def acquire(self, tenant_id: str, conversation_id: str, holder: str) -> bool:
        # The store's active-turn lock already decided who runs: take over any stale value.
        await self.redis.set(self._key(tenant_id, conversation_id), holder, px=self.ttl_ms)
        return True

    async def acquire_if_free(self, tenant_id: str, conversation_id: str, holder: str) -> bool:
        key = self._key(tenant_id, conversation_id)
        async with rds.outage_as_unavailable():
            return bool(await self.redis.set(key, holder, px=self.ttl_ms, nx=True))

    async def renew_many(self, held: list[tuple[str, str, str]]) -> list[bool]:
        kept: list[int] = await self._renew_many(
            keys=[self._key(tenant, conversation) for tenant, conversation, _ in held],
            args=[self.ttl_ms, *(holder for _, _, holder in held)],
        )
        return [bool(k) for k in kept]

    async def release(self, tenant_id: str, conversation_id: str, holder: str) -> None:
        async with rds.outage_as_unavailable():
            await self._release(keys=[self._key(tenant_id, conversation_id)], args=[holder])

    async def holder(self, tenant_id: str, conversation_id: str) -> str | None:
        async with rds.outage_as_unavailable():
            value = await self.redis.get(self._key(tenant_id, conversation_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)


class CancelChannel:
    """Asks the process that runs a turn to cancel it (Redis pub/sub)."""

    def __init__(self, redis: aioredis.Redis, blocking: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.blocking = blocking
        self.channel = keys.k("turn-cancel")
        self._task: asyncio.Task[None] | None = None

    async def publish(
        self, tenant_id: str, conversation_id: str, turn_id: str, reason: str, detail: str
    ) -> None:
        message = json.dumps(
            {
                "tenant": tenant_id,
                "conversation": conversation_id,
                "turn": turn_id,
                "reason": reason,
                "detail": detail,
            }
        )
        await self.redis.publish(self.channel, message)

    def listen(self, on_cancel: Callable[[str, str, str], Any]) -> None:
        """Call `on_cancel(turn_id, reason, detail)` for every request, until `close`."""

        async def run() -> None:
            failures = 0
            while True:
                try:
                    pubsub = self.blocking.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.channel)
                    if failures:
                        log.info("turn cancel listener: subscribed again")
                        failures = 0
                    try:
                        async for message in pubsub.listen():
                            if message.get("type") != "message":
                                continue
                            data = json.loads(message["data"])
                            on_cancel(data["turn"], data["reason"], data["detail"])
                    finally:
                        with contextlib.suppress(Exception):
                            await pubsub.aclose()  # type: ignore[no-untyped-call]
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if worth_logging(failures):  # Redis down
                        log.warning("turn cancel listener: %s (failure %d)", exc, failures)
                    await asyncio.sleep(min(5.0, 0.25 * 2**failures))

        # A context of its own: it outlives the request that started it (and its log ids).
        self._task = asyncio.create_task(
            run(), name="turn-cancel-listener", context=contextvars.Context()
        )

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
