"""Prometheus metrics of the gRPC surface, served on CONVERGIO_METRICS_LISTEN.

Metric names follow `convergio_<what>_<unit>`; capabilities add their own
(tokens, cost, flag evaluations) next to these.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from convergio_server.domain.conversations.kept_teams import TEAM_ORIGINS
from convergio_server.domain.conversations.runner import TurnRunner
from convergio_server.domain.conversations.turn_stats import (
    DURATION_BOUNDS,
    FIRST_TOKEN_BOUNDS,
    TurnStats,
)
from convergio_server.domain.costs.call_stats import CALL_DURATION_BOUNDS, ModelCallStats
from convergio_server.domain.histogram import Histogram, merged

log = logging.getLogger(__name__)

RPC_ACTIVE_STREAMS = Gauge(
    "convergio_rpc_active_streams", "Server streams open right now, by method.", ["method"]
)
STORE_UP = Gauge(
    "convergio_store_up", "1 when the store answers the health probe, else 0.", ["store"]
)


_DURATION_BOUNDS = (  # seconds
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
)


def _le(bounds: Sequence[float]) -> tuple[str, ...]:
    """The buckets' `le` labels, as prometheus_client writes them."""
    return (*(repr(bound) for bound in bounds), "+Inf")


def _histogram(
    name: str,
    documentation: str,
    bounds: Sequence[float],
    rows: Iterable[tuple[list[str], list[Histogram]]],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    le = _le(bounds)
    for values, histograms in rows:
        counts, total = merged(bounds, histograms)
        family.add_metric(values, list(zip(le, counts, strict=True)), total)
    return family


def _summed(counters: Iterable[Counter[Any]]) -> Counter[Any]:
    total: Counter[Any] = Counter()
    for counter in counters:
        total.update(counter)
    return total


def _counter(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, float]
) -> CounterMetricFamily:
    """A counter with a sample per key of `values` (a label value, or a tuple of them)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], values[key])
    return family


class _RpcCalls:
    """`convergio_rpc_requests_total` and `convergio_rpc_duration_seconds`, counted in plain
    dictionaries by the event loop and read at scrape time. prometheus_client's own metrics
    take a lock per counter and per histogram bucket on every call: a tenth of the call
    pipeline's cost on a small unary call."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.durations: dict[str, Histogram] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.durations.get(method)
        if histogram is None:
            histogram = self.durations[method] = Histogram(_DURATION_BOUNDS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "convergio_rpc_requests",
            "Finished RPCs by method and status code.",
            ["method", "code"],
            dict(self.counts),
        )
        yield _histogram(
            "convergio_rpc_duration_seconds",
            "RPC duration from the start of the call pipeline to the last message, by method.",
            _DURATION_BOUNDS,
            [([method], [histogram]) for method, histogram in list(self.durations.items())],
            ["method"],
        )


_RPC_CALLS = _RpcCalls()
REGISTRY.register(_RPC_CALLS)  # type: ignore[arg-type]


