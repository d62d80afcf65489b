"""The SQLite store: transactional rows, skipping completed trials, frames for reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from resbench.errors import UsageError
from resbench.store import CellRecord, ResultStore, TrialRow

PROVENANCE = {
    "suite": "t",
    "suite_version": 1,
    "started": "2026-01-01T00:00:00",
    "resbench_version": "0",
    "plugins": {"p": "1"},
    "git_revision": None,
    "torch_version": "x",
    "device": "cpu",
    "command": "test",
}


def make_cell(cell_id: str, method: str = "none", ber: float = 1e-5, **overrides: object) -> CellRecord:
    values: dict[str, object] = {
        "cell_id": cell_id, "method": method, "model": "m", "dataset": "d", "format": "fp32",
        "fault_model": "bitflip", "ber": ber, "seed": 0, "definition": "{}", "method_plugin": "p",
        "citation": "c", "notes": "", "stored_bits": 3200, "baseline_bits": 3200, "fault_space": "[]",
        "eval_samples": 10,
        "clean_eval_seconds": 1.0, "baseline_eval_seconds": 1.0, "prepare_seconds": 0.0,
        "chance_accuracy": 10.0,
    }
    values.update(overrides)
    return CellRecord(**values)  # type: ignore[arg-type]


def make_trial(cell_id: str, trial: int, accuracy: float, flips: int = 1) -> TrialRow:
    return TrialRow(cell_id, trial, trial, accuracy, 0.0, 0.0, 0.0, flips, False, 0.01, (flips,) + (0,) * 31,
                    {"fc.weight": flips} if flips else {})


def test_trials_round_trip_and_rerun_sees_completed_ones(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.sqlite"
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a"), run_id)
        store.add_trials([make_trial("a", 0, 90.0), make_trial("a", 1, 80.0)], run_id)
    with ResultStore(path) as store:
        assert store.trial_accuracies(["a", "b"]) == {"a": {0: 90.0, 1: 80.0}, "b": {}}
        frame = store.trials_frame()
        assert list(frame["accuracy"]) == [90.0, 80.0]
        assert set(frame["method"]) == {"none"}
        assert store.runs_frame()["device"].tolist() == ["cpu"]


def test_a_failing_batch_writes_nothing(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a"), run_id)
        bad = TrialRow("a", 1, 0, None, 0.0, 0.0, 0.0, 0, False, 0.0, (), {})  # type: ignore[arg-type]
        with pytest.raises(sqlite3.IntegrityError):
            store.add_trials([make_trial("a", 0, 90.0), bad], run_id)
        assert store.trial_accuracies(["a"]) == {"a": {}}


def test_cell_keeps_its_first_definition(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a", prepare_seconds=1.0), run_id)
        store.upsert_cell(make_cell("a", prepare_seconds=9.0), run_id)
        assert store.cells_frame()["prepare_seconds"].tolist() == [1.0]


def test_missing_or_foreign_store_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results store"):
        ResultStore.open_existing(tmp_path / "absent.sqlite")
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_text("this is not a database at all, just text " * 50)
    with pytest.raises(UsageError, match="not a resbench store"):
        ResultStore(foreign)
