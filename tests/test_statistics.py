"""The bounded Bayesian-bootstrap interval, the paired test, Holm's adjustment and quantiles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from resbench.statistics import (
    TrialWeights,
    bounded_mean_interval,
    holm_adjust,
    overhead_interval,
    sign_flip_pvalue,
    summarize,
    weighted_quantile,
    wilson_interval,
)


def test_interval_stays_in_range_holds_the_mean_and_shrinks_with_more_trials() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for count in (10, 40, 160):
        sample = np.where(rng.random(count) < 0.1, 10.0, 97.0)
        mean, low, high = bounded_mean_interval(sample)
        assert 0.0 <= low <= mean <= high <= 100.0
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_a_sample_without_variation_never_gets_a_zero_width_interval() -> None:
    mean, low, high = bounded_mean_interval([97.7] * 30)
    assert mean == pytest.approx(97.7)
    assert low < 97.7 - 1.0 and 97.7 < high <= 100.0  # a catastrophe not yet seen is not ruled out
    # ... and more agreeing trials narrow it.
    assert bounded_mean_interval([97.7] * 300)[1] > low


def test_interval_covers_spike_plus_catastrophe_means() -> None:
    """Coverage simulation: where the t interval covers far less than 95%, this one holds >= 93%."""
    rng = np.random.default_rng(1)
    for rate in (0.01, 0.05, 0.3):
        truth = 97.7 * (1 - rate) + 22.5 * rate
        covered = 0
        for repetition in range(300):
            sample = np.where(rng.random(30) < rate, rng.uniform(5, 40, 30), 97.7)
            _, low, high = bounded_mean_interval(sample, seed=repetition)
            covered += low <= truth <= high
        assert covered / 300 >= 0.93, (rate, covered)


def test_weights_of_a_trial_do_not_depend_on_how_many_trials_there_are() -> None:
    few, many = TrialWeights.draw(10), TrialWeights.draw(130)
    assert np.array_equal(few.trials, many.trials[:, :10])
    assert np.array_equal(few.low, many.low)


def test_summary_reports_median_fifth_percentile_and_catastrophic_share() -> None:
    values = [98.0] * 19 + [10.0]
    summary = summarize(values, catastrophic_below=50.0)
    assert summary.median == 98.0
    assert summary.p05 == pytest.approx(np.percentile(values, 5))
    assert summary.mean == pytest.approx(93.6)
    assert summary.catastrophic_pct == pytest.approx(5.0)
    assert summary.count == 20 and summary.halfwidth > 0


def test_weighted_quantile_is_the_inverse_cdf() -> None:
    assert weighted_quantile([1.0, 2.0, 3.0], [0.1, 0.1, 0.8], 0.5) == 3.0
    assert weighted_quantile([1.0, 2.0, 3.0], [0.5, 0.25, 0.25], 0.5) == 1.0
    assert weighted_quantile([3.0, 1.0], [1.0, 1.0], 0.05) == 1.0


def test_sign_flip_test_exact_values() -> None:
    # 2**3 sign patterns of (1, 2, 3): |sum| >= 6 only for all + and all -: p = 2/8.
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert sign_flip_pvalue([0.0, 0.0]) == 1.0
    assert sign_flip_pvalue([1.0] * 8) == pytest.approx(2 / 256)
    shifted = np.random.default_rng(2).normal(1.0, 1.0, size=60)
    assert sign_flip_pvalue(shifted) < 0.01
    assert sign_flip_pvalue(np.random.default_rng(3).normal(0.0, 1.0, size=60)) > 0.01


def test_holm_adjustment_textbook() -> None:
    # Holm 1979: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_wilson_interval_textbook_value() -> None:
    # Agresti & Coull example style: 8 of 10, 95%: (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0


def test_overhead_is_the_median_paired_ratio_with_an_order_statistic_interval() -> None:
    baseline = [1.0] * 15
    protected = [1.0 + 0.01 * index for index in range(15)]  # ratios 0 %, 1 %, ..., 14 %
    median, low, high = overhead_interval(json.dumps({"baseline": baseline, "protected": protected}))
    assert median == pytest.approx(7.0)
    # n = 15: the 4th and 12th order statistics bracket the median with probability >= 95% (Conover).
    assert (low, high) == pytest.approx((3.0, 11.0))
    assert 1 - 2 * stats.binom.cdf(3, 15, 0.5) >= 0.95
    assert all(math.isnan(value) for value in overhead_interval("{}"))
    short = overhead_interval(json.dumps({"baseline": [1.0] * 5, "protected": [1.1] * 5}))
    assert short[0] == pytest.approx(10.0) and math.isnan(short[1])
