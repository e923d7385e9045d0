"""Percentiles over latency samples (nearest rank, so a reported p99 is a latency that was observed)."""

from __future__ import annotations

import math


def percentile(ordered: list[float], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of an already sorted list; None when there are no samples."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
