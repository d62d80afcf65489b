"""Aggregates of trial results that stay honest for heavy-tailed, bounded data.

Trial accuracy under faults is a spike at clean accuracy plus rare catastrophes, bounded by 0 and 100.
A Student-t interval on such data covers far less than its nominal level at tens of trials, collapses
to zero width when every trial agrees, and reaches beyond 100. resbench therefore uses one interval
everywhere (tables, paired differences, the resilience score, the adaptive trial rule):

**The bounded Bayesian bootstrap, one pseudo-trial per side.** The Bayesian bootstrap of Rubin (1981,
*Ann. Statist.* 9(1)) draws the mean of an unknown distribution as ``sum_i w_i x_i / sum_i w_i`` with
``w_i ~ Gamma(1)`` (a Dirichlet-process posterior, Ferguson 1973, *Ann. Statist.* 1(2), theorem 1). Each
end of the interval adds one pseudo-trial, at the end of the range it bounds:

    lower: 2.5 % quantile of  (sum_i w_i x_i + a low) / (sum_i w_i + a),     a ~ Gamma(1)
    upper: 97.5 % quantile of (sum_i w_i x_i + b high) / (sum_i w_i + b),    b ~ Gamma(1)

This is the bound of Gaffke (2005, *Math. Methods Statist.* 14(4)) for the mean of a bounded variable,
which Learned-Miller & Thomas (2019, arXiv:1905.06208) show is never looser than Anderson's exact bound
(1969) and conjecture to be exact itself, on each side. On two-valued data (catastrophe or not) each
side is exactly the Clopper-Pearson bound, which misses on either side at most 2.5 % of the time.
One pseudo-trial of weight 1/2 at each end of the range for both bounds (the Jeffreys analogue, used
before) missed on one side 4 to 6 % of the time on skewed cells: a spike at clean accuracy plus a few
catastrophes. In simulations of such samples (catastrophe rates 0.3 to 30 %, fixed or uniform severity,
10 to 300 trials, 400 repetitions each) this interval missed at most 2.5 % per tail
(``tests/test_interval_tails.py``); ``benchmarks/estimator_coverage.py`` measures it on a real model.
It lies within ``[low, high]``, is never of zero width (a sample that never saw a catastrophe cannot rule
one out), and shrinks like ``1/sqrt(n)`` (the pseudo-trial's share like ``1/n``).

Draws therefore come in two rows (:data:`SIDES`): row 0 the draws with the pseudo-trial at the worst
outcome, whose lower quantile bounds the mean from below, row 1 those with the pseudo-trial at the best
outcome, for the upper bound. A quantity that grows with the mean (the resilience score) keeps the rows
apart; a difference pairs the worst row of one with the best row of the other
(:func:`difference_draws`).

Draws are indexed by trial: one weight matrix per seed is shared by every BER and every method, so
nested sweeps keep their correlation and methods stay paired (common random numbers) in differences.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DRAWS",
    "SIDES",
    "MeanSummary",
    "TrialWeights",
    "bounded_mean_interval",
    "difference_draws",
    "holm_adjust",
    "overhead_interval",
    "quantile_interval",
    "sign_flip_pvalue",
    "summarize",
    "weighted_quantile",
    "wilson_interval",
]

# A sample: a sequence of numbers or a numpy array.
Values = Sequence[float] | np.ndarray
Indices = Sequence[int] | np.ndarray

DRAWS = 2000
LEVEL = 0.95
#: Rows of a draw array: the pseudo-trial at the worst outcome (lower bound), at the best (upper bound).
SIDES = 2
_BLOCK = 64


@functools.lru_cache(maxsize=256)
def _weight_block(seed: int, block: int, draws: int) -> np.ndarray:
    """Gamma(1) weights of trial indices ``64 block .. 64 block + 63``: a trial's weights never depend
    on how many trials there are, so a growing sample keeps its earlier draws (and they are cached)."""
    block_weights = np.random.default_rng([seed, block, draws]).standard_gamma(1.0, size=(draws, _BLOCK))
    block_weights.flags.writeable = False
    return block_weights


@dataclass(frozen=True)
class TrialWeights:
    """Dirichlet-process posterior weights: ``trials[d, t]`` for trial index ``t`` in draw ``d``, and the
    Gamma(1) weights of the pseudo-trial at the worst (``low``) and at the best (``high``) end of the range,
    one per draw (module docstring)."""

    trials: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def draw(cls, count: int, seed: int = 0, draws: int = DRAWS) -> TrialWeights:
        """Weights for trial indices ``0..count-1``, reproducible from ``seed``."""
        blocks = [_weight_block(seed, block, draws) for block in range(-(-max(count, 0) // _BLOCK))]
        trials = np.concatenate(blocks, axis=1)[:, :count] if blocks else np.zeros((draws, 0))
        ends = np.random.default_rng([seed, 2**32 - 1, draws]).standard_gamma(1.0, size=(2, draws))
        return cls(trials=trials, low=ends[0], high=ends[1])

    @property
    def count(self) -> int:
        """Draws per side."""
        return int(self.low.size)

    def missing(self) -> np.ndarray:
        """Draws of a mean that could not be estimated: NaN, shaped like :meth:`mean_draws`."""
        return np.full((SIDES, self.count), math.nan)

    def mean_draws(self, trials: Indices, values: Values, low: float, high: float, pseudo: float = 1.0
                   ) -> np.ndarray:
        """Draws of the mean of ``values`` (observed at trial indices ``trials``) on ``[low, high]``, shape
        ``(SIDES, draws)``: row 0 with the pseudo-trial at ``low``, row 1 with it at ``high``. ``pseudo``
        scales the pseudo-trial's weight: a stratum of a stratified cell holds its share of the cell's one
        pseudo-trial (:mod:`resbench.engine.strata`)."""
        index = np.asarray(trials, dtype=np.int64)
        weights = self.trials[:, index]
        total = weights @ np.asarray(values, dtype=float)
        mass = weights.sum(axis=1)
        worst = (total + pseudo * self.low * low) / (mass + pseudo * self.low)
        best = (total + pseudo * self.high * high) / (mass + pseudo * self.high)
        return np.stack([worst, best])


def difference_draws(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Draws of ``first - second`` from two draw arrays (leading axis :data:`SIDES`): the lower row pairs
    the worst row of ``first`` with the best of ``second``, the upper row the other way round."""
    return np.stack([first[0] - second[1], first[1] - second[0]])


