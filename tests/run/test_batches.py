"""A group's trials split into trial-batch jobs give exactly the rows of one job per group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from resbench.cli import main
from resbench.config import parse_suite
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.run.batches import TrialBatches
from resbench.run.cells import CellKeys, Group
from resbench.run.jobs import CellsReady, JobContext, JobSettings
from resbench.run.runner import RunSettings, RunSummary, run_suite
from resbench.run.store import CellFailure, CellRecord, TrialRow
from tests.helpers import rows

SUITE: dict[str, Any] = {
    "name": "batches",
    "datasets": [{"name": "synthetic", "train_size": 256, "test_size": 128, "separation": 3.0}],
    "models": ["test-mlp"],
    "methods": ["none"],
    "formats": ["fp32", "q2.5"],
    "faults": ["bitflip"],
    "bers": [1e-3, 3e-3, 1e-2],
    "seed": 3,
    "training": {"epochs": 1},
}
#: Cells stop at different counts between 4 and 60 trials (adaptive), so batches overshoot stopping points.
ADAPTIVE = {"trials": 4, "max_trials": 60, "ci_halfwidth": 6.0}


def run(folder: Path, store: str, executor: dict[str, Any], **changes: Any) -> RunSummary:
    suite = parse_suite({**SUITE, "executor": executor, **changes}, "test")
    return run_suite(suite, RunSettings(store=folder / store, device=torch.device("cpu"), cache_dir=folder / "cache",
                                        progress=False))


@pytest.mark.parametrize("sampling", ["conditional", "bernoulli"])
def test_trial_batches_store_the_rows_of_whole_groups(sampling: str, tmp_path: Path) -> None:
    trials = {**ADAPTIVE, "sampling": sampling}
    whole = run(tmp_path, "whole.sqlite", {"name": "local"}, trials=trials)
    expected = rows(tmp_path / "whole.sqlite")
    per_cell = expected.groupby("cell_id").size()
    assert per_cell[per_cell > 1].nunique() > 2  # cells stop at different points: the test can tell
    for trial_batch in (1, 5, 16):
        summary = run(tmp_path, f"batch-{trial_batch}.sqlite", {"name": "local", "trial_batch": trial_batch},
                      trials=trials)
        pd.testing.assert_frame_equal(rows(tmp_path / f"batch-{trial_batch}.sqlite"), expected)
        assert summary.trials_run == whole.trials_run
        if trial_batch > 1:
            assert summary.trials_discarded > 0  # trials computed past a stopping point were dropped


def test_trial_batches_of_activation_faults_store_the_rows_of_whole_groups(tmp_path: Path) -> None:
    changes = {"faults": ["act-bitflip", "act-single"], "trials": {"trials": 3, "max_trials": 20, "ci_halfwidth": 6.0}}
    run(tmp_path, "whole.sqlite", {"name": "local"}, **changes)
    run(tmp_path, "batches.sqlite", {"name": "local", "trial_batch": 2}, **changes)
    pd.testing.assert_frame_equal(rows(tmp_path / "batches.sqlite"), rows(tmp_path / "whole.sqlite"))


def test_a_split_run_resumes_a_store_that_holds_part_of_each_cell(tmp_path: Path) -> None:
    run(tmp_path, "whole.sqlite", {"name": "local"}, trials=ADAPTIVE)
    run(tmp_path, "resumed.sqlite", {"name": "local"}, trials=3)  # a prefix of every cell, as a killed run leaves
    resumed = run(tmp_path, "resumed.sqlite", {"name": "local", "trial_batch": 4}, trials=ADAPTIVE)
    assert resumed.trials_skipped == 2 * 3 * 3
    pd.testing.assert_frame_equal(rows(tmp_path / "resumed.sqlite"), rows(tmp_path / "whole.sqlite"))


def test_the_trial_batch_flag_reaches_the_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "r.sqlite"
    argv = ["run", "--store", str(store), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu",
            "--datasets", "synthetic", "--models", "test-mlp", "--methods", "none", "--formats", "fp32",
            "--bers", "1e-2", "--trials", "3"]
    assert main([*argv, "--trial-batch", "-1"]) == 2
    assert "trial_batch" in capsys.readouterr().err and not store.exists()
    assert main([*argv, "--trial-batch", "2"]) == 0
    assert "3 trials run" in capsys.readouterr().out


# -- the driver's bookkeeping, by hand ------------------------------------------------------------------------


def _batches(trial_batch: int, **trials: Any) -> tuple[TrialBatches, Group, CellKeys]:
    suite = parse_suite({**SUITE, "formats": ["fp32"], "bers": [1e-2], "trials": trials}, "test")
    keys = CellKeys(suite, FaultSpaceOptions(), None)
    context = JobContext(suite, JobSettings(device="cpu", cache_dir=Path("unused")), keys)
    group = Group(suite.methods[0], suite.models[0], suite.datasets[0], suite.formats[0])
    batches = TrialBatches(context, trial_batch)
    return batches, group, keys


def _row(cell_id: str, trial: int, accuracy: float) -> TrialRow:
    return TrialRow(cell_id, trial, trial, accuracy, 0.0, 0.0, 0.0, 1, False, 0.0, (), {})


def _ready(keys: CellKeys, group: Group, clean: float) -> CellsReady:
    fault = keys.suite.faults[0]
    records = [CellRecord(keys.cell_id(group, fault, ber), "none", "test-mlp", "synthetic", "fp32", "bitflip", ber, 3,
                          "", "", "", "", 0, 0, "[]", 0, 0.0, 0.0, 0.0) for ber in (0.0, 1e-2)]
    return CellsReady(tuple(records), _row(records[0].cell_id, 0, clean))


def test_rows_are_written_in_trial_order_once_the_cells_record_is_known() -> None:
    batches, group, keys = _batches(3, trials=6)
    batches.add(group, {})
    jobs = batches.next_round()
    assert [job.describe for job in jobs] == [True, False]  # six trials in jobs of three; the first describes
    assert [trial for trial, _ in jobs[1].batches["bitflip"]] == [3, 4, 5]  # type: ignore[index]
    cell_id = keys.cell_id(group, keys.suite.faults[0], 1e-2)
    assert batches.offer(_row(cell_id, 3, 50.0)) == []  # before its record, and before trials 0..2
    assert [row.trial for row in batches.ready(_ready(keys, group, 90.0))] == []
    assert [row.trial for row in batches.offer(_row(cell_id, 0, 50.0))] == [0]
    assert batches.offer(_row(cell_id, 2, 50.0)) == []
    assert [row.trial for row in batches.offer(_row(cell_id, 1, 50.0))] == [1, 2, 3]
    assert batches.offer(_row(cell_id, 1, 50.0)) == []  # a retried job's row, already written
    assert batches.discarded == 1


def test_rows_past_a_cells_stopping_point_are_dropped() -> None:
    batches, group, keys = _batches(8, trials=2, max_trials=50, ci_halfwidth=45.0)
    batches.add(group, {})
    batches.next_round()
    batches.ready(_ready(keys, group, 90.0))
    cell_id = keys.cell_id(group, keys.suite.faults[0], 1e-2)
    written = [row for trial in range(2) for row in batches.offer(_row(cell_id, trial, 80.0 + trial))]
    assert len(written) == 2
    jobs = batches.next_round()  # two trials at 80 and 81 meet a half-width of 45 points: nothing more
    assert jobs == []
    batches, group, keys = _batches(8, trials=2, max_trials=50, ci_halfwidth=1.0)
    batches.add(group, {})
    batches.next_round()
    batches.ready(_ready(keys, group, 90.0))
    written = [row for trial in range(2) for row in batches.offer(_row(cell_id, trial, 100.0 * trial))]
    (job,) = batches.next_round()  # 0 and 100 are far apart: the next batch, of at most eight trials
    assert [trial for trial, _ in job.batches["bitflip"]] == list(range(2, 10))  # type: ignore[index]
    assert batches.offer(_row(cell_id, 9, 50.0)) == []


def test_a_failed_cell_gets_no_more_trials_and_its_rows_are_dropped() -> None:
    batches, group, keys = _batches(2, trials=4)
    batches.add(group, {})
    batches.next_round()
    cell_id = keys.cell_id(group, keys.suite.faults[0], 1e-2)
    batches.offer(_row(cell_id, 1, 50.0))
    batches.failed([CellFailure(cell_id, "none", "test-mlp", "synthetic", "fp32", "bitflip", 1e-2, "campaign",
                                "resbench", "boom")])
    assert batches.discarded == 1
    assert batches.offer(_row(cell_id, 0, 50.0)) == []
    assert batches.next_round() == []
