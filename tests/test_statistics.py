"""Aggregates against textbook values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from resbench.statistics import mean_confidence_interval, summarize, trapezoid_auc, wilson_interval


def test_mean_interval_matches_textbook_t_interval() -> None:
    values = [90.0, 92.0, 94.0, 96.0, 98.0]
    mean, low, high = mean_confidence_interval(values)
    # mean 94, s = sqrt(10), t_{0.975,4} = 2.776445
    halfwidth = 2.776445 * math.sqrt(10) / math.sqrt(5)
    assert mean == pytest.approx(94.0)
    assert low == pytest.approx(94.0 - halfwidth, abs=1e-4)
    assert high == pytest.approx(94.0 + halfwidth, abs=1e-4)


def test_mean_interval_matches_scipy() -> None:
    values = np.random.default_rng(3).normal(50, 10, size=37)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    _, low, high = mean_confidence_interval(values.tolist())
    assert (low, high) == pytest.approx(expected)


def test_single_value_interval_is_unbounded_and_constant_sample_collapses() -> None:
    assert mean_confidence_interval([5.0])[1:] == (-math.inf, math.inf)
    assert mean_confidence_interval([7.0, 7.0, 7.0]) == (7.0, 7.0, 7.0)


def test_summary_reports_median_and_fifth_percentile_of_bimodal_sample() -> None:
    values = [98.0] * 19 + [10.0]
    summary = summarize(values)
    assert summary.median == 98.0
    assert summary.p05 == pytest.approx(np.percentile(values, 5))
    assert summary.mean == pytest.approx(93.6)
    assert summary.count == 20


def test_wilson_interval_textbook_value() -> None:
    # Agresti & Coull example style: 8 of 10, 95%: (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0


def test_trapezoid_auc_of_a_line() -> None:
    assert trapezoid_auc([0, 1, 2], [1, 1, 3]) == pytest.approx(3.0)
    assert trapezoid_auc([1.0], [5.0]) == 0.0
