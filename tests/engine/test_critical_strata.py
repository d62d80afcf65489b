"""Critical-bit strata: exact stratum weights, sampling given the stratum, an unbiased stratified mean."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from resbench.engine.estimator import CellDesign
from resbench.engine.faults import resolve_fault_model
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import resolve_format
from resbench.engine.strata import CriticalBitStrata, neyman_allocation
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
    mean, low, high = strata.estimate([[97.0] * 5, [10.0] * 5, [10.0] * 5], clean=97.0)
    assert mean == pytest.approx(truth)
    assert low < truth < high and high - low > 0


def test_neyman_allocation_follows_weight_times_spread() -> None:
    # W_h S_h = 0.9, 2.7, 0.3: two trials each, the other 94 as 21.7, 65.1, 7.2, rounded to sum 94.
    assert neyman_allocation([0.9, 0.09, 0.01], [1.0, 30.0, 30.0], 100) == [24, 67, 9]
    assert sum(neyman_allocation([0.97, 0.03, 0.0], [0.0, 0.0, 0.0], 10)) == 10
    assert neyman_allocation([0.97, 0.03, 0.0], [0.0, 0.0, 0.0], 10)[2] == 0


def test_stratified_estimate_is_unbiased_against_brute_force_bernoulli(tmp_path: Path) -> None:
    """A trained tiny model in fp32 at BER 3e-5: the stratified estimate from 20 trials per stratum agrees
    with 1,500 plain Bernoulli trials within their intervals."""
    from tests.helpers import accuracy_under_faults, tiny_deployment

    model, injector, data, predictions, clean = tiny_deployment(tmp_path)
    faults = resolve_fault_model("bitflip")
    ber = 3e-5
    layout = injector.layout

    accuracy = accuracy_under_faults(model, injector, data, predictions, clean)

    brute = np.array([accuracy(faults.sample(layout, [ber], derive_seed("brute", t))[0]) for t in range(1500)])
    strata = CriticalBitStrata.of(faults, layout, ber, resolve_format("fp32").critical_bits())
    samples = [[accuracy(strata.sample(stratum, derive_seed("strata", stratum, t))) for t in range(20)]
               for stratum in (1, 2, 3)]
    mean, low, high = strata.estimate(samples, clean)
    _, brute_low, brute_high = CellDesign().estimate(brute.tolist())
    assert low <= float(brute.mean()) <= high
    assert brute_low <= mean <= brute_high
