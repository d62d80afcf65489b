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
with ``S_h`` the standard deviation of accuracy within the stratum, estimated from the trials so far
(:class:`StratifiedDesign`).

Which bits are critical is declared by the number format (:meth:`NumberFormat.critical_bits`) and can be
overridden (a suite's ``trials: {critical_bits: {FORMAT: [bits]}}``).

A suite asks for the design with ``trials: {sampling: critical-bits}``; :class:`StratifiedDesign` is how a
cell's trials are spread over the strata and how they become its estimate. Trials are allocated
sequentially from the cell's own results: a pilot of :data:`PILOT_TRIALS` trials in each stratum of
positive weight, round robin, then each trial goes to the stratum where it shrinks ``sum_h W_h^2 V_h(n_h)``
the most, with

    V_h(n) = S_h^2 / n + (d_h / (n + 1))^2,

``S_h`` the stratum's sample standard deviation and ``d_h`` the distance from its mean to the far end of
[0, 100]. The first term alone is the stratified mean's variance, whose sequential minimisation is
Neyman's allocation (Cochran 1977, sec. 5.5 and 5.9); the second, the shift one unseen trial at the far
end would cause, keeps a stratum whose few trials all agreed from being starved (it may still hold a
catastrophe). The allocation is a deterministic function of the trial accuracies in trial order, so the
strata of stored trials replay from the accuracies alone (:meth:`StratifiedDesign.strata_of`) and a
resumed cell continues exactly.

The interval is the bounded Bayesian bootstrap of :mod:`resbench.statistics` stratum by stratum
(independent weights, combined with the exact ``W_h``), with the cell's one pseudo-trial per side shared
by the strata in proportion to their trials: a cell of one stratum gets exactly the conditional design's
interval. ``benchmarks/estimator_coverage.py`` measures the design: coverage against a brute-force
Bernoulli campaign, interval width and trials needed against the conditional design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from resbench.engine.faults import FaultModel, FaultSites
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.statistics import TrialWeights, quantile_interval

__all__ = ["PILOT_TRIALS", "STRATA", "CriticalBitStrata", "StratifiedDesign", "stratum_spread"]

#: The strata: no flip at all (exactly clean, never sampled), flips in other bits only, exactly one
#: critical flip, two or more critical flips.
STRATA = ("no flip", "other flips only", "one critical flip", "two or more critical flips")
#: Trials of the pilot in each sampled stratum of positive weight, before the allocation follows the spread.
PILOT_TRIALS = 1


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


@dataclass(frozen=True)
class StratifiedDesign:
    """How a stratified cell's trials are spread over its strata, and how they become its estimate.

    ``weights`` are the exact probabilities of the strata, index 0 the fault-free one (accuracy ``clean``,
    never sampled); trials are drawn in the strata ``1..`` of positive weight (module docstring).
    """

    weights: tuple[float, ...]
    clean: float
    pilot: int = PILOT_TRIALS

    @property
    def sampled(self) -> list[int]:
        """The strata trials are drawn in: those past the fault-free one with positive weight."""
        return [stratum for stratum in range(1, len(self.weights)) if self.weights[stratum] > 0]

    def next_stratum(self, samples: Sequence[Sequence[float]]) -> int:
        """The stratum of the next trial, given the accuracies so far per stratum (``samples[h]``,
        index 0 unused): round robin until each sampled stratum has its pilot, then the largest drop in
        the interval's spread (module docstring; the lowest stratum on a tie)."""
        return self._next([_Moments.of(sample) for sample in samples])

    def _next(self, moments: Sequence[_Moments]) -> int:
        sampled = self.sampled
        counts = [moments[stratum].count for stratum in sampled]
        if min(counts) < self.pilot:
            return sampled[counts.index(min(counts))]
        gains = [self.weights[stratum] ** 2 * (moments[stratum].spread(count) - moments[stratum].spread(count + 1))
                 for stratum, count in zip(sampled, counts, strict=True)]
        return sampled[gains.index(max(gains))]

    def _replay(self, accuracies: Sequence[float]) -> tuple[list[int], list[list[float]], list[_Moments]]:
        """The stratum of each trial (in trial order), the accuracies per stratum and their running moments:
        one pass, constant work per trial."""
        moments = [_Moments() for _ in self.weights]
        samples: list[list[float]] = [[] for _ in self.weights]
        strata = []
        for accuracy in accuracies:
            stratum = self._next(moments)
            moments[stratum].add(float(accuracy))
            samples[stratum].append(float(accuracy))
            strata.append(stratum)
        return strata, samples, moments

    def strata_of(self, accuracies: Sequence[float]) -> list[int]:
        """The stratum of each trial of a cell, replayed from its accuracies in trial order."""
        return self._replay(accuracies)[0]

    def next_trial(self, accuracies: Sequence[float]) -> tuple[int, int]:
        """After a cell's trials (accuracies in trial order): the stratum of its next trial, and how many
        trials that stratum holds already (the next one's rank in it)."""
        _, _, moments = self._replay(accuracies)
        stratum = self._next(moments)
        return stratum, moments[stratum].count

    def estimate(self, accuracies: Sequence[float]) -> tuple[float, float, float]:
        """Stratified mean ``W_0 clean + sum_h W_h mean_h`` of a cell's trials (in trial order) and its 95%
        interval: each stratum's bounded bootstrap, independent across strata, combined with the exact
        weights; the cell's one pseudo-trial per side (:mod:`resbench.statistics`) is shared by the strata in
        proportion to their trials. NaN and the whole range while a sampled stratum has no trial."""
        _, samples, _ = self._replay(accuracies)
        mean, draws = self.weights[0] * self.clean, np.full(1, self.weights[0] * self.clean)
        for stratum in self.sampled:
            sample = np.asarray(samples[stratum], dtype=float)
            if sample.size == 0:
                return math.nan, *self.bounds
            stratum_weights = TrialWeights.draw(sample.size, seed=stratum)
            share = sample.size / len(accuracies)  # of the cell's one pseudo-trial
            draws = draws + self.weights[stratum] * stratum_weights.mean_draws(range(sample.size), sample, 0.0, 100.0,
                                                                               pseudo=share)
            mean += self.weights[stratum] * float(sample.mean())
        low, high = quantile_interval(np.broadcast_to(draws, (2, max(draws.shape[-1], 1))))
        return mean, min(low, mean), max(high, mean)

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of the estimate: every sampled trial at 0, or every one at 100."""
        fault_free = self.weights[0] * self.clean
        return fault_free, fault_free + 100.0 * (1 - self.weights[0])


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations of a stratum's accuracies, updated one trial at a time
    (Welford 1962, *Technometrics* 4(3)), so replaying a cell's allocation costs constant work per trial."""

    count: int = 0
    mean: float = 0.0
    squares: float = 0.0

    @classmethod
    def of(cls, sample: Sequence[float]) -> _Moments:
        moments = cls()
        for value in sample:
            moments.add(float(value))
        return moments

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)

    def spread(self, trials: int) -> float:
        """``V_h(n)`` of the module docstring for ``trials`` trials like these."""
        variance = self.squares / (self.count - 1) if self.count > 1 else 0.0
        return variance / trials + (max(self.mean, 100.0 - self.mean) / (trials + 1)) ** 2


def stratum_spread(sample: Sequence[float], trials: int) -> float:
    """``V_h(n)`` of the module docstring for ``trials`` trials like ``sample``: the sampling variance of the
    stratum's mean plus the squared shift one unseen trial at the far end of [0, 100] would cause."""
    return _Moments.of(sample).spread(trials)
