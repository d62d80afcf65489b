"""Fault-aware training (Stutz et al. 2021): weight clipping, random bit-error training, their composition.

Clipping keeps every stored weight and bias within [-w_max, w_max] after training; RandBET's perturbed pass
computes with exactly the values the fault engine gives its sampled bit errors, averages the clipped
perturbed gradient with the clean one, follows the loss curriculum, and draws its faults from seeds no
evaluation trial uses; composed with an activation method, both parts are prepared (and cached).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from resbench_plugins.clip import ClipOptions, WeightClipping
from resbench_plugins.randbet import RandBetOptions, RandomBitErrorTraining
from torch import nn

from resbench.cache import ArtifactCache
from resbench.cli import main
from resbench.config import parse_suite
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.faults import FaultModel, FaultSites, resolve_fault_model
from resbench.engine.faultspace import FaultSpace
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.methods import (
    BoundedActivation,
    Method,
    PrepareContext,
    bounded_sites,
    set_profiled_bounds,
    weight_layers,
)
from resbench.methods.fault_aware import (
    BitErrorCurriculum,
    RandomBitErrorStep,
    clipped_parameters,
    quantized_values,
)
from resbench.models import build_model
from resbench.plugins import get_registries
from resbench.run.runner import RunSettings, run_suite
from resbench.run.store import ResultStore
from resbench.seeds import TRAINING_SEED_OFFSET, derive_seed, training_seed
from resbench.training import load_or_train_baseline
from tests.helpers import TINY_SUITE, one_line_error, rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, DatasetSplits]:
    splits = load_dataset("synthetic", {"train_size": 256, "test_size": 64, "separation": 2.0,
                                        "validation_fraction": 0.25})
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    baseline = load_or_train_baseline("test-cnn", {}, splits, seed=0, cache=cache, device=torch.device("cpu"),
                                      training_options={"epochs": 3}, progress=False)
    return baseline.model.eval(), splits


def _context(splits: DatasetSplits, format_name: str = "uint8-asym") -> PrepareContext:
    return PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                          num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                          number_format=resolve_format(format_name), batch_size=64)


def _prepared(name: str, model: nn.Module, context: PrepareContext, **options: Any) -> tuple[nn.Module, Any]:
    method: Method = get_registries().methods.build(name, options).value
    built = method.build(copy.deepcopy(model), context)
    return built, method.fit(built, context)


# ---------------------------------------------------------------------------------------------------------
# Weight clipping
# ---------------------------------------------------------------------------------------------------------


def _edge(w_max: float) -> float:
    """The float32 value nearest ``w_max`` from below (float32 rounds 0.05 up)."""
    edge = torch.tensor(w_max)
    return float(torch.nextafter(edge, torch.tensor(0.0)) if float(edge) > w_max else edge)


@pytest.mark.parametrize("w_max", [0.05, 0.1])
def test_clipping_keeps_every_weight_and_bias_within_w_max_after_training(
        trained: tuple[nn.Module, DatasetSplits], w_max: float) -> None:
    model, splits = trained
    before = max(float(parameter.detach().abs().max()) for parameter in clipped_parameters(FaultSpace(model)))
    assert before > w_max  # the baseline has weights beyond the box: the projection has work to do
    prepared, metrics = _prepared("clip", model, _context(splits), w_max=w_max, epochs=2)
    clipped = clipped_parameters(FaultSpace(prepared))
    assert len(clipped) == 2 * len(weight_layers(model)) - 2  # weights and biases; two convolutions have no bias
    assert all(float(parameter.detach().abs().max()) <= w_max for parameter in clipped)
    assert any(float(parameter.detach().abs().max()) == _edge(w_max) for parameter in clipped)  # the box binds
    assert metrics["validation_accuracy"] >= 0 and "train_seconds" in metrics


def test_batch_norm_keeps_its_scale(trained: tuple[nn.Module, DatasetSplits]) -> None:
    """Only convolution and linear tensors are projected: batch norm absorbs the scale clipping takes."""
    model, splits = trained
    prepared, _ = _prepared("clip", model, _context(splits), w_max=0.05, epochs=1)
    norms = [module for module in prepared.modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and any(float(norm.weight.detach().abs().max()) > 0.05 for norm in norms)


def test_clipping_takes_every_stored_parameter_but_normalization() -> None:
    """On a transformer: attention projections, embeddings and tokens are clipped, layer norms are not."""
    model = build_model("vit-tiny", (1, 28, 28), 10)
    clipped = {id(tensor) for tensor in clipped_parameters(FaultSpace(model))}
    names = {name for name, parameter in model.named_parameters() if id(parameter) in clipped}
    assert any(name.endswith("in_proj_weight") for name in names)
    assert any(name.endswith("out_proj.weight") for name in names)
    assert not any(isinstance(module, nn.LayerNorm) and id(module.weight) in clipped for module in model.modules())
    stored = {stored.name for stored in FaultSpace(model).tensors}
    norms = {f"{name}.{attribute}" for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)
             for attribute in ("weight", "bias")}
    assert names == stored - norms


def test_zero_epochs_projects_without_training(trained: tuple[nn.Module, DatasetSplits]) -> None:
    model, splits = trained
    prepared, metrics = _prepared("clip", model, _context(splits), w_max=0.05, epochs=0)
    pairs = zip(clipped_parameters(FaultSpace(model)), clipped_parameters(FaultSpace(prepared)), strict=True)
    for original, clipped in pairs:
        assert torch.equal(clipped.detach(), original.detach().clamp(-_edge(0.05), _edge(0.05)))
    assert "train_seconds" not in metrics


# ---------------------------------------------------------------------------------------------------------
# RandBET: the perturbed pass, the averaged gradient, the curriculum
# ---------------------------------------------------------------------------------------------------------


def _linear_problem() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    layer = nn.Linear(12, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 12, generator=generator) * 0.3)
        layer.bias.copy_(torch.randn(5, generator=generator) * 0.1)
    images = torch.randn(16, 12, generator=generator)
    labels = torch.randint(0, 5, (16,), generator=generator)
    return layer, images, labels


def _recording(layer: nn.Linear) -> list[torch.Tensor]:
    """The weight ``layer`` computes with, at every forward pass."""
    seen: list[torch.Tensor] = []
    layer.register_forward_pre_hook(lambda module, _inputs: seen.append(module.weight.detach().clone()))
    return seen


def _sites(step: RandomBitErrorStep, seed: int) -> FaultSites:
    injector = Injector(step.space, step.number_format)
    injector.undeploy()
    return step.fault_model.sample(injector.layout, [step.ber], seed)[0]


def _gradients(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, images: torch.Tensor,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    loss = F.cross_entropy(F.linear(images, weight, bias), labels)
    gradient_weight, gradient_bias = torch.autograd.grad(loss, [weight, bias])
    return gradient_weight, gradient_bias


@pytest.mark.parametrize("format_name", ["uint8-asym", "int8", "uint4-asym"])
def test_the_perturbed_pass_computes_with_the_fault_engines_faulty_values(format_name: str) -> None:
    layer, images, labels = _linear_problem()
    seen = _recording(layer)
    space = FaultSpace(layer)
    number_format = resolve_format(format_name)
    step = RandomBitErrorStep(space, number_format, resolve_fault_model("bitflip"), 0.05, ("test",))
    clean_weight, _ = quantized_values(space, number_format)
    step(layer, images, labels, torch.optim.SGD(layer.parameters(), lr=0.0))
    assert len(seen) == 2 and len(step.seeds) == 1 and step.perturbed_steps == 1
    assert torch.equal(seen[0], clean_weight)  # the clean pass: the quantized weights
    sites = _sites(step, step.seeds[0])
    faulty_weight, _ = quantized_values(space, number_format, sites)
    assert torch.equal(seen[1], faulty_weight)  # the perturbed pass: exactly the engine's faulty values
    changed = int((seen[1] != seen[0]).sum())
    assert changed > 0  # 60 weights x 8 bits at BER 5%: faults were seen
    assert changed <= int(np.unique(sites.touched).size)


def test_the_update_averages_the_clean_and_the_clipped_perturbed_gradient() -> None:
    layer, images, labels = _linear_problem()
    space = FaultSpace(layer)
    number_format = resolve_format("uint8-asym")
    step = RandomBitErrorStep(space, number_format, resolve_fault_model("bitflip"), 0.05, ("test",),
                              gradient_clip=0.01)
    start_weight, start_bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    clean_weight, clean_bias = quantized_values(space, number_format)
    seed = training_seed("test", 0)  # the first step's
    faulty_weight, faulty_bias = quantized_values(space, number_format, _sites(step, seed))
    step(layer, images, labels, torch.optim.SGD(layer.parameters(), lr=1.0))
    assert step.seeds == [seed]
    clean = _gradients(layer, clean_weight, clean_bias, images, labels)
    perturbed = _gradients(layer, faulty_weight, faulty_bias, images, labels)
    assert any(float(gradient.abs().max()) > 0.01 for gradient in perturbed)  # the clip binds somewhere
    for start, after, clean_gradient, perturbed_gradient in zip(
            (start_weight, start_bias), (layer.weight, layer.bias), clean, perturbed, strict=True):
        expected = start - (clean_gradient + perturbed_gradient.clamp(-0.01, 0.01)) / 2
        torch.testing.assert_close(after.detach(), expected, rtol=1e-5, atol=1e-6)


def test_the_curriculum_follows_the_authors_thresholds() -> None:
    curriculum = BitErrorCurriculum(1.75)
    assert curriculum.admits(1.0, 2.0)
    assert not curriculum.admits(1.0, 2.6)  # mean 1.8 above the threshold
    assert not curriculum.admits(2.02, 0.0)  # clean loss not below 1.15 x 1.75
    assert curriculum.admits(2.0, 0.0)


def test_a_step_the_curriculum_refuses_has_no_perturbed_pass() -> None:
    layer, images, labels = _linear_problem()
    seen = _recording(layer)
    step = RandomBitErrorStep(FaultSpace(layer), resolve_format("uint8-asym"), resolve_fault_model("bitflip"), 0.05,
                              ("test",), curriculum=BitErrorCurriculum(threshold=1e-6))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    step(layer, images, labels, optimizer)  # the first step always has it; its losses refuse the next
    step(layer, images, labels, optimizer)
    assert len(seen) == 3 and step.steps == 2 and step.perturbed_steps == 1 and len(step.seeds) == 1


def test_randbet_clips_and_reports_its_training(trained: tuple[nn.Module, DatasetSplits]) -> None:
    model, splits = trained
    prepared, metrics = _prepared("randbet", model, _context(splits), epochs=1, w_max=0.08)
    assert all(float(parameter.detach().abs().max()) <= 0.08 for parameter in clipped_parameters(FaultSpace(prepared)))
    assert metrics["steps"] > 0 and 0 < metrics["perturbed_steps"] <= metrics["steps"]
    assert RandomBitErrorTraining.format_dependent and not WeightClipping.format_dependent


# ---------------------------------------------------------------------------------------------------------
# Seeds: training draws never replay an evaluation trial
# ---------------------------------------------------------------------------------------------------------


def test_training_seeds_lie_outside_the_range_of_derived_seeds() -> None:
    for parts in [(0,), ("randbet", 0, "uint8-asym", 12), (7, "lenet5", "mnist5k", "int8", "bitflip", 3)]:
        assert 0 <= derive_seed(*parts) < TRAINING_SEED_OFFSET <= training_seed(*parts) < 2**64
    assert training_seed("a", 1) != training_seed("a", 2)


def _suite(methods: list[Any]) -> Any:
    return parse_suite({
        "datasets": [{"name": "synthetic", "train_size": 192, "test_size": 48, "separation": 3.0}],
        "models": ["test-mlp"], "methods": methods, "formats": ["uint8-asym"], "faults": ["bitflip"],
        "bers": [1e-3, 1e-2], "trials": 3, "training": {"epochs": 2}, "guards": {"max_clean_drop": 100},
    }, "fault-aware")


def test_evaluation_trials_never_reuse_training_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: dict[str, list[int]] = {"training": [], "evaluation": []}
    phase = ["evaluation"]
    sample, fit = FaultModel.sample, RandomBitErrorTraining.fit

    def recorded_sample(self: FaultModel, layout: Any, bers: Any, seed: int) -> Any:
        drawn[phase[0]].append(seed)
        return sample(self, layout, bers, seed)

    def fit_in_training(self: RandomBitErrorTraining, *args: Any) -> Any:
        phase[0] = "training"
        try:
            return fit(self, *args)
        finally:
            phase[0] = "evaluation"

    monkeypatch.setattr(FaultModel, "sample", recorded_sample)
    monkeypatch.setattr(RandomBitErrorTraining, "fit", fit_in_training)
    settings = RunSettings(store=tmp_path / "r.sqlite", device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                           progress=False)
    summary = run_suite(_suite(["none", {"name": "randbet", "epochs": 1}]), settings)
    assert summary.trials_run == 2 * 2 * 3
    training, evaluation = set(drawn["training"]), set(drawn["evaluation"])
    assert len(training) == len(drawn["training"]) > 0 and evaluation
    assert not training & evaluation
    assert min(training) >= TRAINING_SEED_OFFSET > max(evaluation)


# ---------------------------------------------------------------------------------------------------------
# Composition with an activation method, and the cache
# ---------------------------------------------------------------------------------------------------------


def test_composition_with_an_activation_method_prepares_both_parts(trained: tuple[nn.Module, DatasetSplits]) -> None:
    model, splits = trained
    context = _context(splits)
    prepared, metrics = _prepared("compose", model, context, first={"name": "randbet", "epochs": 1}, second="ranger")
    assert set(metrics) == {"randbet", "ranger"}
    assert all(float(parameter.detach().abs().max()) <= 0.1 for parameter in clipped_parameters(FaultSpace(prepared)))
    bounds = {name: module.bound.detach().clone() for name, module in
              bounded_sites(prepared, list(_bounded_names(prepared))).items()}
    assert bounds and all(bool(torch.isfinite(bound).all()) for bound in bounds.values())
    # The bounds were profiled on the fine-tuned weights (weights fitted first): profiling again finds them.
    set_profiled_bounds(prepared, list(bounds), context, fraction=0.2, ceil=True)
    for name, module in bounded_sites(prepared, list(bounds)).items():
        assert torch.equal(module.bound.detach(), bounds[name])


def _bounded_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, BoundedActivation)]


def test_composed_preparation_is_cached_like_any_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fits: list[str] = []
    fit = RandomBitErrorTraining.fit

    def counted(self: RandomBitErrorTraining, *args: Any) -> Any:
        fits.append("randbet")
        return fit(self, *args)

    monkeypatch.setattr(RandomBitErrorTraining, "fit", counted)
    clipact = {"name": "clipact", "optimizer": {"name": "ftclipact-search", "draws": 1, "min_rounds": 1,
                                                "max_rounds": 1}}
    suite = _suite(["none", {"name": "compose", "first": {"name": "randbet", "epochs": 1}, "second": clipact}])
    first = run_suite(suite, RunSettings(store=tmp_path / "a.sqlite", device=torch.device("cpu"),
                                         cache_dir=tmp_path / "cache", progress=False))
    assert first.trials_run == 2 * 2 * 3 and fits == ["randbet"]
    again = run_suite(suite, RunSettings(store=tmp_path / "b.sqlite", device=torch.device("cpu"),
                                         cache_dir=tmp_path / "cache", progress=False))
    assert again.trials_run == 2 * 2 * 3 and fits == ["randbet"]  # a new store, the cached preparation


def test_presets_state_the_recipes_and_explicit_options_win() -> None:
    paper = RandBetOptions(preset="mlsys2021").training()
    assert (paper.optimizer, paper.lr, paper.momentum, paper.nesterov, paper.weight_decay, paper.batch_size,
            paper.epochs, paper.schedule) == ("sgd", 0.005, 0.9, True, 5e-4, 128, 140, "multistep")
    assert not paper.select_on_validation  # the last epoch, as the authors keep
    assert (ClipOptions().training().epochs, RandBetOptions().training().epochs) == (5, 10)
    assert ClipOptions(preset="mlsys2021", epochs=3, lr=0.01).training().epochs == 3
    assert ClipOptions(preset="mlsys2021", lr=0.01).training().lr == 0.01
    options = RandBetOptions()
    assert (options.p_train, options.w_max, options.gradient_clip, options.loss_threshold) == (0.01, 0.1, 0.05, 1.75)
    assert ClipOptions().w_max == 0.1


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["{name: randbet, p_train: 2}", "{name: clip, w_max: -1}",
                                    "{name: clip, preset: paper}", "{name: randbet, wmax: 0.1}"])
def test_bad_options_are_one_line_and_exit_2(method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(f"version: 1\nname: bad\ndatasets: [mnist5k]\nmodels: [lenet5]\nmethods: [{method}]\n"
                    "formats: [uint8-asym]\nfaults: [bitflip]\nbers: [1.0e-3]\ntrials: 2\n")
    assert main(["validate", str(path)]) == 2
    one_line_error(capsys)


def test_quantized_kernels_carry_the_fault_aware_methods(write_suite: Any, tmp_path: Path) -> None:
    """Weights read back as stored: a model on PyTorch's quantized kernels computes with what training left."""
    text = TINY_SUITE.replace("methods: [none]", "methods: [none, {name: clip, epochs: 1}, {name: randbet, epochs: 1}]")
    text = text.replace("formats: [fp16]", "formats: [{name: int8, engine: torch-ao, calibration_images: 32}]")
    store = tmp_path / "q.sqlite"
    status = main(["run", str(write_suite(text + "guards: {max_clean_drop: 100}\n")), "--store", str(store),
                   "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--report-dir", str(tmp_path / "reports")])
    assert status == 0
    with ResultStore(store) as stored:
        cells = stored.cells_frame()
    assert set(cells["method"]) == {"none", "clip[epochs=1]", "randbet[epochs=1]"}
    assert len(rows(store)) == 3 * (1 + 2 * 3)  # per method: the clean row and three trials at two BERs