def quantile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval: the lower quantile of row 0 of ``draws``, the upper one of row 1."""
    tail = (1 - level) / 2
    return float(np.quantile(draws[0], tail)), float(np.quantile(draws[1], 1 - tail))


def bounded_mean_interval(
    values: Values, low: float = 0.0, high: float = 100.0, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """Sample mean and the bounded Bayesian-bootstrap interval (module docstring) of ``values`` in
    ``[low, high]``. With no value the interval is the whole range and the mean is NaN."""
    sample = np.asarray(values, dtype=float)
    if sample.size == 0:
        return math.nan, low, high
    weights = TrialWeights.draw(sample.size, seed)
    draws = weights.mean_draws(range(sample.size), sample, low, high)
    interval_low, interval_high = quantile_interval(draws, level)
    mean = float(sample.mean())
    return mean, min(interval_low, mean), max(interval_high, mean)


@dataclass(frozen=True)
class MeanSummary:
    """Mean with its interval, median, 5th percentile and share of catastrophic trials (%)."""

    count: int
    mean: float
    ci_low: float
    ci_high: float
    median: float
    p05: float
    catastrophic_pct: float

    @property
    def halfwidth(self) -> float:
        """Half the width of the confidence interval."""
        return (self.ci_high - self.ci_low) / 2


def weighted_quantile(values: Values, weights: Values, quantile: float) -> float:
    """The smallest value whose cumulative weight reaches ``quantile`` of the total (inverse CDF)."""
    sample = np.asarray(values, dtype=float)
    mass = np.asarray(weights, dtype=float)
    order = np.argsort(sample, kind="stable")
    cumulative = np.cumsum(mass[order]) / mass.sum()
    position = int(np.searchsorted(cumulative, quantile - 1e-12, side="left"))
    return float(sample[order][min(position, sample.size - 1)])


def summarize(
    values: Values, catastrophic_below: float = -math.inf, level: float = LEVEL
) -> MeanSummary:
    """Mean with the bounded bootstrap interval on [0, 100], median, 5th percentile, catastrophic share."""
    sample = np.asarray(values, dtype=float)
    mean, low, high = bounded_mean_interval(sample, 0.0, 100.0, level)
    return MeanSummary(
        count=int(sample.size),
        mean=mean,
        ci_low=low,
        ci_high=high,
        median=float(np.median(sample)),
        p05=float(np.percentile(sample, 5)),
        catastrophic_pct=100 * float(np.mean(sample < catastrophic_below)),
    )


def sign_flip_pvalue(differences: Values, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomization test (Fisher 1935, *The Design of Experiments*,
    sec. 21): under the null each paired difference is as likely negative as positive. Exact
    enumeration up to 16 pairs, else ``resamples`` random sign flips (with the observed one counted);
    where fewer than :data:`_MIN_EXCEEDANCES` of them reach the observed sum (p below about 0.005), the
    tail is estimated by importance sampling instead (:func:`_tilted_tail`), so small p-values are not
    floored at ``1 / (resamples + 1)`` and survive a multiple-comparison correction over large tables."""
    sample = np.asarray(differences, dtype=float)
    sample = sample[sample != 0]
    if sample.size == 0:
        return 1.0
    observed = abs(float(sample.sum()))
    reach = observed - 1e-9 * max(1.0, observed)
    if sample.size <= 16:
        patterns = ((np.arange(2**sample.size)[:, None] >> np.arange(sample.size)) & 1) * 2 - 1
        sums = np.abs(patterns @ sample)
        return float(np.mean(sums >= reach))
    generator = np.random.default_rng(seed)
    exceedances = sum(int(np.sum(np.abs(signs @ sample) >= reach))
                      for signs in _sign_blocks(np.full(sample.size, 0.5), resamples, generator))
    if exceedances >= _MIN_EXCEEDANCES:
        return float((1 + exceedances) / (resamples + 1))
    return min(1.0, 2 * _tilted_tail(np.abs(sample), reach, resamples, generator))


