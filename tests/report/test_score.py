"""The resilience score: 0 at chance, 1 without loss, whatever the grid; never extrapolated."""

from __future__ import annotations

import numpy as np
import pytest

from resbench.report.score import REFERENCE_RANGE, covered_range, resilience_score

GRIDS = [
    [1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
    [1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3],
    [1e-10, 2e-5, 1.0],
    [1e-6, 1e-5],
]


@pytest.mark.parametrize("bers", GRIDS, ids=lambda grid: f"{len(grid)}-bers")
def test_chance_scores_zero_and_no_loss_scores_one(bers: list[float]) -> None:
    chance, clean = 10.0, 97.0
    assert resilience_score(bers, np.full(len(bers), chance), clean, chance)[0] == 0.0
    assert resilience_score(bers, np.full(len(bers), clean), clean, chance)[0] == pytest.approx(1.0)
    # noise above clean accuracy cannot lift the score above 1, nor noise below chance under 0
    assert resilience_score(bers, np.full(len(bers), 99.0), clean, chance)[0] == pytest.approx(1.0)
    assert resilience_score(bers, np.full(len(bers), 3.0), clean, chance)[0] == 0.0


def test_a_broken_model_scores_zero_even_if_it_never_loses_accuracy() -> None:
    """Clean accuracy at chance: 'no loss' is no merit (the old AUC gave it 1.0 and ranked it first)."""
    bers = GRIDS[0]
    assert resilience_score(bers, np.full(len(bers), 10.0), 10.0, 10.0)[0] == 0.0
    assert resilience_score(bers, np.full(len(bers), 11.0), 10.5, 10.0)[0] == pytest.approx(1.0)  # tiny edge


def test_score_averages_over_log_ber_within_the_reference_range_only() -> None:
    chance, clean = 0.0, 100.0
    # Perfect up to 1e-5, at chance from 1e-4 on: linear in between.
    bers = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    accuracies = np.array([100, 100, 100, 100, 0, 0, 0], dtype=float)
    # Over decades -8..-2 (the sweep's part of the reference range): 3 decades at 1, one linear decade
    # (area 0.5), two at 0.
    assert resilience_score(bers, accuracies, clean, chance)[0] == pytest.approx(3.5 / 6)
    # A grid that only covers part of the reference range averages over that part and says so.
    assert covered_range([1e-6, 1e-5]) == (1e-6, 1e-5)
    assert covered_range([1e-12, 1e-10]) is None
    assert np.isnan(resilience_score([1e-12, 1e-10], np.array([100.0, 100.0]), clean, chance)[0])
    assert covered_range(GRIDS[2]) == REFERENCE_RANGE


def test_score_takes_many_curves_at_once() -> None:
    bers = GRIDS[0]
    draws = np.array([[97.0] * 5, [10.0] * 5])
    assert resilience_score(bers, draws, 97.0, 10.0) == pytest.approx([1.0, 0.0])
