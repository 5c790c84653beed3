"""A histogram of observations, counted in a plain list by the event loop and read when
metrics are scraped (prometheus_client's own takes a lock per bucket on every call)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence


class Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: past every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Observations at most each bound, then all of them."""
        return list(itertools.accumulate(self.counts))


def merged(bounds: Sequence[float], histograms: Sequence[Histogram]) -> tuple[list[int], float]:
    """Cumulative counts and sum of histograms of these bounds (zeros when there are none)."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for histogram in histograms:
        for i, count in enumerate(histogram.cumulative()):
            counts[i] += count
        total += histogram.sum
    return counts, total
