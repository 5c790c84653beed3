"""Circuit breakers, CLOSED -> OPEN -> HALF_OPEN -> CLOSED, one per tenant and one per model
provider endpoint of a tenant. State lives in Redis (one atomic script per event), so every
server process sees the same breaker.

The tenant breaker opens after `failure_threshold` consecutive failed turns, on a budget breach
(spending went past a limit), or when `spike_threshold` of the last 10 turns each cost over
`spike_factor` times the moving average of the last 10 ordinary turns (with at least 5 of
those; spikes stay out of the average, so a sustained jump keeps counting).
A provider breaker opens after consecutive failed calls to that provider endpoint (see
`endpoint_key`); a call that succeeds resets its count. After the cool-down one probe goes
through at a time; `success_threshold` successful probes close the breaker, a failed probe
opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from convergio_server.domain.costs.money import from_nanos, to_nanos
from convergio_server.domain.costs.ports import BreakerResult, BreakerThresholds, CounterStore
from convergio_server.domain.errors import Unavailable

TENANT = "tenant"
PROVIDER_PREFIX = "provider:"  # of the breaker names of provider endpoints

# Where a provider's client goes when it is given no base URL: calls there and calls to an
# explicit URL of the same host share one breaker, named by the provider alone.
_DEFAULT_ENDPOINTS = {"openai": ("api.openai.com", 443)}
_SCHEME_PORTS = {"http": 80, "https": 443}


def endpoint_key(provider: str, base_url: str = "") -> str:
    """The key of a provider endpoint as the API names it (CircuitBreaker.provider): the
    provider alone for its own endpoint ("openai"), `provider:host:port` for any other base
    URL ("openai:localhost:11434"). The path is left out: one server answers them all."""
    provider = provider.lower()
    if not base_url:
        return provider
    try:
        parts = urlsplit(base_url.strip())
        host, port = parts.hostname, parts.port or _SCHEME_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number: such a URL cannot be called anyway
        host, port = None, None
    if not host or port is None:
        return provider
    if _DEFAULT_ENDPOINTS.get(provider) == (host, port):
        return provider
    return f"{provider}:{f'[{host}]' if ':' in host else host}:{port}"


def provider_name(provider: str) -> str:
    """The breaker name of a provider endpoint key. Keys are made lower case, so that a key
    typed with capitals (GetCircuitBreaker) finds the breaker the calls count on."""
    return f"{PROVIDER_PREFIX}{provider.lower()}"


@dataclass(frozen=True)
class BreakerState:
    scope: str  # TENANT | PROVIDER
    provider: str
    state: str  # CLOSED | OPEN | HALF_OPEN
    consecutive_failures: int
    cost_spikes: int
    half_open_successes: int
    moving_average_usd: Decimal
    open_cause: str  # "" | FAILURES | BUDGET_BREACH | COST_SPIKES
    reason: str
    opened_time: datetime | None
    next_probe_time: datetime | None


class Breakers:
    def __init__(self, counters: CounterStore, thresholds: BreakerThresholds) -> None:
        self.counters = counters
        self.thresholds = thresholds
        # How long a half-open probe holds the slot if its process never reports back.
        self.probe_ms = max(thresholds.cool_down_ms, 1000)

    async def _op(self, tenant: str, name: str, op: str, *extra: str | int) -> BreakerResult:
        return await self.counters.breaker(tenant, name, op, self.thresholds, *extra)

    async def admit(self, tenant: str, name: str) -> bool:
        """Let a turn (tenant) or a call (provider) through, or raise Unavailable with reason
        CIRCUIT_OPEN. Returns True when it goes through as the half-open probe."""
        result = await self._op(tenant, name, "check", self.probe_ms)
        if result.decision == 0:
            raise self.refusal(name, result)
        return result.decision == 2

    def refusal(self, name: str, result: BreakerResult) -> Unavailable:
        state = self._state(name, result)
        what = "the tenant" if name == TENANT else f"provider {state.provider!r}"
        retry = max(result.retry_ms, 0) / 1000
        return Unavailable(
            f"the circuit breaker of {what} is {state.state.lower().replace('_', '-')}"
            f" ({state.reason or state.open_cause.lower()}); retry in {retry:.0f} s",
            reason="CIRCUIT_OPEN",
            metadata={
                "breaker": name,
                "cause": state.open_cause,
                "retry_after_seconds": f"{retry:.3f}",
            },
            retry_after_seconds=retry,
        )

    async def success(self, tenant: str, name: str) -> BreakerState:
        return self._state(name, await self._op(tenant, name, "success"))

    async def release(self, tenant: str, name: str) -> BreakerState:
        """Neither a success nor a failure: only frees the half-open probe slot."""
        return self._state(name, await self._op(tenant, name, "release"))

    async def failure(self, tenant: str, name: str, detail: str) -> BreakerState:
        return self._state(name, await self._op(tenant, name, "failure", detail[:200]))

    async def cost(self, tenant: str, amount: Decimal) -> BreakerState:
        return self._state(TENANT, await self._op(tenant, TENANT, "cost", to_nanos(amount)))

    async def turn_succeeded(self, tenant: str, amount: Decimal) -> BreakerState:
        """`success` then `cost` of the tenant's breaker, in one round trip."""
        raw = await self._op(tenant, TENANT, "success+cost", to_nanos(amount))
        return self._state(TENANT, raw)

    async def trip(self, tenant: str, name: str, cause: str, reason: str) -> BreakerState:
        return self._state(name, await self._op(tenant, name, "trip", cause, reason[:200]))

    async def reset(self, tenant: str, name: str) -> BreakerState:
        return self._state(name, await self._op(tenant, name, "reset"))

    async def get(self, tenant: str, name: str) -> BreakerState:
        return self._state(name, await self._op(tenant, name, "get"))

    async def names(self, tenant: str) -> list[str]:
        names = await self.counters.breaker_names(tenant)
        return sorted(names, key=lambda n: (n != TENANT, n))

    def _state(self, name: str, result: BreakerResult) -> BreakerState:
        f = result.fields
        state = f.get("state", "CLOSED")
        opened_ms = int(f.get("opened_ms", "0") or 0)
        costs = [int(c) for c in f.get("ordinary", "").split(",") if c]
        average = from_nanos(sum(costs)) / len(costs) if costs else Decimal(0)
        next_probe: datetime | None = None
        if state == "OPEN":
            next_probe = _ms(opened_ms + self.thresholds.cool_down_ms)
        elif state == "HALF_OPEN":
            probe_until = int(f.get("probe_until", "0") or 0)
            next_probe = _ms(max(probe_until, result.now_ms))
        return BreakerState(
            scope="TENANT" if name == TENANT else "PROVIDER",
            provider="" if name == TENANT else name.removeprefix(PROVIDER_PREFIX),
            state=state,
            consecutive_failures=int(f.get("failures", "0") or 0),
            cost_spikes=int(f.get("spikes", "0") or 0),
            half_open_successes=int(f.get("successes", "0") or 0),
            moving_average_usd=average.quantize(Decimal("0.000000001")),
            open_cause=f.get("cause", ""),
            reason=f.get("reason", ""),
            opened_time=_ms(opened_ms) if opened_ms else None,
            next_probe_time=next_probe,
        )


def _ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
