"""Summary figures for timings: the one percentile helper (bench, eval and the load test)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile (1 <= p <= 99), interpolated between the nearest values; 0.0 for
    no values. percentile(values, 50) is the median."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[p - 1])
