"""A third-party method appears in runs, tables and plots with no change to the runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from resbench import plugins
from resbench.config import parse_suite
from resbench.engine.faultspace import mark_stored
from resbench.methods import Method, PrepareContext
from resbench.report.tables import build_leaderboard
from resbench.run.runner import RunSettings, run_suite
from resbench.run.store import ResultStore


class BoundedReLU(nn.Module):
    """ReLU clamped to a stored, learnable bound."""

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.tensor(bound))
        mark_stored(self, "bound")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.bound)


class ClampFirstLayer(Method):
    """Clamp the first ReLU of test-mlp to a bound fitted on the training split."""

    citation = "test method"
    fits = 0

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        model.relu = BoundedReLU(100.0)  # type: ignore[assignment]
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        ClampFirstLayer.fits += 1
        images = torch.stack([context.train[index][0] for index in range(32)])
        with torch.no_grad():
            model.relu.bound.fill_(float(torch.relu(model.fc1(images.flatten(1))).max()))  # type: ignore[union-attr]
        return {"bound": model.relu.bound.item()}  # type: ignore[union-attr]


@pytest.fixture
def with_test_method(monkeypatch: pytest.MonkeyPatch) -> None:
    module = ModuleType("resbench_contract_method")

    @plugins.hookimpl
    def register_methods(register: Any) -> None:
        register("clamp-first", ClampFirstLayer)

    module.register_methods = register_methods  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
    plugins.reset_registries()


def test_plugin_method_runs_is_cached_and_reported(with_test_method: None, tmp_path: Path) -> None:
    suite = parse_suite({
        "datasets": [{"name": "synthetic", "train_size": 128, "test_size": 32, "separation": 3.0}],
        "models": ["test-mlp"], "methods": ["none", "clamp-first"], "formats": ["fp32"], "faults": ["bitflip"],
        "bers": [1e-3, 1e-2], "trials": 3, "training": {"epochs": 1},
    }, "test")
    settings = RunSettings(store=tmp_path / "r.sqlite", device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                           progress=False)
    ClampFirstLayer.fits = 0
    run_suite(suite, settings)
    run_suite(suite, RunSettings(**{**settings.__dict__, "store": tmp_path / "other.sqlite"}))
    assert ClampFirstLayer.fits == 1  # the second run loaded the fitted bound from the artifact cache
    with ResultStore(tmp_path / "r.sqlite") as store:
        [table] = build_leaderboard(store.cells_frame(), store.trials_frame())
        trials = store.trials_frame()
    rows = table.rows.set_index("method")
    assert set(rows.index) == {"none", "clamp-first"}
    # one stored fp32 bound on top of test-mlp's 64*16+16 + 16*16+16 + 16*10+10 weights and biases
    assert rows.loc["clamp-first", "added_bits_pct"] == pytest.approx(100 * 32 / (32 * 1482))
    assert rows.loc["clamp-first", "citation"] == "test method"
    with ResultStore(tmp_path / "r.sqlite") as store:
        spaces = store.cells_frame().groupby("method")["fault_space"].first()
    assert [entry["name"] for entry in json.loads(spaces["clamp-first"])][-1] == "relu.bound"
    assert "relu.bound" not in spaces["none"]
    # common random numbers: in every trial, both methods saw the same flips in the shared tensors
    faulty = trials[trials["ber"] > 0]
    by_method = {method: group.sort_values(["ber", "trial"]) for method, group in faulty.groupby("method")}
    assert list(by_method["none"]["seed"]) == list(by_method["clamp-first"]["seed"])
    for (_, plain), (_, clamped) in zip(by_method["none"].iterrows(), by_method["clamp-first"].iterrows(),
                                        strict=True):
        clamped_counts = json.loads(clamped["flips_per_tensor"])
        shared = {name: count for name, count in clamped_counts.items() if name != "relu.bound"}
        assert shared == json.loads(plain["flips_per_tensor"])
