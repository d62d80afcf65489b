"""``resbench run`` end to end on tiny models and synthetic data: grid, store, rerun, determinism."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

from resbench.config import Suite, TrialPolicy, parse_suite
from resbench.engine.estimator import CellDesign
from resbench.run import campaign
from resbench.run.runner import RunSettings, run_suite

SUITE = {
    "name": "tiny",
    "datasets": [{"name": "synthetic", "train_size": 256, "test_size": 64, "separation": 3.0}],
    "models": ["test-mlp"],
    "methods": ["none"],
    "formats": ["fp32", "q2.5"],
    "faults": ["bitflip"],
    "bers": [1e-4, 1e-3, 1e-2],
    "trials": 4,
    "seed": 7,
    "training": {"epochs": 2},
}


def _run(tmp_path: Path, store: str = "r.sqlite", **changes: object) -> Path:
    suite = parse_suite({key: value for key, value in {**SUITE, **changes}.items() if value is not None}, "test")
    settings = RunSettings(store=tmp_path / store, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                           progress=False)
    run_suite(suite, settings)
    return tmp_path / store


def _trials(path: Path) -> pd.DataFrame:
    with sqlite3.connect(path) as connection:
        return pd.read_sql_query(
            "SELECT c.format, c.ber, t.trial, t.seed, t.accuracy, t.sdc_rate, t.flips, t.flips_per_bit, "
            "t.flips_per_tensor FROM trials t "
            "JOIN cells c USING (cell_id) ORDER BY c.format, c.ber, t.trial", connection)


def test_grid_expansion_and_rows(tmp_path: Path) -> None:
    trials = _trials(_run(tmp_path))
    # 2 formats x (3 BERs x 4 trials + one BER-0 row)
    assert len(trials) == 2 * (3 * 4 + 1)
    assert set(trials["format"]) == {"fp32", "q2.5"}
    clean = trials[trials["ber"] == 0]
    assert (clean["flips"] == 0).all() and (clean["sdc_rate"] == 0).all()
    faulty = trials[trials["ber"] > 0]
    # nested sweeps: per trial, flips never decrease with BER
    for _, group in faulty.groupby(["format", "trial"]):
        assert group.sort_values("ber")["flips"].is_monotonic_increasing
    # the fault record adds up: per bit position and per tensor
    for _, row in faulty.iterrows():
        per_bit, per_tensor = json.loads(row["flips_per_bit"]), json.loads(row["flips_per_tensor"])
        assert sum(per_bit) == sum(per_tensor.values()) == row["flips"]
        assert len(per_bit) == (32 if row["format"] == "fp32" else 8)
        assert set(per_tensor) <= {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    # the trial seed does not depend on the BER (one nested sample per trial)
    assert faulty.groupby(["format", "trial"])["seed"].nunique().eq(1).all()


def test_same_suite_and_seed_give_identical_rows(tmp_path: Path) -> None:
    first = _trials(_run(tmp_path, "a.sqlite"))
    second = _trials(_run(tmp_path, "b.sqlite"))
    pd.testing.assert_frame_equal(first, second)
    other_seed = _trials(_run(tmp_path, "c.sqlite", seed=8))
    assert not first["seed"].equals(other_seed["seed"])


def test_rerun_skips_stored_trials_and_completes_missing_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _run(tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM trials WHERE trial = 3")
    evaluated: list[int] = []
    original = campaign._run_trial

    def counting(*args: object, **kwargs: object) -> object:
        evaluated.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(campaign, "_run_trial", counting)
    _run(tmp_path)
    assert len(evaluated) == 2 * 3  # only trial 3 of each (format, BER) ran again
    assert len(_trials(path)) == 2 * 13


def test_adaptive_trials_stop_at_target_or_maximum_never_on_zero_spread() -> None:
    policy = TrialPolicy(trials=3, max_trials=10, ci_halfwidth=1.0)
    assert campaign.trials_needed([90.0, 90.0], policy)
    assert campaign.trials_needed([90.0, 90.0, 90.0], policy)  # zero spread is no evidence of convergence
    assert campaign.trials_needed([90.0, 50.0, 70.0], policy)
    assert not campaign.trials_needed([90.0, 50.0] * 5, policy)  # maximum reached
    assert not campaign.trials_needed([1.0] * 3, TrialPolicy(trials=3))
    # Conditional cells: only P(K >= 1) of the estimate is uncertain, so a rare-flip cell converges.
    rare = CellDesign(zero_flip=0.99, clean=90.0)
    assert not campaign.trials_needed([90.0, 90.0, 90.0], policy, rare)
    assert campaign.trials_needed([90.0, 90.0, 90.0], policy, CellDesign(zero_flip=0.5, clean=90.0))


def test_zero_flip_trials_reuse_the_clean_result(tmp_path: Path) -> None:
    trials = _trials(_run(tmp_path, bers=[1e-9], trials={"trials": 4, "sampling": "bernoulli"}))
    faulty = trials[trials["ber"] > 0]
    clean = trials[trials["ber"] == 0].set_index("format")["accuracy"]
    assert (faulty["flips"] == 0).all()
    for _, row in faulty.iterrows():
        assert row["accuracy"] == clean[row["format"]]


def test_suite_defaults_are_valid() -> None:
    assert Suite().trials.trials >= 1


def test_checkpoint_replaces_training(tmp_path: Path) -> None:
    from resbench.models import build_model

    torch.manual_seed(0)
    model = build_model("test-mlp", (1, 8, 8), 10)
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    suite = parse_suite({**SUITE, "formats": ["fp32"], "bers": [1e-9]}, "test")
    settings = RunSettings(store=tmp_path / "r.sqlite", device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                           checkpoint=checkpoint, progress=False)
    run_suite(suite, settings)
    assert not (tmp_path / "cache").exists()  # nothing trained
    from resbench.datasets import load_dataset
    from resbench.training import evaluate

    options = {key: value for key, value in SUITE["datasets"][0].items() if key != "name"}  # type: ignore[index,union-attr]
    splits = load_dataset("synthetic", options)
    expected = evaluate(model, splits.test, "cpu")
    clean = _trials(tmp_path / "r.sqlite").query("ber == 0")["accuracy"].item()
    assert clean == pytest.approx(expected)


def test_adaptive_stopping_draws_its_bootstrap_weights_once() -> None:
    """The stopping rule runs for every cell before every trial: its weights come from a cache."""
    from resbench import statistics

    policy = TrialPolicy(trials=3, max_trials=100, ci_halfwidth=0.01)
    accuracies = [90.0, 50.0, 70.0, 60.0, 80.0]
    campaign.trials_needed(accuracies, policy)
    before = statistics._weight_block.cache_info().misses
    for _ in range(50):
        assert campaign.trials_needed(accuracies, policy)
    assert statistics._weight_block.cache_info().misses == before


def test_a_complete_adaptive_conditional_group_is_skipped_whole(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun judges completeness with each cell's own design (P(K = 0) stored with the cell)."""
    from resbench.run import jobs

    adaptive = {"trials": 3, "max_trials": 6, "ci_halfwidth": 3.0}
    _run(tmp_path, formats=["fp32"], bers=[1e-6, 1e-3], trials=adaptive)
    deployed: list[int] = []
    original = jobs.deploy

    def counting(*args: object) -> object:
        deployed.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "deploy", counting)
    _run(tmp_path, formats=["fp32"], bers=[1e-6, 1e-3], trials=adaptive)
    assert deployed == []


def test_several_seeds_train_their_own_baselines_and_pool_in_one_table(tmp_path: Path) -> None:
    from resbench.report.tables import build_leaderboard
    from resbench.run.store import ResultStore

    path = _run(tmp_path, seed=None, seeds=[7, 8], formats=["fp32"], bers=[1e-3, 1e-2], trials=3)
    with ResultStore(path) as store:
        cells = store.cells_frame()
        tables = build_leaderboard(cells, store.trials_frame())
    assert sorted(set(cells["seed"])) == [7, 8]
    assert cells.groupby("seed")["baseline_checksum"].first().nunique() == 2  # two trained models
    assert (cells["chance_accuracy"] > 0).all()
    [table] = tables
    assert table.seeds == (7, 8) and int(table.rows.loc[0, "seeds"]) == 2
