"""Critical-bit strata: exact stratum weights, sampling given the stratum, an unbiased stratified mean."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from resbench.engine.faults import resolve_fault_model
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import resolve_format
from resbench.engine.strata import CriticalBitStrata, StratifiedDesign, stratum_spread
from resbench.seeds import derive_seed

LAYOUT = FaultSpaceLayout(("w", "b"), (3000, 40), 32)


def test_formats_declare_their_critical_bits() -> None:
    assert resolve_format("fp32").critical_bits() == (30,)
    assert resolve_format("fp16").critical_bits() == (14,)
    assert resolve_format("bf16").critical_bits() == (14,)
    assert resolve_format("q15.16").critical_bits() == tuple(range(16, 32))
    assert resolve_format("int8").critical_bits() == (6, 7)


@pytest.mark.parametrize("ber", [1e-7, 1e-5, 1e-3])
def test_stratum_weights_are_the_binomial_probabilities(ber: float) -> None:
    strata = CriticalBitStrata.of(resolve_fault_model("bitflip"), LAYOUT, ber, (30,))
    weights = strata.weights()
    critical, other = stats.binom(strata.critical_count, ber), stats.binom(strata.other_count, ber)
    assert (strata.critical_count, strata.other_count) == (3040, 3040 * 31)
    expected = [critical.pmf(0) * other.pmf(0), critical.pmf(0) * other.sf(0), critical.pmf(1), critical.sf(1)]
    assert weights == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert weights.sum() == pytest.approx(1.0)


def test_trials_of_a_stratum_hold_its_critical_flips_and_bernoulli_others() -> None:
    ber = 2e-4
    strata = CriticalBitStrata.of(resolve_fault_model("bitflip"), LAYOUT, ber, (30,))
    for stratum, check in ((1, lambda k: k == 0), (2, lambda k: k == 1), (3, lambda k: k >= 2)):
        others = []
        for trial in range(200):
            sites = strata.sample(stratum, derive_seed("strata", trial))
            critical = int(np.sum(sites.bits == 30))
            assert check(critical)
            others.append(sites.num_flips - critical)
        # Other flips: Binomial(3040 * 31, ber), mean 18.8 (given at least one in stratum 1: the same here).
        assert abs(np.mean(others) - 3040 * 31 * ber) < 4 * math.sqrt(3040 * 31 * ber / 200)
    with pytest.raises(ValueError, match="fault-free"):
        strata.sample(0, 1)


def test_stratified_mean_equals_the_plain_mean_of_a_bernoulli_population() -> None:
    """A synthetic response: accuracy 97 without a critical flip, 10 with. The stratified mean of a few
    trials is exact where strata are pure, and its interval covers."""
    ber = 1e-5
    strata = CriticalBitStrata.of(resolve_fault_model("bitflip"), LAYOUT, ber, (30,))
    weights = strata.weights()
    truth = 97.0 * (weights[0] + weights[1]) + 10.0 * (weights[2] + weights[3])
    design = StratifiedDesign(tuple(weights), clean=97.0)
    accuracies = [97.0 if stratum == 1 else 10.0 for stratum in _strata_for(design, 15, {1: 97.0})]
    mean, low, high = design.estimate(accuracies)
    assert mean == pytest.approx(truth)
    assert low < truth < high and high - low > 0


def _strata_for(design: StratifiedDesign, trials: int, accuracy_of: dict[int, float]) -> list[int]:
    """The strata the design picks for ``trials`` trials whose accuracy is ``accuracy_of[stratum]`` (10 where
    not given)."""
    samples: list[list[float]] = [[] for _ in design.weights]
    picked = []
    for _ in range(trials):
        stratum = design.next_stratum(samples)
        samples[stratum].append(accuracy_of.get(stratum, 10.0))
        picked.append(stratum)
    return picked


def test_allocation_starts_with_a_pilot_then_minimises_the_intervals_spread() -> None:
    """Round robin until every stratum has its pilot; then each trial goes where it shrinks
    sum_h W_h^2 V_h(n_h) most. That objective is separable and convex in each n_h, so the sequential choice
    ends at the best allocation of the same total: checked against every allocation."""
    design = StratifiedDesign((0.5, 0.3, 0.15, 0.05), clean=90.0, pilot=3)
    samples: list[list[float]] = [[], [], [], []]
    picked = []
    response = {1: lambda n: 90.0, 2: lambda n: 90.0 * (n % 2), 3: lambda n: 5.0}  # stratum 2 varies widely
    for _ in range(60):
        stratum = design.next_stratum(samples)
        picked.append(stratum)
        samples[stratum].append(response[stratum](len(samples[stratum])))
    assert picked[:9] == [1, 2, 3] * 3
    counts = [picked.count(stratum) for stratum in (1, 2, 3)]
    assert counts[1] == max(counts)

    def objective(allocation: tuple[int, ...]) -> float:
        return sum(design.weights[h] ** 2 * stratum_spread([response[h](k) for k in range(max(n, 2))], n)
                   for h, n in zip((1, 2, 3), allocation, strict=True))

    best = min(objective((n1, n2, 60 - n1 - n2)) for n1 in range(3, 55) for n2 in range(3, 58 - n1))
    assert objective(tuple(counts)) <= best * 1.02


def test_strata_replay_from_the_accuracies_alone() -> None:
    """The strata of stored trials follow from their accuracies in trial order: a resumed cell continues
    exactly where it stopped."""
    design = StratifiedDesign((0.2, 0.6, 0.15, 0.05), clean=95.0)
    generator = np.random.default_rng(3)
    samples: list[list[float]] = [[], [], [], []]
    picked, accuracies = [], []
    for _ in range(40):
        stratum = design.next_stratum(samples)
        accuracy = float(generator.uniform(0, 100)) if stratum > 1 else 95.0
        samples[stratum].append(accuracy)
        picked.append(stratum)
        accuracies.append(accuracy)
    assert design.strata_of(accuracies) == picked
    with pytest.raises(ValueError):
        CriticalBitStrata.of(resolve_fault_model("bitflip"), LAYOUT, 1e-5, (30,)).sample(0, 1)


def test_stratified_estimate_is_unbiased_against_brute_force_bernoulli(tmp_path: Path) -> None:
    """A trained tiny model in fp32 at BER 3e-5: the stratified estimate of 45 trials allocated by the
    design agrees with 1,500 plain Bernoulli trials within their intervals."""
    from tests.helpers import accuracy_under_faults, tiny_deployment

    model, injector, data, predictions, clean = tiny_deployment(tmp_path)
    faults = resolve_fault_model("bitflip")
    ber = 3e-5
    layout = injector.layout

    accuracy = accuracy_under_faults(model, injector, data, predictions, clean)

    brute = np.array([accuracy(faults.sample(layout, [ber], derive_seed("brute", t))[0]) for t in range(1500)])
    strata = CriticalBitStrata.of(faults, layout, ber, resolve_format("fp32").critical_bits())
    design = StratifiedDesign(tuple(strata.weights()), clean)
    samples: list[list[float]] = [[] for _ in design.weights]
    accuracies = []
    for _ in range(45):
        stratum = design.next_stratum(samples)
        samples[stratum].append(accuracy(strata.sample(stratum, derive_seed("strata", stratum, len(samples[stratum])))))
        accuracies.append(samples[stratum][-1])
    mean, low, high = design.estimate(accuracies)
    assert low <= float(brute.mean()) <= high
    # The two estimates agree within three standard errors of their difference.
    stratified_variance = sum(design.weights[h] ** 2 * np.var(samples[h], ddof=1) / len(samples[h])
                              for h in design.sampled)
    assert abs(mean - brute.mean()) <= 3 * math.sqrt(stratified_variance + brute.var(ddof=1) / brute.size)
