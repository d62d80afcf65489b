"""Statistics of the activation-fault leaderboard: per-inference counts, the Katz ratio interval, ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resbench.report.activation_rates import (
    activation_columns,
    katz_ratio_interval,
    rank_single_fault_rows,
)


def test_per_inference_rates_pool_trials_and_images_with_wilson_bounds() -> None:
    trials = pd.DataFrame({"ber": [-1.0] * 3, "sdc_rate": [10.0, 20.0, 0.0], "critical_sdc_rate": [5.0, 10.0, 0.0],
                           "due_rate": [0.0, 0.0, 10.0], "accuracy": [90.0, 80.0, 70.0]})
    columns = activation_columns(trials, eval_samples=20, bers=[])
    assert columns["inferences"] == 60 and columns["sdc_events"] == 6
    assert columns["sdc"] == pytest.approx(10.0)
    # Wilson interval of 6 / 60 (Agresti & Coull 1998, table 1 style check against the closed form)
    z = 1.959963984540054
    centre = (0.1 + z * z / 120) / (1 + z * z / 60)
    spread = z * np.sqrt(0.1 * 0.9 / 60 + z * z / (4 * 3600)) / (1 + z * z / 60)
    assert columns["sdc_low"] == pytest.approx(100 * (centre - spread))
    assert columns["sdc_high"] == pytest.approx(100 * (centre + spread))
    assert columns["accuracy"] == pytest.approx(80.0) and columns["due_events"] == 2


def test_katz_interval_covers_the_true_ratio_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    n, p_a, p_b = 3000, 0.06, 0.02
    draws = 2000
    covered = 0
    for a, b in zip(rng.binomial(n, p_a, draws), rng.binomial(n, p_b, draws), strict=True):
        _, low, high = katz_ratio_interval(int(a), n, int(b), n)
        covered += low <= p_a / p_b <= high
    # 2,000 draws: a binomial 95% band around 0.95 is about +-0.01; Katz is close to nominal here
    assert 0.93 <= covered / draws <= 0.97


def test_katz_ratio_stays_finite_with_zero_events() -> None:
    ratio, low, high = katz_ratio_interval(30, 1000, 0, 1000)
    assert np.isfinite([ratio, low, high]).all() and low > 1


def test_a_broken_model_never_ranks_first_whatever_its_sdc_rate() -> None:
    frame = pd.DataFrame({
        "method": ["none", "broken", "bounded"],
        "accuracy": [95.0, 10.0, 97.0],
        "sdc_events": [300, 0, 30],
        "inferences": [5000, 5000, 5000],
    })
    ranked = rank_single_fault_rows(frame)
    assert ranked["method"].tolist() == ["bounded", "none", "broken"]
    assert np.isnan(ranked.set_index("method").loc["none", "sdc_vs_none"])  # no ratio of a model with itself
    bounded = ranked.set_index("method").loc["bounded"]
    assert bounded["sdc_vs_none"] == pytest.approx(10.0)
    assert bounded["sdc_vs_none_low"] < 10.0 < bounded["sdc_vs_none_high"]