class _Turns:
    """Metrics of every turn runner of the process, read at scrape time: the turns running,
    the new ones refused at the limit, and the kept teams (how many, their estimated memory,
    how turns got their team, how many were dropped unused; see
    `domain/conversations/kept_teams.py`)."""

    def __init__(self) -> None:
        self.watched: weakref.WeakSet[TurnRunner] = weakref.WeakSet()
        # Kept after their runner is gone, so that the counters never go down (a process
        # that ran several servers, as the tests do).
        self.stats: list[TurnStats] = []

    def collect(self) -> Iterator[Metric]:
        runners = list(self.watched)
        yield GaugeMetricFamily(
            "convergio_turns_running",
            "Turns running in this process.",
            value=sum(len(runner.local) for runner in runners),
        )
        yield CounterMetricFamily(
            "convergio_turns_refused_busy",
            "New turns refused because the process ran CONVERGIO_MAX_RUNNING_TURNS already.",
            value=sum(runner.refused_busy for runner in runners),
        )
        stats = self.stats
        yield _counter(
            "convergio_turns",
            "Turns ended by this process, by stop reason (queued turns cancelled and the "
            "turns of a process that died included).",
            ["stop_reason"],
            _summed(s.ended for s in stats),
        )
        yield _histogram(
            "convergio_turn_duration_seconds",
            "Duration of the turns that ran in this process, from their admission to their end.",
            DURATION_BOUNDS,
            [([], [s.durations for s in stats])],
        )
        yield _histogram(
            "convergio_turn_first_token_seconds",
            "Time from a turn's admission to its first token delta (turns that stream tokens).",
            FIRST_TOKEN_BOUNDS,
            [([], [s.first_tokens for s in stats])],
        )
        yield _counter(
            "convergio_agent_messages",
            "Messages the agents completed, by agent.",
            ["agent"],
            _summed(s.messages for s in stats),
        )
        tokens = _summed(s.tokens for s in stats)
        yield _counter(
            "convergio_model_tokens",
            "Tokens of the turns' model calls, by kind (prompt, completion).",
            ["kind"],
            {kind: tokens[kind] for kind in ("prompt", "completion")},
        )
        yield CounterMetricFamily(
            "convergio_model_calls",
            "Model calls of the turns.",
            value=sum(s.model_calls for s in stats),
        )
        yield CounterMetricFamily(
            "convergio_turn_cost_usd",
            "Cost of the turns' model calls, in USD.",
            value=float(sum((s.cost_usd for s in stats), Decimal(0))),
        )
        yield _counter(
            "convergio_tool_results",
            "Tool results, by tool and result (ok, or the error kind).",
            ["tool", "result"],
            _summed(s.tool_results for s in stats),
        )
        watched = [runner.teams for runner in runners]
        yield GaugeMetricFamily(
            "convergio_teams_kept",
            "AutoGen teams kept in memory for their conversation's next turn.",
            value=sum(len(teams) for teams in watched),
        )
        yield GaugeMetricFamily(
            "convergio_teams_kept_estimated_bytes",
            "Memory the kept teams are estimated to hold (ten times their saved state).",
            value=sum(teams.weight for teams in watched),
        )
        origins = _summed(Counter(teams.turns) for teams in watched)
        yield _counter(
            "convergio_team_turns",
            "Turns by how they got their team: reused (kept from the last turn), stale (the "
            "kept one missed a turn run elsewhere), another_make, none_kept.",
            ["team"],
            {how: origins[how] for how in TEAM_ORIGINS},
        )
        yield CounterMetricFamily(
            "convergio_teams_dropped",
            "Kept teams dropped unused (idle too long, or the oldest beyond the bounds).",
            value=sum(teams.dropped for teams in watched),
        )


_TURNS = _Turns()
REGISTRY.register(_TURNS)  # type: ignore[arg-type]


def watch_turns(runner: TurnRunner) -> None:
    """Report this runner's turns and kept teams in the metrics (its gauges until it is
    collected, its counters for good)."""
    _TURNS.watched.add(runner)
    _TURNS.stats.append(runner.stats)


class _ModelCalls:
    """Metrics of the model calls of every cost guard of the process (see
    `domain/costs/call_stats.py`), read at scrape time."""

    def __init__(self) -> None:
        self.watched: weakref.WeakSet[ModelCallStats] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        stats = list(self.watched)
        yield _counter(
            "convergio_model_requests",
            "Model calls ended, by provider, model and outcome (OK, ERROR, CANCELLED, ...); "
            "the turns' and the workflows' alike.",
            ["provider", "model", "outcome"],
            _summed(s.ended for s in stats),
        )
        models = sorted({key for s in stats for key in s.durations})
        yield _histogram(
            "convergio_model_request_duration_seconds",
            "Duration of the model calls, from their admission by the guards to their end, by "
            "provider and model.",
            CALL_DURATION_BOUNDS,
            [
                (list(key), [s.durations[key] for s in stats if key in s.durations])
                for key in models
            ],
            ["provider", "model"],
        )
        costs: dict[tuple[str, str], float] = {
            key: float(sum((s.cost_usd.get(key, Decimal(0)) for s in stats), Decimal(0)))
            for key in models
        }
        yield _counter(
            "convergio_model_cost_usd",
            "Cost of the model calls, in USD, by provider and model.",
            ["provider", "model"],
            costs,
        )


_MODEL_CALLS = _ModelCalls()
REGISTRY.register(_MODEL_CALLS)  # type: ignore[arg-type]


def watch_model_calls(stats: ModelCallStats) -> None:
    """Report these model calls in the metrics (until the stats are collected)."""
    _MODEL_CALLS.watched.add(stats)


def observe_call(method: str, code: str, seconds: float) -> None:
    _RPC_CALLS.observe(method, code, seconds)


def start_metrics_server(listen: str) -> Any:
    """Serve /metrics on host:port; returns the server (None when `listen` is empty)."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host)
    log.info("metrics", extra={"address": listen})
    return server
