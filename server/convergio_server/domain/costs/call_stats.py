"""What the model calls of a process did, by provider and model, for the metrics: how they
ended, how long they took and what they cost. An operator tells a slow or failing endpoint
from a costly one here; a turn's totals (`turn_stats.py`) cannot say which model it was."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from convergio_server.domain.histogram import Histogram

# Seconds: an offline call within milliseconds, a remote one within seconds to minutes.
CALL_DURATION_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ModelCallStats:
    def __init__(self) -> None:
        self.ended: Counter[tuple[str, str, str]] = Counter()  # (provider, model, outcome)
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.cost_usd: dict[tuple[str, str], Decimal] = {}

    def call_ended(
        self, provider: str, model: str, outcome: str, seconds: float, cost_usd: Decimal
    ) -> None:
        key = (provider, model)
        self.ended[(provider, model, outcome)] += 1
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = Histogram(CALL_DURATION_BOUNDS)
        histogram.observe(seconds)
        self.cost_usd[key] = self.cost_usd.get(key, Decimal(0)) + cost_usd
