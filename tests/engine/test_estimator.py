"""The conditional-on-a-flip design: exact weights, never a zero-flip trial, unbiased against brute force,
and methods paired on identical fault sites."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from resbench import plugins
from resbench.config import parse_suite
from resbench.engine.estimator import MIN_HIT_PROBABILITY, CellDesign, sample_given_flips, zero_flip_probability
from resbench.engine.faults import resolve_fault_model
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.methods import Method, PrepareContext
from resbench.report.tables import build_leaderboard
from resbench.run.runner import RunSettings, run_suite
from resbench.run.store import ResultStore
from resbench.seeds import derive_seed
from tests.helpers import accuracy_under_faults, tiny_deployment

LAYOUT = FaultSpaceLayout(("a", "b"), (3000, 40), 32)
BITS = LAYOUT.total_bits


def test_zero_flip_probability_is_the_binomial_zero_term() -> None:
    assert zero_flip_probability(1000, 1e-3) == pytest.approx((1 - 1e-3) ** 1000)
    assert zero_flip_probability(10**9, 1e-12) == pytest.approx(math.exp(-1e-3))
    assert zero_flip_probability(5, 1.0) == 0.0


@pytest.mark.parametrize("ber", [2e-6, 1e-9], ids=["rejection", "truncated-binomial"])
def test_conditional_sites_always_flip_and_follow_the_truncated_binomial(ber: float) -> None:
    faults = resolve_fault_model("bitflip")
    counts = np.array([sample_given_flips(faults, LAYOUT, ber, derive_seed("k", t)).num_flips for t in range(3000)])
    assert counts.min() >= 1
    expected = BITS * ber / (1 - zero_flip_probability(BITS, ber))  # E[K | K >= 1]
    variance = BITS * ber * (1 - ber) / (1 - zero_flip_probability(BITS, ber))  # bound on Var[K | K >= 1]
    assert abs(counts.mean() - expected) < 5 * math.sqrt(variance / counts.size)
    if ber < 1e-6:
        assert 1 - zero_flip_probability(BITS, ber) < MIN_HIT_PROBABILITY  # the other path was taken


def test_conditional_sites_are_uniform_over_the_bits() -> None:
    faults = resolve_fault_model("bitflip")
    sites = [sample_given_flips(faults, LAYOUT, 2e-6, derive_seed("u", t)) for t in range(4000)]
    elements = np.concatenate([s.elements for s in sites])
    bits = np.concatenate([s.bits for s in sites])
    assert abs(np.mean(elements < 3000) - 3000 / 3040) < 0.01
    assert np.bincount(bits, minlength=32).min() > 0.6 * bits.size / 32


def test_a_larger_fault_space_shares_the_sites_of_its_prefix() -> None:
    """A method that adds a small stored tensor sees the same sites in the model's tensors in almost every
    trial (common random numbers across methods)."""
    faults = resolve_fault_model("bitflip")
    small = FaultSpaceLayout(("a",), (3000,), 32)
    same = 0
    for trial in range(300):
        seed = derive_seed("p", trial)
        one, two = sample_given_flips(faults, small, 5e-6, seed), sample_given_flips(faults, LAYOUT, 5e-6, seed)
        inside = two.elements < 3000
        same += np.array_equal(one.elements, two.elements[inside]) and np.array_equal(one.bits, two.bits[inside])
    assert same >= 0.95 * 300


def test_design_weights_trials_exactly() -> None:
    design = CellDesign(zero_flip=0.8, clean=98.0)
    assert design.values(np.array([50.0])) == pytest.approx([0.8 * 98 + 0.2 * 50])
    assert design.bounds == pytest.approx((78.4, 98.4))
    mean, low, high = design.estimate([98.0] * 20)
    assert mean == pytest.approx(98.0) and 78.4 <= low < 98.0 < high <= 98.4


def test_estimator_agrees_with_a_brute_force_bernoulli_campaign(tmp_path: Path) -> None:
    model, injector, data, predictions, clean = tiny_deployment(tmp_path)
    faults = resolve_fault_model("bitflip")
    ber = 3e-5
    layout = injector.layout

    accuracy = accuracy_under_faults(model, injector, data, predictions, clean)

    brute = np.array([accuracy(faults.sample(layout, [ber], derive_seed("brute", t))[0]) for t in range(1500)])
    conditional = [accuracy(sample_given_flips(faults, layout, ber, derive_seed("cond", t))) for t in range(200)]
    design = CellDesign(zero_flip_probability(layout.total_bits, ber), clean)
    assert 0.2 < design.zero_flip < 0.8
    mean, low, high = design.estimate(conditional)
    brute_mean, brute_low, brute_high = CellDesign().estimate(brute.tolist())
    assert low <= brute_mean <= high
    assert brute_low <= mean <= brute_high


class _ClampOutputs(Method):
    """Clamps the logits: no stored tensor, so its fault space equals the model's."""

    citation = "test"

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        return nn.Sequential(model, nn.Hardtanh(-3.0, 3.0))


