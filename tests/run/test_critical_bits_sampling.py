"""``trials: {sampling: critical-bits}``: campaigns stratified by flips in each format's critical bits, through
the store and the leaderboard."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from resbench.cli import main
from resbench.engine.strata import PILOT_TRIALS, STRATA, StratifiedDesign
from resbench.run.records import SCHEMA, SCHEMA_VERSION
from resbench.run.store import APPLICATION_ID, ResultStore
from tests.helpers import PROVENANCE, make_cell, make_trial, one_line_error, rows

SUITE = """\
version: 1
name: tiny-strata
datasets: [{{name: synthetic, train_size: 128, test_size: 48, separation: 3.0}}]
models: [test-mlp]
methods: [none, ranger]
formats: [fp32]
faults: [bitflip]
bers: [3.0e-4, 3.0e-3]
trials: {{trials: {trials}, sampling: critical-bits{extra}}}
training: {{epochs: 2}}
"""


def _run(folder: Path, trials: int, *flags: str, extra: str = "", store: str = "r.sqlite") -> int:
    suite = folder / "suite.yaml"
    suite.write_text(SUITE.format(trials=trials, extra=extra), encoding="utf-8")
    return main(["run", str(suite), "--store", str(folder / store), "--cache-dir", str(folder / "cache"),
                 "--no-progress", "--device", "cpu", *flags])


@pytest.fixture(scope="module")
def stratified_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("strata")
    assert _run(folder, 12) == 0
    return folder


def test_cells_hold_exact_stratum_weights_and_trials_their_strata(stratified_run: Path) -> None:
    with ResultStore.open_existing(stratified_run / "r.sqlite") as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    faulty = cells[cells["ber"] > 0]
    assert set(faulty["sampling"]) == {"critical-bits"} and len(faulty) == 4
    for _, cell in faulty.iterrows():
        weights = json.loads(cell["strata_weights"])
        assert len(weights) == len(STRATA) and math.isclose(sum(weights), 1.0, rel_tol=1e-12)
        assert weights[0] == pytest.approx(cell["zero_flip_probability"], rel=1e-12)
        cell_trials = trials[trials["cell_id"] == cell["cell_id"]].sort_values("trial")
        strata = cell_trials["stratum"].tolist()
        # A pilot in each stratum, round robin, then the design's own choices, replayed from the accuracies.
        assert strata[:3 * PILOT_TRIALS] == [1, 2, 3] * PILOT_TRIALS and len(strata) == 12
        clean_rows = trials[(trials["ber"] == 0) & (trials["method"] == cell["method"])]
        design = StratifiedDesign(tuple(weights), float(clean_rows["accuracy"].iloc[0]))
        assert design.strata_of(cell_trials["accuracy"].tolist()) == strata
        # Stratum 1 trials flip no critical bit (fp32: bit 30); strata 2 and 3 flip one, and two or more.
        critical = cell_trials["flips_per_bit"].map(lambda text: json.loads(text)[30])
        assert ((critical == 0) == (cell_trials["stratum"] == 1)).all()
        assert (critical[cell_trials["stratum"] == 2] == 1).all() and (critical[cell_trials["stratum"] == 3] >= 2).all()


def test_methods_are_paired_stratum_by_stratum(stratified_run: Path) -> None:
    """The j-th trial of a stratum draws its sites from the j-th trial seed, whatever the method."""
    with ResultStore.open_existing(stratified_run / "r.sqlite") as store:
        trials = store.trials_frame()
    faulty = trials[trials["ber"] > 0].sort_values(["cell_id", "trial"])
    faulty = faulty.assign(rank=faulty.groupby(["cell_id", "stratum"]).cumcount())
    seeds = faulty.groupby(["ber", "stratum", "rank"])["seed"].nunique()
    assert (seeds == 1).all()
    by_method = faulty.groupby(["ber", "stratum", "rank"])["method"].nunique()
    assert (by_method == 2).any()  # some (stratum, rank) pairs are held by both methods


def test_leaderboard_estimate_is_the_stratified_mean(stratified_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from resbench.report.keys import format_ber
    from resbench.report.tables import build_leaderboard

    with ResultStore.open_existing(stratified_run / "r.sqlite") as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    table = build_leaderboard(cells, trials)[0]
    for method in ("none", "ranger"):
        row = table.rows[table.rows["method"] == method].iloc[0]
        clean = float(trials[(trials["ber"] == 0) & (trials["method"] == method)]["accuracy"].iloc[0])
        for ber in (3e-4, 3e-3):
            cell = trials[(trials["ber"] == ber) & (trials["method"] == method)]
            weights = json.loads(cells[cells["cell_id"] == cell["cell_id"].iloc[0]]["strata_weights"].iloc[0])
            expected = weights[0] * clean + sum(weights[h] * cell[cell["stratum"] == h]["accuracy"].mean()
                                                for h in (1, 2, 3))
            key = format_ber(ber)
            assert row[f"acc@{key}"] == pytest.approx(expected, rel=1e-9)
            assert row[f"ci_low@{key}"] < row[f"ci_high@{key}"]
            assert row[f"ci_low@{key}"] <= expected <= row[f"ci_high@{key}"]
    assert main(["leaderboard", "--store", str(stratified_run / "r.sqlite"), "--format", "md"]) == 0
    assert "Critical-bit strata" in capsys.readouterr().out


def test_an_interrupted_stratified_run_resumes_to_the_same_rows(stratified_run: Path, tmp_path: Path) -> None:
    """Nine trials, then the rest: the strata of the stored trials replay and the cell continues as an
    uninterrupted run would have."""
    (tmp_path / "cache").symlink_to(stratified_run / "cache")
    assert _run(tmp_path, 9) == 0
    assert _run(tmp_path, 12) == 0
    assert rows(tmp_path / "r.sqlite").equals(rows(stratified_run / "r.sqlite"))


@pytest.mark.parametrize(("trials", "extra", "message"), [
    (2, "", "needs at least 3"),
    (12, ", critical_bits: {fp16: [14]}", "no format 'fp16' in the suite"),
    (12, ", critical_bits: {fp32: [32]}", "distinct bit positions from 0 to 31"),
])
def test_bad_stratified_settings_are_refused_before_any_work(trials: int, extra: str, message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, trials, extra=extra) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "r.sqlite").exists()


def test_a_store_of_schema_version_one_reads_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    first_schema = SCHEMA.replace(",\n    strata_weights TEXT NOT NULL DEFAULT ''", "").replace(
        "    stratum INTEGER NOT NULL DEFAULT 0,\n", "")
    assert first_schema != SCHEMA
    with sqlite3.connect(path) as connection:
        connection.executescript(first_schema)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
        connection.execute("INSERT INTO runs (suite, suite_version, started, resbench_version, plugins, torch_version, "
                           "device, command) VALUES ('s', 1, 't', '0', '{}', 't', 'cpu', 'c')")
        connection.execute("INSERT INTO cells (cell_id, method, model, dataset, format, fault_model, ber, seed, "
                           "definition, method_plugin, citation, notes, stored_bits, baseline_bits, fault_space, "
                           "eval_samples, clean_eval_seconds, baseline_eval_seconds, prepare_seconds, run_id) VALUES "
                           "('a', 'none', 'm', 'd', 'fp32', 'bitflip', 1e-5, 0, '{}', 'p', '', '', 32, 32, '[]', 10, "
                           "0, 0, 0, 1)")
        connection.execute("INSERT INTO trials VALUES ('a', 0, 0, 90.0, 0, 0, 0, 1, 0, 0.1, '[]', '{}', 1, 1)")
    connection.close()
    with ResultStore.open_existing(path) as store:  # read as it is: unstratified
        old = store.trials_frame()
    assert old["stratum"].tolist() == [0] and old["strata_weights"].tolist() == [""]
    with ResultStore(path) as store:  # a run brings it up to date, rows kept
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("b", strata_weights="[0.5, 0.5, 0, 0]"), run_id)
        store.add_trials([make_trial("b", 0, 80.0)], run_id)
        upgraded = store.trials_frame()
    assert sorted(upgraded["accuracy"]) == [80.0, 90.0] and set(upgraded["stratum"]) == {0}
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    connection.close()
    assert np.isfinite(upgraded["accuracy"]).all()
