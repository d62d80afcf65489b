"""Aggregates of trial results: mean with a t confidence interval, Wilson intervals, quantiles.

Trial accuracy under faults is often bimodal (most trials harmless, a few catastrophic), so every
aggregate reports the median and the 5th percentile beside the mean.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MeanSummary", "mean_confidence_interval", "summarize", "trapezoid_auc", "wilson_interval"]


@dataclass(frozen=True)
class MeanSummary:
    """Mean, its confidence interval, median and 5th percentile of a sample."""

    count: int
    mean: float
    ci_low: float
    ci_high: float
    median: float
    p05: float

    @property
    def halfwidth(self) -> float:
        """Half the width of the confidence interval (``inf`` with fewer than two values)."""
        return (self.ci_high - self.ci_low) / 2


def mean_confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)``.

    With one value the interval is unbounded; with zero spread it collapses to the mean.
    """
    sample = np.asarray(values, dtype=float)
    if sample.size == 0:
        raise ValueError("no values to summarize")
    mean = float(sample.mean())
    if sample.size == 1:
        return mean, -math.inf, math.inf
    standard_error = float(sample.std(ddof=1)) / math.sqrt(sample.size)
    quantile = _t_quantile((1 + level) / 2, sample.size - 1)
    return mean, mean - quantile * standard_error, mean + quantile * standard_error


@functools.lru_cache(maxsize=4096)
def _t_quantile(probability: float, df: int) -> float:
    """Student-t quantile, cached: the adaptive stopping rule asks for it before every trial."""
    from scipy import stats  # slow to import; every command but the reports can do without it

    return float(stats.t.ppf(probability, df=df))


def summarize(values: Sequence[float], level: float = 0.95) -> MeanSummary:
    """Mean with CI, median and 5th percentile of ``values``."""
    mean, low, high = mean_confidence_interval(values, level)
    sample = np.asarray(values, dtype=float)
    return MeanSummary(
        count=int(sample.size),
        mean=mean,
        ci_low=low,
        ci_high=high,
        median=float(np.median(sample)),
        p05=float(np.percentile(sample, 5)),
    )


def wilson_interval(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Agresti & Coull 1998)."""
    from scipy import stats

    if total <= 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf((1 + level) / 2))
    proportion = successes / total
    denominator = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / denominator
    spread = z * math.sqrt(proportion * (1 - proportion) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def trapezoid_auc(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Area under the piecewise-linear curve through ``(xs, ys)`` (xs ascending)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(xs) < 2:
        return 0.0
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
