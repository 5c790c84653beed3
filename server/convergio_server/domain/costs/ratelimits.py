"""Rate limits per user, shared by every server process: sliding windows kept in Redis
(a sorted set of call times per user and limit, checked and updated by one script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from convergio_server.domain.costs.ports import CounterStore, RateResult
from convergio_server.domain.errors import QuotaExceeded, QuotaViolation


@dataclass(frozen=True)
class Limit:
    kind: str  # TURNS_PER_MINUTE | CONVERSATIONS_PER_HOUR
    limit: int
    window_seconds: int

    @property
    def subject(self) -> str:
        return f"rate:{self.kind.lower()}"


@dataclass(frozen=True)
class LimitStatus:
    limit: Limit
    used: int
    reset_time: datetime | None

    @property
    def remaining(self) -> int:
        return max(self.limit.limit - self.used, 0)


class RateLimits:
    def __init__(self, counters: CounterStore, turns_per_minute: int, conversations_per_hour: int):
        self.counters = counters
        self.turns = Limit("TURNS_PER_MINUTE", turns_per_minute, 60)
        self.conversations = Limit("CONVERSATIONS_PER_HOUR", conversations_per_hour, 3600)

    async def take(self, tenant: str, user: str, limit: Limit) -> None:
        """Count one call, or raise QuotaExceeded (RATE_LIMITED) with the retry delay."""
        key = self.counters.rate_key(tenant, limit.kind.lower(), user)
        result = await self.counters.rate(key, limit.limit, limit.window_seconds * 1000, True)
        if not result.allowed:
            raise self.refusal(user, limit, result)

    def refusal(self, user: str, limit: Limit, result: RateResult) -> QuotaExceeded:
        oldest = result.oldest_ms if result.oldest_ms is not None else result.now_ms
        retry = max(oldest + limit.window_seconds * 1000 - result.now_ms, 1) / 1000
        what = "turns a minute" if limit.kind == "TURNS_PER_MINUTE" else "new conversations an hour"
        return QuotaExceeded(
            f"rate limit reached: {limit.limit} {what} for {user!r}; retry in {retry:.1f} s",
            reason="RATE_LIMITED",
            metadata={"limit": limit.subject},
            violations=[
                QuotaViolation(
                    limit.subject,
                    f"{result.used} of {limit.limit} used in the last {limit.window_seconds} s",
                )
            ],
            retry_after_seconds=retry,
        )

    async def status(self, tenant: str, user: str) -> list[LimitStatus]:
        out: list[LimitStatus] = []
        for limit in (self.turns, self.conversations):
            key = self.counters.rate_key(tenant, limit.kind.lower(), user)
            result = await self.counters.rate(key, limit.limit, limit.window_seconds * 1000, False)
            reset = None
            if result.oldest_ms is not None and result.used:
                reset = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                    milliseconds=result.oldest_ms + limit.window_seconds * 1000
                )
            out.append(LimitStatus(limit, result.used, reset))
        return out
