"""Every registered method on every tiny test model: prepares, deploys, runs and reaches the leaderboard.

A new method joins this sweep by registering; one whose options have no defaults needs an entry in
``EXAMPLE_OPTIONS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from resbench import plugins
from resbench.config import parse_suite
from resbench.report.tables import build_leaderboard
from resbench.run.runner import RunSettings, run_suite
from resbench.run.store import ResultStore

EXAMPLE_OPTIONS: dict[str, dict[str, Any]] = {
    "recipe": {"activation": "fitrelu", "optimizer": "profile-max", "granularity": "channel"},
    # Smaller searches than the defaults, to keep the sweep quick; the method's code paths are the same.
    "clipact": {"optimizer": {"name": "ftclipact-search", "draws": 1, "min_rounds": 1, "max_rounds": 2}},
    "proact": {"optimizer": {"name": "proact-progressive", "decays": [0.4, 0.004]}},
    # One epoch of SAF fine-tuning instead of three.
    **{f"saf-{function}": {"epochs": 1} for function in ("tanh", "arctan", "softsign", "hardtanh")},
    # One epoch of fault-aware fine-tuning instead of five (clip) or ten (randbet).
    "clip": {"epochs": 1},
    "randbet": {"epochs": 1},
    "transform": {"transform": "weight-scaling"},
    "compose": {"first": {"name": "saf-tanh", "epochs": 1}, "second": "fitact"},
}
TEST_MODELS = ["test-mlp", "test-cnn"]


def _method_names() -> list[str]:
    plugins.reset_registries()
    try:
        return plugins.get_registries().methods.names()
    finally:
        plugins.reset_registries()


def _spec(name: str) -> dict[str, Any]:
    entry = plugins.get_registries().methods.get(name)
    required = [key for key, field in entry.options.model_fields.items() if field.is_required()]
    if required:
        assert name in EXAMPLE_OPTIONS, f"method {name!r} has required options {required}: add an example"
    return {"name": name, **EXAMPLE_OPTIONS.get(name, {})}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact cache for the sweep: each test model's baseline is trained once."""
    return tmp_path_factory.mktemp("sweep-cache")


@pytest.mark.parametrize("method", _method_names())
def test_method_runs_on_every_test_model(method: str, tmp_path: Path, shared_cache: Path) -> None:
    suite = parse_suite({
        "datasets": [{"name": "synthetic", "train_size": 192, "test_size": 48, "separation": 3.0}],
        "models": TEST_MODELS, "methods": ["none"] if method == "none" else ["none", _spec(method)],
        "formats": ["fp32", "q15.16"],
        "faults": ["bitflip"], "bers": [1e-4, 1e-2], "trials": 2, "training": {"epochs": 2},
        "guards": {"max_clean_drop": 100},  # shortened searches on 48 test images: plumbing, not quality
    }, "sweep")
    settings = RunSettings(store=tmp_path / "r.sqlite", device=torch.device("cpu"), cache_dir=shared_cache,
                           progress=False)
    summary = run_suite(suite, settings)
    methods = 1 if method == "none" else 2
    assert summary.trials_run == len(TEST_MODELS) * 2 * methods * 2 * 2  # models, formats, methods, BERs, trials
    with ResultStore(tmp_path / "r.sqlite") as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    tables = build_leaderboard(cells, trials)
    assert len(tables) == len(TEST_MODELS) * 2
    for table in tables:
        assert any(label.split("[")[0] == method for label in table.rows["method"])
    clean = trials[trials["ber"] == 0]
    assert clean["accuracy"].between(0, 100).all() and (clean["due_rate"] == 0).all()
    for _, cell in cells[cells["method"] == method].iterrows():
        kinds = {entry["kind"] for entry in json.loads(cell["fault_space"])}
        assert "model" in kinds
    again = run_suite(suite, RunSettings(**{**settings.__dict__}))
    assert again.trials_run == 0  # everything stored: the rerun prepares and runs nothing
