"""Prometheus metrics of the gRPC surface, served on CONVERGIO_METRICS_LISTEN.

Metric names follow `convergio_<what>_<unit>`; capabilities add their own
(tokens, cost, flag evaluations) next to these.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import weakref
from collections.abc import Iterator
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
# The buckets' `le` labels, as prometheus_client writes them.
_LE = (*(repr(bound) for bound in _DURATION_BOUNDS), "+Inf")


class _RpcCalls:
    """`convergio_rpc_requests_total` and `convergio_rpc_duration_seconds`, counted in plain
    dictionaries by the event loop and read at scrape time. prometheus_client's own metrics
    take a lock per counter and per histogram bucket on every call: a tenth of the call
    pipeline's cost on a small unary call."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        # Per method: a count per bucket (the last one past every bound), then the sum.
        self.durations: dict[str, list[float]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self.counts[key] = self.counts.get(key, 0) + 1
        row = self.durations.get(method)
        if row is None:
            row = self.durations[method] = [0.0] * (len(_DURATION_BOUNDS) + 2)
        row[bisect.bisect_left(_DURATION_BOUNDS, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "convergio_rpc_requests",
            "Finished RPCs by method and status code.",
            labels=["method", "code"],
        )
        for (method, code), count in list(self.counts.items()):
            requests.add_metric([method, code], count)
        yield requests
        durations = HistogramMetricFamily(
            "convergio_rpc_duration_seconds",
            "RPC duration from the start of the call pipeline to the last message, by method.",
            labels=["method"],
        )
        for method, row in list(self.durations.items()):
            cumulative = itertools.accumulate(row[:-1])
            durations.add_metric([method], list(zip(_LE, cumulative, strict=True)), row[-1])
        yield durations


_RPC_CALLS = _RpcCalls()
REGISTRY.register(_RPC_CALLS)  # type: ignore[arg-type]


class _Turns:
    """Metrics of every turn runner of the process, read at scrape time: the turns running,
    the new ones refused at the limit, and the kept teams (how many, their estimated memory,
    how turns got their team, how many were dropped unused; see
    `domain/conversations/kept_teams.py`)."""

    def __init__(self) -> None:
        self.watched: weakref.WeakSet[TurnRunner] = weakref.WeakSet()

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
        turns = CounterMetricFamily(
            "convergio_team_turns",
            "Turns by how they got their team: reused (kept from the last turn), stale (the "
            "kept one missed a turn run elsewhere), another_make, none_kept.",
            labels=["team"],
        )
        for how in TEAM_ORIGINS:
            turns.add_metric([how], sum(teams.turns[how] for teams in watched))
        yield turns
        yield CounterMetricFamily(
            "convergio_teams_dropped",
            "Kept teams dropped unused (idle too long, or the oldest beyond the bounds).",
            value=sum(teams.dropped for teams in watched),
        )


_TURNS = _Turns()
REGISTRY.register(_TURNS)  # type: ignore[arg-type]


def watch_turns(runner: TurnRunner) -> None:
    """Report this runner's turns and kept teams in the metrics (until it is collected)."""
    _TURNS.watched.add(runner)


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
