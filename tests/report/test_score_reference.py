"""Scores and tolerable BERs are measured against the unprotected model's clean accuracy of the setup, so
a weak model that has little left to lose never outranks a trained one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resbench.report.tables import build_leaderboard
from resbench.run.store import ResultStore
from tests.helpers import CURVES, PROVENANCE, make_cell, make_trial, store_with

BERS = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
TRIALS = 40


def _curves(trained: str) -> dict[str, tuple[float, dict[float, list[float]]]]:
    """A trained model that loses accuracy as the BER grows, and two untrained ones (barely above the
    chance level of 10 %) that lose nothing: the numbers of the digits MLP and two untrained MLPs."""
    rng = np.random.default_rng(3)
    catastrophe_rates = dict(zip(BERS, (0.001, 0.01, 0.1, 0.6, 1.0), strict=True))
    trained_curve = {ber: (97.2 - 87.0 * (rng.random(TRIALS) < rate)).tolist()
                     for ber, rate in catastrophe_rates.items()}
    return {
        trained: (97.2, trained_curve),
        "untrained-a": (17.8, {ber: (17.8 + rng.normal(0, 0.5, TRIALS)).tolist() for ber in BERS}),
        "untrained-b": (12.0, {ber: (12.0 + rng.normal(0, 0.5, TRIALS)).tolist() for ber in BERS}),
    }


def _table(path: Path, curves: dict[str, tuple[float, dict[float, list[float]]]]) -> dict[str, dict[str, object]]:
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        for method, (clean, curve) in curves.items():
            for ber, accuracies in [(0.0, [clean]), *curve.items()]:
                cell_id = f"{method}-{ber}"
                definition = json.dumps({"method": method, "ber": ber})
                store.upsert_cell(make_cell(cell_id, method, ber, definition=definition), run_id)
                store.add_trials([make_trial(cell_id, trial, accuracy, flips=0 if ber == 0 else 1)
                                  for trial, accuracy in enumerate(accuracies)], run_id)
        [table] = build_leaderboard(store.cells_frame(), store.trials_frame())
    return table.rows.set_index("method").to_dict("index")


@pytest.mark.parametrize("trained", ["none", "guard"])
def test_two_untrained_models_and_a_trained_one_the_trained_one_ranks_first(trained: str, tmp_path: Path) -> None:
    """``none`` is the reference when the table has it; without it, the best clean accuracy of the table."""
    rows = _table(tmp_path / "r.sqlite", _curves(trained))
    assert rows[trained]["rank"] == "1"  # alone: not tied with an untrained model
    for weak in ("untrained-a", "untrained-b"):
        assert rows[weak]["score"] < rows[trained]["score"]
        # A chance-corrected share of the reference: (17.8 - 10) / (97.2 - 10) at best.
        assert rows[weak]["score"] <= (rows[weak]["clean_accuracy"] - 10.0) / (97.2 - 10.0) + 0.01
        assert rows[weak]["tolerable_ber"] == 0.0  # more than a point below the reference already clean
    assert rows[trained]["tolerable_ber"] >= 1e-7


def test_a_protection_that_costs_clean_accuracy_pays_for_it(tmp_path: Path) -> None:
    """Same curve shape, one point less clean accuracy: scored and ranked below the unprotected model."""
    curves = _curves("none")
    clean, curve = curves["none"]
    curves = {"none": (clean, curve), "lossy": (clean - 1.5, {ber: [value - 1.5 for value in values]
                                                              for ber, values in curve.items()})}
    rows = _table(tmp_path / "r.sqlite", curves)
    assert rows["lossy"]["score"] < rows["none"]["score"]
    assert rows["lossy"]["tolerable_ber"] == 0.0 < rows["none"]["tolerable_ber"]


def test_a_table_without_a_score_says_why_in_a_sentence(tmp_path: Path) -> None:
    for name, curves, reason in (
        ("one", {method: (clean, {1e-5: curve[1e-5]}) for method, (clean, curve) in CURVES.items()},
         "Score: none (it averages chance-corrected accuracy over a span of log10 BER, and the sweep has 1 BER)."),
        ("outside", {method: (clean, {2e-1: [10.0], 3e-1: [10.0]}) for method, (clean, _) in CURVES.items()},
         "Score: none (the sweep spans no part of the reference range 1e-09..1e-01)."),
        ("span", CURVES, "Score: chance-corrected accuracy averaged over log10 BER 1e-06..1e-04 (0 = chance, "
         "1 = no loss)."),
    ):
        store_with(tmp_path / f"{name}.sqlite", curves)
        with ResultStore(tmp_path / f"{name}.sqlite") as results:
            [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
        assert reason in table.description