def _clamp_plugin() -> ModuleType:
    module = ModuleType("resbench_test_clamp", "A method for the pairing test.")

    @plugins.hookimpl
    def register_methods(register: Any) -> None:
        register("test-clamp", _ClampOutputs)

    module.register_methods = register_methods  # type: ignore[attr-defined]
    return module


def test_paired_differences_use_identical_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resbench_test_clamp", _clamp_plugin())
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "resbench_test_clamp"))
    plugins.reset_registries()
    suite = parse_suite({
        "datasets": [{"name": "synthetic", "train_size": 256, "test_size": 64, "separation": 3.0}],
        "models": ["test-mlp"], "methods": ["none", "test-clamp"], "formats": ["fp32"], "faults": ["bitflip"],
        "bers": [1e-5, 1e-4], "trials": 12, "training": {"epochs": 2},
    }, "test")
    store = tmp_path / "r.sqlite"
    run_suite(suite, RunSettings(store=store, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                                 progress=False))
    with sqlite3.connect(store) as connection:
        trials = pd.read_sql_query(
            "SELECT c.method, c.ber, c.sampling, c.definition, t.trial, t.accuracy, t.flips, t.effective_flips, "
            "t.flips_per_bit, t.flips_per_tensor FROM trials t JOIN cells c USING (cell_id) WHERE c.ber > 0",
            connection)
    assert set(trials["sampling"]) == {"conditional"}
    assert (trials["flips"] >= 1).all() and (trials["effective_flips"] == trials["flips"]).all()
    assert all(json.loads(text)["sampling"] == "conditional" for text in trials["definition"])
    joined = trials[trials["method"] == "none"].merge(trials[trials["method"] == "test-clamp"],
                                                      on=["ber", "trial"], suffixes=("_none", "_clamp"))
    assert len(joined) == 2 * 12
    assert (joined["flips_per_bit_none"] == joined["flips_per_bit_clamp"]).all()
    # The protected model wraps the baseline (tensor names gain a prefix); the counts per tensor agree.
    for none_text, clamp_text in zip(joined["flips_per_tensor_none"], joined["flips_per_tensor_clamp"], strict=True):
        clamp_counts = {name.removeprefix("0."): count for name, count in json.loads(clamp_text).items()}
        assert json.loads(none_text) == clamp_counts
    with ResultStore(store) as results:
        [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
    row = table.rows.set_index("method").loc["test-clamp"]
    with ResultStore(store) as results:
        cells = results.cells_frame()
    for ber, pairs in joined.groupby("ber"):
        zero_flip = float(cells[(cells["ber"] == ber) & (cells["method"] == "none")]["zero_flip_probability"].iloc[0])
        expected = (1 - zero_flip) * float((pairs["accuracy_clamp"] - pairs["accuracy_none"]).mean())
        assert row[f"diff@{ber:.0e}"] == pytest.approx(expected, abs=1e-9)
        assert row[f"diff_low@{ber:.0e}"] <= row[f"diff@{ber:.0e}"] <= row[f"diff_high@{ber:.0e}"]


@pytest.mark.slow
def test_coverage_simulation_on_a_small_model(tmp_path: Path) -> None:
    """The benchmark's coverage simulation: the 95% intervals of the conditional and critical-bit designs
    cover the brute-force reference in at least 93% of repetitions, and the estimates are unbiased."""
    import subprocess

    output = tmp_path / "coverage.json"
    script = Path(__file__).parents[2] / "benchmarks" / "estimator_coverage.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--bers", "2e-5", "--repetitions", "150", "--reference", "8000",
         "--cache-dir", str(tmp_path / "cache"), "--json", str(output)],
        capture_output=True, text=True, check=True,
    )
    [figures] = json.loads(output.read_text())["bers"]
    print(completed.stdout)
    for design in ("conditional", "critical-bits"):
        assert figures[f"{design}_coverage"] >= 0.93
        assert abs(figures[f"{design}_bias_z"]) < 4
    assert figures["critical-bits_mean_width"] < figures["conditional_mean_width"] < figures["bernoulli_mean_width"]
