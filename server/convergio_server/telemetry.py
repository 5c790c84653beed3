"""Prometheus metrics of the gRPC surface, served on CONVERGIO_METRICS_LISTEN.

Metric names follow `convergio_<what>_<unit>`; capabilities add their own
(tokens, cost, flag evaluations) next to these.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_REQUESTS = Counter(
    "convergio_rpc_requests_total",
    "Finished RPCs by method and status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "convergio_rpc_duration_seconds",
    "RPC duration from the first interceptor to the last message, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
RPC_ACTIVE_STREAMS = Gauge(
    "convergio_rpc_active_streams", "Server streams open right now, by method.", ["method"]
)
STORE_UP = Gauge(
    "convergio_store_up", "1 when the store answers the health probe, else 0.", ["store"]
)


# Labelled children, kept: looking them up again on every call is a measurable part of
# a unary call's cost.
_COUNTERS: dict[tuple[str, str], Any] = {}
_DURATIONS: dict[str, Any] = {}


def observe_call(method: str, code: str, seconds: float) -> None:
    counter = _COUNTERS.get((method, code))
    if counter is None:
        counter = _COUNTERS[(method, code)] = RPC_REQUESTS.labels(method, code)
    duration = _DURATIONS.get(method)
    if duration is None:
        duration = _DURATIONS[method] = RPC_DURATION.labels(method)
    counter.inc()
    duration.observe(seconds)


def start_metrics_server(listen: str) -> Any:
    """Serve /metrics on host:port; returns the server (None when `listen` is empty)."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host)
    log.info("metrics", extra={"address": listen})
    return server
