"""Helpers shared by the tests: store records, a store of given trial accuracies, a tiny suite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from resbench.engine.faults import FaultSites
from resbench.engine.injection import Injector
from resbench.run.store import CellRecord, ResultStore, TrialRow

__all__ = [
    "CURVES",
    "MINIMAL_SUITE",
    "PROVENANCE",
    "ROW_COLUMNS",
    "TINY_SUITE",
    "accuracy_under_faults",
    "make_cell",
    "make_trial",
    "one_line_error",
    "rows",
    "small_store",
    "store_with",
    "tiny_deployment",
]

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


#: Two methods' clean accuracy and trial accuracies per BER: a small leaderboard with a clear order.
CURVES = {
    "none": (99.0, {1e-6: [99.0, 98.0, 99.0], 1e-5: [90.0, 80.0, 70.0], 1e-4: [10.0, 10.0, 10.0]}),
    "guard": (98.0, {1e-6: [98.0, 98.0, 98.0], 1e-5: [97.5, 97.0, 97.5], 1e-4: [60.0, 50.0, 40.0]}),
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


#: Every column of a trial row that the computation determines (``seconds`` and ``run_id`` do not).
ROW_COLUMNS = ("cell_id, trial, seed, accuracy, sdc_rate, critical_sdc_rate, due_rate, flips, reused, "
               "flips_per_bit, flips_per_tensor, stratum")


def rows(store: Path) -> pd.DataFrame:
    """The store's trial rows, ordered, without timings (read-only, so a running writer is undisturbed)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        frame = pd.read_sql_query(f"SELECT {ROW_COLUMNS} FROM trials ORDER BY cell_id, trial", connection)
    connection.close()
    return frame


def store_with(path: Path, curves: dict[str, tuple[float, dict[float, list[float]]]], seed: int = 0,
                flips: int = 1, target: str = "weights", **cell_fields: object) -> None:
    """Cells of one setup: per method a clean row and the given trial accuracies per BER (faults in
    ``target``: weights or activations)."""
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        for method, (clean, curve) in curves.items():
            for ber, accuracies in [(0.0, [clean]), *curve.items()]:
                cell_id = f"{method}-{ber}-{seed}"
                fields = {} if target == "weights" else {"fault_target": target}
                definition = json.dumps({"method": method, "ber": ber, "seed": seed, **fields})
                store.upsert_cell(make_cell(cell_id, method, ber, seed=seed, definition=definition, **cell_fields),
                                  run_id)
                store.add_trials([make_trial(cell_id, i, a, flips=0 if ber == 0 else flips)
                                  for i, a in enumerate(accuracies)], run_id)
        store.finish_run(run_id)


#: A tiny suite file: one synthetic dataset, the test MLP, fp16, a few trials.
TINY_SUITE = """\
version: 1
name: tiny-cli
datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]
models: [test-mlp]
methods: [none]
formats: [fp16]
faults: [bitflip]
bers: [1.0e-3, 1.0e-2]
trials: 3
training: {epochs: 1}
"""


#: The smallest suite a method runs in: one synthetic dataset, the test MLP, fp32, one BER, two trials.
MINIMAL_SUITE = """\
version: 1
datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]
models: [test-mlp]
formats: [fp32]
bers: [1.0e-3]
trials: 2
training: {epochs: 1}
"""


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


def small_store(folder: Path) -> Path:
    """A small store with two methods over three BERs."""
    path = folder / "r.sqlite"
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        for method, (clean, curve) in CURVES.items():
            store.upsert_cell(make_cell(f"{method}-0", method, 0.0), run_id)
            store.add_trials([make_trial(f"{method}-0", 0, clean, flips=0)], run_id)
            for ber, accuracies in curve.items():
                store.upsert_cell(make_cell(f"{method}-{ber}", method, ber), run_id)
                store.add_trials([make_trial(f"{method}-{ber}", i, a) for i, a in enumerate(accuracies)], run_id)
    return path


def tiny_deployment(tmp_path: Path) -> tuple[nn.Module, Injector, Any, torch.Tensor, float]:
    """The test MLP trained briefly on synthetic data, deployed in fp32: model, injector, evaluation data,
    fault-free predictions and clean accuracy."""
    from resbench.cache import ArtifactCache
    from resbench.datasets import load_dataset
    from resbench.engine.evaluation import load_evaluation_data, predict_logits, predictions_of, trial_metrics
    from resbench.engine.formats import resolve_format
    from resbench.training import load_or_train_baseline

    splits = load_dataset("synthetic", {"train_size": 256, "test_size": 128, "separation": 3.0})
    model = load_or_train_baseline("test-mlp", {}, splits, seed=0, cache=ArtifactCache(tmp_path), device="cpu",
                                   training_options={"epochs": 2}, progress=False).model.eval()
    data = load_evaluation_data(splits.test, torch.device("cpu"), 1024)
    injector = Injector.deploy(model, resolve_format("fp32"))
    logits = predict_logits(model, data)
    predictions, _ = predictions_of(logits)
    return model, injector, data, predictions, trial_metrics(logits, data.labels, predictions).accuracy


def accuracy_under_faults(model: nn.Module, injector: Injector, data: Any, predictions: torch.Tensor,
                          clean: float) -> Callable[[FaultSites], float]:
    """Accuracy of a deployment (see :func:`tiny_deployment`) under one pattern of fault sites: injected,
    evaluated, restored; a pattern without a flip keeps the clean accuracy."""
    from resbench.engine.evaluation import predict_logits, trial_metrics

    def accuracy(sites: FaultSites) -> float:
        if sites.num_flips == 0:
            return clean
        with injector.injected(sites):
            logits = predict_logits(model, data)
        return trial_metrics(logits, data.labels, predictions).accuracy

    return accuracy
