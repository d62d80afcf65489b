"""Paired differences to ``none`` see a catastrophe in either method: never of zero width, and covering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from resbench.report.tables import build_leaderboard
from resbench.run.store import ResultStore
from tests.helpers import PROVENANCE, make_cell, make_trial

BER = 1e-5
KEY = "1e-05"


def _boards(path: Path, samples: list[dict[str, list[float]]]) -> list[pd.DataFrame]:
    """One table per sample (a setup each), one row per method, clean accuracy 97."""
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        for repetition, curves in enumerate(samples):
            for method, accuracies in curves.items():
                for ber, values in ((0.0, [97.0]), (BER, accuracies)):
                    cell_id = f"{repetition}-{method}-{ber}"
                    definition = json.dumps({"method": method, "ber": ber, "repetition": repetition})
                    store.upsert_cell(make_cell(cell_id, method, ber, definition=definition), run_id)
                    store.add_trials([make_trial(cell_id, trial, value, flips=0 if ber == 0 else 1)
                                      for trial, value in enumerate(values)], run_id)
        tables = build_leaderboard(store.cells_frame(), store.trials_frame())
    return [table.rows.set_index("method") for table in tables]


def test_no_difference_seen_yet_is_no_difference_ruled_out(tmp_path: Path) -> None:
    """Both methods kept clean accuracy on all 30 trials: a catastrophe in either alone is still possible."""
    [rows] = _boards(tmp_path / "r.sqlite", [{"none": [97.0] * 30, "ranger": [97.0] * 30}])
    low, centre, high = (rows.loc["ranger", f"{prefix}@{KEY}"] for prefix in ("diff_low", "diff", "diff_high"))
    assert centre == 0.0
    assert low < -1.0 and high > 1.0


def test_a_catastrophe_in_one_method_only_is_covered(tmp_path: Path) -> None:
    """Resampling check: a broken model loses 87 points in 3 % of the trials, none never. The interval of
    broken - none must cover the true difference (-2.61) in at least 93 % of 200 samples of 30 trials and
    miss on neither side more than 5 % of the time (sharing the pseudo-trials of both methods covered
    about 60 %: every sample without a catastrophe gave [0, 0])."""
    rng = np.random.default_rng(11)
    rate, trials, repetitions = 0.03, 30, 200
    truth = -87.0 * rate
    samples = [{"none": [97.0] * trials, "broken": (97.0 - 87.0 * (rng.random(trials) < rate)).tolist()}
               for _ in range(repetitions)]
    boards = _boards(tmp_path / "r.sqlite", samples)
    lows = np.array([rows.loc["broken", f"diff_low@{KEY}"] for rows in boards])
    highs = np.array([rows.loc["broken", f"diff_high@{KEY}"] for rows in boards])
    assert np.all(highs > lows)
    assert np.mean((lows <= truth) & (truth <= highs)) >= 0.93
    assert np.mean(truth < lows) <= 0.05 and np.mean(truth > highs) <= 0.05
