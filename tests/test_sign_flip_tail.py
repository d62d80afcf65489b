"""The paired randomization test gives small p-values to strong effects, beyond any Monte Carlo floor."""

from __future__ import annotations

import numpy as np
import pytest

from resbench.statistics import holm_adjust, sign_flip_pvalue


def _exact_pvalue(differences: np.ndarray) -> float:
    """``P(|sum_i s_i d_i| >= |sum_i d_i|)`` over fair signs, for integer ``d_i``, by convolution."""
    magnitudes = np.abs(differences).astype(int)
    total = int(magnitudes.sum())
    distribution = np.zeros(2 * total + 1)
    distribution[total] = 1.0
    for magnitude in magnitudes:
        distribution = 0.5 * np.roll(distribution, magnitude) + 0.5 * np.roll(distribution, -magnitude)
    sums = np.arange(-total, total + 1)
    return float(distribution[np.abs(sums) >= abs(int(differences.sum()))].sum())


@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_small_pvalues_match_the_exact_distribution(seed: int) -> None:
    """40 integer differences, mostly positive: p from 4e-9 to 2e-4, against exact enumeration."""
    rng = np.random.default_rng(seed)
    differences = rng.integers(1, 6, 40) * np.where(rng.random(40) < 0.88, 1, -1)
    exact = _exact_pvalue(differences)
    assert sign_flip_pvalue(differences.astype(float)) == pytest.approx(exact, rel=0.1)


def test_all_differences_of_one_sign_give_the_exact_pvalue() -> None:
    assert sign_flip_pvalue([1.0] * 20) == pytest.approx(2.0**-19, rel=1e-6)


def test_a_strong_effect_stays_significant_among_1200_comparisons() -> None:
    """With p floored at 1 / 20001, Holm's correction over 1,200 comparisons left nothing significant."""
    strong = sign_flip_pvalue(np.random.default_rng(3).normal(2.0, 1.0, size=60))
    nulls = [sign_flip_pvalue(np.random.default_rng(seed).normal(0.0, 1.0, size=30)) for seed in range(10)]
    adjusted = holm_adjust([strong, *(nulls * 120)][:1200])
    assert adjusted[0] < 0.05
