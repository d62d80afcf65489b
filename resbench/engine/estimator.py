"""Campaign designs for per-bit Bernoulli faults, and the exact estimator of the conditional one.

Under per-bit Bernoulli faults at BER ``b`` over ``N`` bits, the number of sites ``K`` is Binomial(N, b)
and, given ``K``, the sites are a uniform K-subset. Hence, exactly,

    E[acc | b] = P(K = 0) * clean + P(K >= 1) * E[acc | b, K >= 1],   P(K = 0) = (1 - b)^N,

where ``clean`` is the fault-free accuracy (known without sampling). Two designs:

* ``conditional`` (the default): every trial samples the fault sites conditional on ``K >= 1``, by
  rejection: fresh Bernoulli draws (sub-seeds 0, 1, ... of the trial) until one has a site. No trial is
  spent on zero flips, and the trial values ``P(K=0) * clean + P(K>=1) * acc`` average to an exactly
  unbiased estimate whose interval is ``P(K>=1)`` times as wide as that of the conditional mean, never
  of zero width. Methods share the rejection sequence, so where their fault spaces agree they see the
  same sites; a method that adds stored tensors shares the sites of every trial whose accepted draw hit
  the model's own tensors. Each BER is sampled on its own (no nesting across the sweep). Rejection costs
  ``1 / P(K >= 1)`` draws of O(flips) each, no evaluation; below :data:`MIN_HIT_PROBABILITY` the sites
  come instead from ``K`` drawn from the binomial truncated to ``K >= 1`` and ``K`` distinct uniform
  bits: just as exact, but not shared with a method whose fault space is larger (whose effect on any
  estimate there is below ``100 * MIN_HIT_PROBABILITY`` points).
* ``critical-bits``: the conditional design one level finer, stratified by flips in the format's critical
  bits (:mod:`resbench.engine.strata`).
* ``bernoulli``: the plain campaign, nested across the sweep, every trial a direct Bernoulli draw: the
  reference the conditional design is checked against.

Fault models that fix the number of sites (``bitflip-count``, ``rrelu-legacy``) are sampled directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from resbench.engine.faults import BernoulliFaults, FaultModel, FaultSites
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.seeds import derive_seed
from resbench.statistics import TrialWeights, quantile_interval

__all__ = [
    "MIN_HIT_PROBABILITY",
    "CellDesign",
    "Sampling",
    "effective_sampling",
    "sample_given_flips",
    "zero_flip_probability",
]

Sampling = Literal["conditional", "critical-bits", "bernoulli"]
MIN_HIT_PROBABILITY = 1e-4


def effective_sampling(requested: Sampling, fault_model: FaultModel) -> str:
    """The design a cell really uses: ``conditional`` and ``critical-bits`` (:mod:`resbench.engine.strata`)
    only for per-bit Bernoulli fault models, whose sites they sample by flip count; others draw directly."""
    if not isinstance(fault_model, BernoulliFaults):
        return "direct"
    return requested


def zero_flip_probability(bits: int, ber: float) -> float:
    """``P(K = 0) = (1 - ber)^bits``, computed without cancellation at tiny BERs."""
    return math.exp(bits * math.log1p(-ber)) if ber < 1 else 0.0


def sample_given_flips(fault_model: FaultModel, layout: FaultSpaceLayout, ber: float, seed: int) -> FaultSites:
    """Fault sites at ``ber`` conditional on at least one site (rejection over sub-seeds of ``seed``)."""
    allowed = fault_model.allowed_bits(layout)
    bits = layout.total_elements * allowed.size
    hit = 1 - zero_flip_probability(bits, ber)
    if hit < MIN_HIT_PROBABILITY:
        return _truncated_binomial_sites(fault_model, layout, allowed, ber, hit, seed)
    attempt = 0
    while True:
        sites = fault_model.sample(layout, [ber], derive_seed(seed, "given-flips", attempt))[0]
        if sites.num_flips:
            return sites
        attempt += 1


def _truncated_binomial_sites(
    fault_model: FaultModel, layout: FaultSpaceLayout, allowed: np.ndarray, ber: float, hit: float, seed: int
) -> FaultSites:
    """``K ~ Binomial(bits, ber) | K >= 1`` by inverse CDF, then ``K`` distinct uniform bits."""
    bits = layout.total_elements * allowed.size
    generator = np.random.default_rng([seed, 1])
    target = generator.random() * hit
    count, pmf = 1, math.exp(math.log(bits) + math.log(ber) + (bits - 1) * math.log1p(-ber))
    cumulative = pmf
    while cumulative < target and count < bits:
        pmf *= (bits - count) / (count + 1) * ber / (1 - ber)
        count += 1
        cumulative += pmf
    line = np.sort(generator.choice(bits, size=count, replace=False))
    return FaultSites(layout, line // allowed.size, allowed[line % allowed.size], fault_model.kind, ber)


@dataclass(frozen=True)
class CellDesign:
    """How a cell's stored trial accuracies turn into an estimate of its mean accuracy.

    ``zero_flip`` is ``P(K = 0)`` for the conditional design and 0 otherwise (trials are then direct
    draws); ``clean`` the fault-free accuracy the zero-flip share contributes.
    """

    zero_flip: float = 0.0
    clean: float = 0.0

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of a trial value (see :meth:`values`)."""
        return self.values_of(0.0), self.values_of(100.0)

    def values_of(self, accuracy: float) -> float:
        """A trial's contribution: ``P(K=0) * clean + P(K>=1) * accuracy``."""
        return self.zero_flip * self.clean + (1 - self.zero_flip) * accuracy

    def values(self, accuracies: np.ndarray) -> np.ndarray:
        """Trial values whose plain mean is the unbiased estimate of the cell's mean accuracy."""
        return self.zero_flip * self.clean + (1 - self.zero_flip) * np.asarray(accuracies, dtype=float)

    def estimate(self, accuracies: list[float], weights: TrialWeights | None = None) -> tuple[float, float, float]:
        """Estimate of mean accuracy and its 95% bounded-bootstrap interval from trials ``0..n-1``."""
        values = self.values(np.asarray(accuracies, dtype=float))
        low, high = self.bounds
        if values.size == 0:
            return math.nan, low, high
        weights = weights if weights is not None else TrialWeights.draw(values.size)
        draws = weights.mean_draws(range(values.size), values, low, high)
        interval_low, interval_high = quantile_interval(draws)
        mean = float(values.mean())
        return mean, min(interval_low, mean), max(interval_high, mean)