_MIN_EXCEEDANCES = 100
_SIGN_BLOCK = 2000


def _sign_blocks(positive: np.ndarray, resamples: int, generator: np.random.Generator) -> Iterator[np.ndarray]:
    """``resamples`` rows of signs (+1 with probability ``positive[i]`` in column ``i``), a block at a time."""
    for start in range(0, resamples, _SIGN_BLOCK):
        rows = min(_SIGN_BLOCK, resamples - start)
        yield np.where(generator.random((rows, positive.size)) < positive, 1.0, -1.0)


def _tilted_tail(magnitudes: np.ndarray, reach: float, resamples: int, generator: np.random.Generator) -> float:
    """``P(sum_i s_i m_i >= reach)`` for independent fair signs ``s_i``, by exponential tilting (Siegmund
    1976, *Ann. Statist.* 4(4)): signs are drawn with ``P(s_i = +1) = (1 + tanh(theta m_i)) / 2``, the tilt
    ``theta`` chosen so that the tilted mean of the sum is ``reach``, and each resample weighted by its
    likelihood ratio ``exp(sum_i log cosh(theta m_i) - theta sum_i s_i m_i)``: unbiased, with a relative
    error that stays small however far in the tail ``reach`` lies."""
    if reach >= magnitudes.sum():  # only the all-positive pattern (and ties within rounding) reaches it
        return float(0.5 ** np.sum(2 * magnitudes > magnitudes.sum() - reach))
    theta = _tilt(magnitudes, reach)
    log_cosh = float(np.sum(np.logaddexp(theta * magnitudes, -theta * magnitudes) - math.log(2.0)))
    total = 0.0
    for signs in _sign_blocks((1 + np.tanh(theta * magnitudes)) / 2, resamples, generator):
        sums = signs @ magnitudes
        total += float(np.sum(np.where(sums >= reach, np.exp(log_cosh - theta * sums), 0.0)))
    return total / resamples


def _tilt(magnitudes: np.ndarray, reach: float) -> float:
    """The ``theta > 0`` with ``sum_i m_i tanh(theta m_i) = reach`` (the mean grows with ``theta``)."""
    from scipy import optimize  # slow to import; only reports need it

    def excess(theta: float) -> float:
        return float(np.sum(magnitudes * np.tanh(theta * magnitudes))) - reach

    high = 1.0 / float(magnitudes.max())
    while excess(high) < 0:
        high *= 2
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-12 * high))


def holm_adjust(pvalues: Values) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, *Scand. J. Statist.* 6(2)): reject where
    ``adjusted < alpha`` and the family-wise error rate stays below alpha."""
    values = np.asarray(pvalues, dtype=float)
    order = np.argsort(values, kind="stable")
    adjusted = np.empty_like(values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (values.size - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def wilson_interval(successes: int, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Agresti & Coull 1998)."""
    from scipy import stats  # slow to import; every command but the reports can do without it

    if total <= 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf((1 + level) / 2))
    proportion = successes / total
    denominator = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / denominator
    spread = z * math.sqrt(proportion * (1 - proportion) / total + z * z / (4 * total * total)) / denominator
    # At 0 (or all) successes the bound is exactly 0 (or 1); rounding would leave about 1e-17.
    low = 0.0 if successes <= 0 else max(0.0, centre - spread)
    high = 1.0 if successes >= total else min(1.0, centre + spread)
    return low, high



def overhead_interval(timing_json: str, level: float = 0.95) -> tuple[float, float, float]:
    """Median overhead (%) of the paired ratios protected/baseline and its distribution-free interval.

    The interval is the pair of order statistics of the ratios that brackets the median with binomial
    probability at least ``level`` (Conover, *Practical Nonparametric Statistics*, 3rd ed., sec. 3.2);
    NaN where there are too few pairs for one.
    """
    from scipy import stats

    timing = json.loads(timing_json or "{}")
    baseline = np.asarray(timing.get("baseline", []), dtype=float)
    protected = np.asarray(timing.get("protected", []), dtype=float)
    if baseline.size == 0 or baseline.size != protected.size or np.any(baseline <= 0):
        return math.nan, math.nan, math.nan
    ratios = np.sort(100 * (protected / baseline - 1))
    median = float(np.median(ratios))
    count = ratios.size
    lower_rank = int(stats.binom.ppf((1 - level) / 2, count, 0.5))  # 0-based index of the lower bound
    if lower_rank < 1:
        return median, math.nan, math.nan
    return median, float(ratios[lower_rank - 1]), float(ratios[count - lower_rank])
