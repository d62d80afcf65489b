"""Sanity guards: a broken prepared method fails its cells with one clear line, never a quiet row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from resbench.cli import main
from resbench.config import ComponentSpec
from resbench.methods import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    Method,
    PrepareContext,
    Recipe,
    RecipeOptions,
    WeightTransform,
    bound_shape,
)
from resbench.methods.guards import non_finite_tensors
from resbench.methods.transforms import TransformMethod
from resbench.options import NoOptions
from resbench.run.store import ResultStore

SUITE = """\
version: 1
datasets: [{name: synthetic, train_size: 256, test_size: 64, separation: 3.0}]
models: [test-mlp]
formats: [fp32]
bers: [1.0e-3]
trials: 2
training: {epochs: 2}
"""


def _run(folder: Path, methods: str, suite_extra: str = "") -> int:
    folder.mkdir(parents=True, exist_ok=True)
    suite = folder / "suite.yaml"
    suite.write_text(SUITE + suite_extra, encoding="utf-8")
    return main(["run", str(suite), "--methods", methods, "--store", str(folder / "r.sqlite"), "--cache-dir",
                 str(folder / "cache"), "--report-dir", str(folder / "reports"), "--no-progress"])


def _clean_accuracies(store: Path) -> dict[str, float]:
    with ResultStore.open_existing(store) as opened:
        trials = opened.trials_frame()
    clean = trials[trials["ber"] == 0]
    return {str(method): float(accuracy) for method, accuracy in zip(clean["method"], clean["accuracy"], strict=True)}


# -- the b * tanh(a / b) scheme of the plugin guide, composed with SAF ---------------------------------------


class TanhBounded(BoundedActivation):
    """``b * tanh(a / b)``: NaN at the initial bound +inf if the module computed it there."""

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(activated / self.bound)


class TanhScheme(ActivationScheme):
    """Soft saturation at the bound."""

    def build(self, site: CallSiteSpec) -> BoundedActivation:
        return TanhBounded(site.activation, bound_shape(site.output_shape, site.granularity))


class TanhRecipeOptions(RecipeOptions):
    """The tanh scheme with profiled bounds."""

    activation: ComponentSpec = ComponentSpec(name="tanh-bound")
    optimizer: ComponentSpec = ComponentSpec(name="profile-max")


class TanhRecipe(Recipe):
    """The tanh scheme, layer-wise profiled bounds."""

    Options = TanhRecipeOptions


def _register_tanh(register: Any) -> None:
    register("tanh-bound", TanhScheme)


def _register_tanh_recipe(register: Any) -> None:
    register("tanh-recipe", TanhRecipe)


def test_a_tanh_scheme_composed_with_saf_trains_and_is_never_a_chance_row(
    add_plugin: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_activation_schemes=_register_tanh, register_methods=_register_tanh_recipe)
    status = _run(tmp_path, "none,saf-tanh+tanh-recipe")
    error = capsys.readouterr().err
    clean = _clean_accuracies(tmp_path / "r.sqlite")
    if status != 0:  # a failed cell is acceptable only with a line that names the plugin and the phase
        assert "cells failed" in error and "plugin" in error
        assert "saf-tanh+tanh-recipe" not in clean
        return
    assert clean["none"] > 50  # the synthetic classes separate: chance is far below
    assert clean["saf-tanh+tanh-recipe"] >= clean["none"] - 5


# -- non-finite stored values --------------------------------------------------------------------------------


class PoisonedReadBack(nn.Module):
    """Stores the weight as it is; its transform's fit writes a NaN into the stored values."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.clone()


class PoisoningTransform(WeightTransform):
    """A transform whose fit leaves a NaN in one stored weight."""

    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        return PoisonedReadBack()

    def fit(self, model: nn.Module, layers: list[str], context: PrepareContext) -> dict[str, Any]:
        layer = model.get_submodule(layers[0])
        with torch.no_grad():
            layer.parametrizations.weight.original.view(-1)[0] = float("nan")
        return {}


class Poisoning(TransformMethod):
    """The poisoning transform as a method."""

    Options = NoOptions

    def transform_spec(self) -> ComponentSpec:
        return ComponentSpec(name="poisoning")


def test_a_nan_left_by_a_transform_fails_the_cell_naming_plugin_item_and_phase(
    add_plugin: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_weight_transforms=lambda register: register("poisoning", PoisoningTransform),
               register_methods=lambda register: register("poisoned", Poisoning))
    assert _run(tmp_path, "none,poisoned") == 1
    error = capsys.readouterr().err
    assert "plugin 'resbench_test_plugin', weight transform 'poisoning', in fit: left non-finite values in" in error
    assert "1 of" in error and "NaN" in error
    assert "poisoned" not in _clean_accuracies(tmp_path / "r.sqlite")


def test_non_finite_tensors_names_stored_and_read_back_weights() -> None:
    layer = nn.Linear(2, 2)
    parametrize.register_parametrization(layer, "weight", _Halving())
    model = nn.Sequential(layer)
    assert non_finite_tensors(model) == []
    with torch.no_grad():
        model[0].parametrizations.weight.original.fill_(float("inf"))
    found = non_finite_tensors(model)
    assert found[0].startswith("0.parametrizations.weight.original: 4 of 4 values non-finite (4 +inf)")
    assert any(item.startswith("0.weight (read back)") for item in found)
    assert non_finite_tensors(model, allow_unset=True) == []


class _Halving(nn.Module):
    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored / 2


# -- clean accuracy far below the baseline's -----------------------------------------------------------------


class Zeroing(Method):
    """Zeroes every weight while fitting: clean accuracy falls to chance."""

    changes = frozenset({"weights"})

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        return {}


def test_a_clean_accuracy_far_below_the_baseline_fails_the_cell_unless_accepted(
    add_plugin: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_methods=lambda register: register("zeroing", Zeroing))
    assert _run(tmp_path / "refused", "none,zeroing") == 1
    error = capsys.readouterr().err
    assert "method 'zeroing', in clean accuracy check: clean accuracy" in error
    assert "points below the unprotected model's" in error and "guards.accept_clean_drop" in error
    assert set(_clean_accuracies(tmp_path / "refused" / "r.sqlite")) == {"none"}
    assert _run(tmp_path / "accepted", "none,zeroing", "guards: {accept_clean_drop: [zeroing]}\n") == 0
    assert set(_clean_accuracies(tmp_path / "accepted" / "r.sqlite")) == {"none", "zeroing"}
