"""Critical-bit strata: a campaign design for per-bit Bernoulli faults that samples by what matters.

Under per-bit faults at BER ``b`` the trials of a cell differ mainly in whether a *critical* bit flipped:
in fp32 one flip of the top exponent bit (bit 30) turns a weight below 1 into about 1e38, while flips
of the other 31 bits rarely move accuracy. With ``N_c`` critical and ``N_o`` other stored bits, the
numbers of critical and other flips, ``K_c`` and ``K_o``, are independent Binomial(``N_c``, b) and
Binomial(``N_o``, b), so exactly

    E[acc] = sum_h W_h E[acc | h],   strata h (:data:`STRATA`): no flip at all (accuracy = clean),
             K_c = 0 and K_o >= 1, K_c = 1, K_c >= 2,

with the stratum weights ``W_h`` known from the two binomials: the conditional design of
:mod:`resbench.engine.estimator` (which splits only ``K = 0`` off) one level finer. A trial of a stratum draws
``K_c`` and ``K_o`` from their binomials restricted to the stratum, and that many distinct uniform
critical and other sites. The stratified mean is unbiased whatever the allocation of trials across
strata (Cochran 1977, *Sampling Techniques*, 3rd ed., eq. 5.1); its variance is smallest when stratum h
gets trials in proportion to ``W_h S_h`` (Neyman 1934, *J. R. Statist. Soc.* 97(4); Cochran eq. 5.26),
with ``S_h`` the standard deviation of accuracy within the stratum, estimated from pilot trials
(:func:`neyman_allocation`).

Which bits are critical is declared by the number format (:meth:`NumberFormat.critical_bits`) and can be
overridden. The design is measured by ``benchmarks/estimator_coverage.py``; suites sample with the
conditional design until this one has shown its coverage there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from resbench.engine.faults import FaultModel, FaultSites
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.statistics import TrialWeights, quantile_interval

__all__ = ["STRATA", "CriticalBitStrata", "neyman_allocation"]

#: The strata: no flip at all (exactly clean, never sampled), flips in other bits only, exactly one
#: critical flip, two or more critical flips.
STRATA = ("no flip", "other flips only", "one critical flip", "two or more critical flips")


@dataclass(frozen=True)
class CriticalBitStrata:
    """The critical-bit strata of one cell: which allowed bits are critical, and the BER."""

    layout: FaultSpaceLayout
    critical: np.ndarray  # critical bit positions (ascending), a subset of the fault model's allowed bits
    other: np.ndarray  # the other allowed bit positions
    ber: float
    kind: str = "flip"

    @classmethod
    def of(cls, fault_model: FaultModel, layout: FaultSpaceLayout, ber: float, critical_bits: Sequence[int]
           ) -> CriticalBitStrata:
        """Strata of ``fault_model``'s allowed bits, split by ``critical_bits`` (a format's
        :meth:`~resbench.engine.formats.NumberFormat.critical_bits`, or an override)."""
        allowed = fault_model.allowed_bits(layout)
        critical = np.isin(allowed, np.asarray(list(critical_bits), dtype=np.int64))
        return cls(layout, allowed[critical], allowed[~critical], ber, fault_model.kind)

    @property
    def critical_count(self) -> int:
        """``N_c``: stored critical bits."""
        return self.layout.total_elements * self.critical.size

    @property
    def other_count(self) -> int:
        """``N_o``: the other stored bits faults may hit."""
        return self.layout.total_elements * self.other.size

    def weights(self) -> np.ndarray:
        """Exact probabilities of the :data:`STRATA`: ``P(K = 0)``, ``P(K_c = 0, K_o >= 1)``,
        ``P(K_c = 1)``, ``P(K_c >= 2)``."""
        critical_none, critical_one, critical_more = _binomial_head(self.critical_count, self.ber)
        other_none = _binomial_head(self.other_count, self.ber)[0]
        return np.array([critical_none * other_none, critical_none * (1 - other_none), critical_one,
                         critical_more])

    def sample(self, stratum: int, seed: int) -> FaultSites:
        """Fault sites of one trial in ``stratum`` (1, 2 or 3: see :data:`STRATA`), from ``seed``."""
        if stratum not in (1, 2, 3):
            raise ValueError(f"stratum {stratum}: trials are drawn in strata 1, 2 and 3 (0 is fault-free)")
        generator = np.random.default_rng([seed, 7, stratum])
        if stratum == 1:
            critical_flips, other_flips = 0, _truncated_binomial(self.other_count, self.ber, 1, generator)
        else:
            critical_flips = 1 if stratum == 2 else _truncated_binomial(self.critical_count, self.ber, 2, generator)
            other_flips = int(generator.binomial(self.other_count, self.ber))
        critical = _distinct_lines(self.critical_count, critical_flips, generator)
        other = _distinct_lines(self.other_count, other_flips, generator)
        elements = np.concatenate([critical // max(self.critical.size, 1), other // max(self.other.size, 1)])
        bits = np.concatenate([self.critical[critical % max(self.critical.size, 1)],
                               self.other[other % max(self.other.size, 1)]]).astype(np.int64)
        return FaultSites(self.layout, elements, bits, self.kind, self.ber)  # type: ignore[arg-type]

    def estimate(self, accuracies: Sequence[Sequence[float]], clean: float, seed: int = 0
                 ) -> tuple[float, float, float]:
        """Stratified mean ``W_0 clean + sum_h W_h mean_h`` from the trial accuracies of strata 1..3
        (``accuracies[h - 1]``) and the fault-free accuracy, and its 95% interval: each stratum's
        bounded-bootstrap draws (:mod:`resbench.statistics`, independent weights per stratum) combined
        with the exact weights ``W_h``. NaN and [0, 100] while a stratum of positive weight has no trial."""
        weights = self.weights()
        mean, draws = weights[0] * clean, np.full(1, weights[0] * clean)
        for stratum, values in enumerate(accuracies, start=1):
            sample = np.asarray(values, dtype=float)
            if weights[stratum] == 0:
                continue
            if sample.size == 0:
                return math.nan, 0.0, 100.0
            stratum_weights = TrialWeights.draw(sample.size, seed=seed * len(STRATA) + stratum)
            draws = draws + weights[stratum] * stratum_weights.mean_draws(range(sample.size), sample, 0.0, 100.0)
            mean += weights[stratum] * float(sample.mean())
        low, high = quantile_interval(np.broadcast_to(draws, (2, max(draws.shape[-1], 1))))
        return mean, min(low, mean), max(high, mean)


def _binomial_head(count: int, ber: float) -> tuple[float, float, float]:
    """``P(K = 0)``, ``P(K = 1)``, ``P(K >= 2)`` for ``K ~ Binomial(count, ber)``, without cancellation."""
    if count == 0:
        return 1.0, 0.0, 0.0
    log_none = count * math.log1p(-ber)
    none, some = math.exp(log_none), -math.expm1(log_none)
    one = math.exp(math.log(count) + math.log(ber) + (count - 1) * math.log1p(-ber))
    return none, one, max(0.0, some - one)


def _truncated_binomial(count: int, ber: float, minimum: int, generator: np.random.Generator) -> int:
    """``K ~ Binomial(count, ber)`` given ``K >= minimum`` (1 or 2), by inverse CDF from ``minimum`` up."""
    _, one, more = _binomial_head(count, ber)
    tail = more + (one if minimum == 1 else 0.0)
    pmf = one if minimum == 1 else one * (count - 1) / 2 * ber / (1 - ber)
    target, flips, cumulative = generator.random() * tail, minimum, pmf
    while cumulative < target and flips < count:
        pmf *= (count - flips) / (flips + 1) * ber / (1 - ber)
        flips += 1
        cumulative += pmf
    return flips


def _distinct_lines(total: int, count: int, generator: np.random.Generator) -> np.ndarray:
    """``count`` distinct uniform positions out of ``total``, ascending."""
    if count <= 0 or total <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(generator.choice(total, size=min(count, total), replace=False)).astype(np.int64)


def neyman_allocation(weights: Sequence[float], deviations: Sequence[float], trials: int,
                      minimum: int = 2) -> list[int]:
    """Trials per stratum in proportion to ``W_h S_h`` (Neyman 1934), at least ``minimum`` in every
    stratum of positive weight (a stratum whose pilot showed no spread may still hold a catastrophe),
    summing to ``trials`` where the minimums allow."""
    mass = np.asarray(weights, dtype=float) * np.asarray(deviations, dtype=float)
    floors = np.where(np.asarray(weights) > 0, minimum, 0)
    spare = max(trials - int(floors.sum()), 0)
    if mass.sum() <= 0:
        share = np.where(floors > 0, 1.0, 0.0)
        mass = share / max(share.sum(), 1.0)
    ideal = spare * mass / mass.sum()
    allocation = floors + np.floor(ideal).astype(int)
    remainder = spare - int(np.floor(ideal).sum())
    for index in np.argsort(-(ideal - np.floor(ideal)))[:remainder]:
        allocation[index] += 1
    return [int(value) for value in allocation]
