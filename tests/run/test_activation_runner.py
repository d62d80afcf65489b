"""Activation-fault campaigns through ``resbench run``: cells, stored trials, common faults across methods,
resumption, the leaderboard's activation tables and bad input found before any work."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

from resbench.cli import main
from resbench.config import parse_suite
from resbench.engine.activation_faults import ONE_FAULT_PER_INFERENCE
from resbench.report.activation_rates import katz_ratio_interval
from resbench.report.tables import build_leaderboard
from resbench.run.runner import RunSettings, RunSummary, run_suite
from resbench.run.store import ResultStore

TEST_SIZE = 48
SUITE = {
    "name": "tiny-activations",
    "datasets": [{"name": "synthetic", "train_size": 256, "test_size": TEST_SIZE, "separation": 3.0}],
    "models": ["test-mlp"],
    "methods": ["none", "ranger"],
    "formats": ["fp32"],
    "faults": ["act-single", {"name": "act-bitflip", "format": "q15.16"}, "bitflip"],
    "bers": [1e-3, 1e-2],
    "trials": 3,
    "seed": 5,
    "training": {"epochs": 2},
}


def _run(folder: Path) -> RunSummary:
    settings = RunSettings(store=folder / "r.sqlite", device=torch.device("cpu"), cache_dir=folder / "cache",
                           progress=False)
    return run_suite(parse_suite(SUITE, "test"), settings)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary]:
    folder = tmp_path_factory.mktemp("activations")
    return folder, _run(folder)


def _trials(folder: Path) -> pd.DataFrame:
    with sqlite3.connect(folder / "r.sqlite") as connection:
        return pd.read_sql_query(
            "SELECT c.method, c.fault_model, c.ber, c.definition, t.* FROM trials t JOIN cells c USING (cell_id)",
            connection)


def test_act_single_is_one_cell_per_method_with_one_flip_per_inference(finished: tuple[Path, RunSummary]) -> None:
    trials = _trials(finished[0])
    single = trials[trials["fault_model"] == "act-single"]
    faulty = single[single["ber"] == ONE_FAULT_PER_INFERENCE]
    assert sorted(single["ber"].unique().tolist()) == [ONE_FAULT_PER_INFERENCE, 0.0]
    assert len(faulty) == 2 * 3 and (faulty["flips"] == TEST_SIZE).all()
    assert all(json.loads(definition)["fault_target"] == "activations" for definition in faulty["definition"])
    weights = trials[trials["fault_model"] == "bitflip"]
    assert all("fault_target" not in json.loads(definition) for definition in weights["definition"])


def test_methods_see_the_same_faults_and_sweeps_are_nested(finished: tuple[Path, RunSummary]) -> None:
    trials = _trials(finished[0])
    for fault_model in ("act-single", "act-bitflip[format=q15.16]"):
        faulty = trials[(trials["fault_model"] == fault_model) & (trials["ber"] != 0)]
        by_method = {method: rows.sort_values(["ber", "trial"]) for method, rows in faulty.groupby("method")}
        none, ranger = by_method["none"], by_method["ranger"]
        for column in ("seed", "flips", "flips_per_bit", "flips_per_tensor"):
            assert none[column].tolist() == ranger[column].tolist()
    sweep = trials[(trials["fault_model"] == "act-bitflip[format=q15.16]") & (trials["ber"] > 0)]
    for _, rows in sweep.groupby(["method", "trial"]):
        assert rows.sort_values("ber")["flips"].is_monotonic_increasing
    per_tensor = [json.loads(value) for value in sweep["flips_per_tensor"]]
    assert set().union(*per_tensor) == {"fc1", "fc2", "fc3"}


def test_a_rerun_skips_every_stored_trial(finished: tuple[Path, RunSummary]) -> None:
    folder, first = finished
    assert first.trials_run == 2 * (3 + 2 * 3 + 2 * 3)
    again = _run(folder)
    assert again.trials_run == 0


def test_leaderboard_reports_activation_tables_with_wilson_intervals(finished: tuple[Path, RunSummary]) -> None:
    with ResultStore.open_existing(finished[0] / "r.sqlite") as store:
        tables = build_leaderboard(store.cells_frame(), store.trials_frame())
        trials = store.trials_frame()
    by_fault = {table.fault_model: table for table in tables}
    assert by_fault["bitflip"].target == "weights" and "faults in weights" in by_fault["bitflip"].title
    single = by_fault["act-single"]
    assert single.target == "activations" and single.per_inference and "faults in activations" in single.title
    for _, row in single.rows.iterrows():
        stored = trials[(trials["fault_model"] == "act-single") & (trials["method"] == row["method"])
                        & (trials["ber"] == ONE_FAULT_PER_INFERENCE)]
        assert row["inferences"] == 3 * TEST_SIZE
        assert row["sdc_events"] == round((stored["sdc_rate"] * TEST_SIZE / 100).sum())
        assert row["sdc_low"] <= row["sdc"] <= row["sdc_high"]
        assert row["critical_sdc"] <= row["sdc"]
    ranger = single.rows[single.rows["method"] == "ranger"].iloc[0]
    none = single.rows[single.rows["method"] == "none"].iloc[0]
    expected = katz_ratio_interval(int(none["sdc_events"]), int(none["inferences"]), int(ranger["sdc_events"]),
                                   int(ranger["inferences"]))
    assert (ranger["sdc_vs_none"], ranger["sdc_vs_none_low"], ranger["sdc_vs_none_high"]) == pytest.approx(expected)
    assert math.isnan(none["sdc_vs_none"])
    sweep = by_fault["act-bitflip[format=q15.16]"]
    assert sweep.bers == [1e-3, 1e-2] and not sweep.per_inference
    assert all(sweep.rows[f"sdc_low@{key}"].le(sweep.rows[f"sdc@{key}"]).all() for key in ("1e-03", "1e-02"))
    assert all(sweep.rows[f"due_rate_low@{key}"].le(sweep.rows[f"due_rate@{key}"]).all() for key in ("1e-03", "1e-02"))


def test_cli_leaderboard_and_figures_handle_activation_tables(finished: tuple[Path, RunSummary],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = finished[0]
    assert main(["leaderboard", "--store", str(folder / "r.sqlite")]) == 0
    text = capsys.readouterr().out
    assert "act-single / faults in activations" in text and "critical SDC %" in text
    assert main(["leaderboard", "--store", str(folder / "r.sqlite"), "--bers", "1e-2"]) == 0
    shown = capsys.readouterr().out
    assert "act-single / faults in activations" in shown and "acc 1e-03" not in shown and "acc 1e-02" in shown
    assert main(["plot", "--store", str(folder / "r.sqlite"), "--output", str(folder / "figures")]) == 0
    figures = {path.name for path in (folder / "figures").iterdir()}
    assert any("act-bitflip" in name for name in figures) and not any("act-single" in name for name in figures)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("{name: bitflip, target: activations}", "bitflip supports the weights target only"),
        ("{name: act-single, target: weights}", "act-single supports the activations target only"),
        ("{name: act-single, operators: [convolution]}", "unknown operator 'convolution'"),
        ("{name: act-bitflip, format: q2.5, bits: [12]}", "bit 12 outside 0..7"),
        ("{name: act-single, format: q99}", "q99"),
    ],
)
def test_bad_activation_fault_input_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, message: str
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"version: 1\ndatasets: [synthetic]\nmodels: [test-mlp]\nfaults: [{fault}]\n", encoding="utf-8")
    assert main(["validate", str(suite)]) == 2
    assert message in capsys.readouterr().err
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not store.exists() and not (tmp_path / "cache").exists()


def test_list_faults_names_each_models_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "faults", "--json"]) == 0
    targets = {record["name"]: record["targets"] for record in json.loads(capsys.readouterr().out)}
    assert targets["bitflip"] == ["weights"] and targets["act-single"] == ["activations"]
    assert targets["act-bitflip"] == ["activations"]
