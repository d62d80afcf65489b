"""The accuracy interval misses on neither side more often than its nominal 2.5 %, and rate intervals
end exactly at 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest

from resbench.statistics import bounded_mean_interval, wilson_interval

REPETITIONS = 2000


@pytest.mark.parametrize(("trials", "rate"), [(30, 0.003), (100, 0.03), (50, 0.02)])
def test_skewed_cells_miss_at_most_nominally_on_each_side(trials: int, rate: float) -> None:
    """Resampling check on a spike at clean accuracy (97 %) plus catastrophes (10 %): the true mean lies
    below the lower bound, or above the upper bound, in at most 2.5 % of the samples (3 % allows for
    simulation noise: its standard error is 0.35 %). One pseudo-trial of weight 1/2 at each end missed
    above in 6.7 % (30 trials, 0.3 % catastrophes) and below in 4.8 % (100 trials, 3 %)."""
    rng = np.random.default_rng(5)
    truth = 97.0 * (1 - rate) + 10.0 * rate
    below = above = 0
    for _ in range(REPETITIONS):
        sample = np.where(rng.random(trials) < rate, 10.0, 97.0)
        _, low, high = bounded_mean_interval(sample)
        below += truth < low
        above += truth > high
    assert below / REPETITIONS <= 0.03 and above / REPETITIONS <= 0.03, (below, above)


def test_wilson_interval_ends_exactly_at_zero_and_one() -> None:
    """No DUE seen prints a lower bound of 0, not 1e-16."""
    for total in range(1, 200):
        assert wilson_interval(0, total)[0] == 0.0
        assert wilson_interval(total, total)[1] == 1.0
