"""Weight transforms (SAF, weight scaling) and composed methods: what is stored, what is used, what faults do."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from resbench_plugins.saf import FUNCTIONS, saf_range
from resbench_plugins.wscale import FLOAT_T, default_t
from torch import nn
from torch.nn.utils import parametrize

from resbench.cache import ArtifactCache
from resbench.cli import main
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.evaluation import load_evaluation_data, predict_logits, predictions_of, trial_metrics
from resbench.engine.faults import FaultSites
from resbench.engine.faultspace import FaultSpace
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.methods import Method, PrepareContext, bounded_sites, transformed_layers, weight_layers
from resbench.models import build_model
from resbench.plugins import get_registries
from resbench.training import load_or_train_baseline

SAF_FUNCTIONS = sorted(FUNCTIONS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, DatasetSplits]:
    splits = load_dataset("synthetic", {"train_size": 256, "test_size": 64, "separation": 2.0,
                                        "validation_fraction": 0.25})
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    baseline = load_or_train_baseline("test-cnn", {}, splits, seed=0, cache=cache, device=torch.device("cpu"),
                                      training_options={"epochs": 3}, progress=False)
    return baseline.model.eval(), splits


def _context(splits: DatasetSplits, format_name: str = "fp32") -> PrepareContext:
    return PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                          num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                          number_format=resolve_format(format_name), batch_size=64)


def _method(name: str, **options: Any) -> Method:
    method: Method = get_registries().methods.build(name, options).value
    return method


def _built(name: str, model: nn.Module, splits: DatasetSplits, format_name: str = "fp32", **options: Any) -> nn.Module:
    """The method's structure on a copy of ``model`` (no fitting)."""
    return _method(name, **options).build(copy.deepcopy(model), _context(splits, format_name)).eval()


def _stored(layer: nn.Module) -> torch.Tensor:
    """The stored raw tensor of a transformed layer (a detached view: writes reach the layer)."""
    original = layer.parametrizations.weight.original
    assert isinstance(original, torch.Tensor)
    return original.detach()


def _flip(injector: Injector, name: str, index: int, bit: int) -> FaultSites:
    """The sites flipping ``bit`` of element ``index`` of the stored tensor ``name``."""
    start = injector.layout.offsets[injector.layout.names.index(name)]
    return FaultSites(injector.layout, np.array([start + index]), np.array([bit]), "flip", 1e-3)


# ---------------------------------------------------------------------------------------------------------
# SAF
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", SAF_FUNCTIONS)
def test_saf_layer_stores_raw_weight_and_computes_with_tau(function: str, trained: Any) -> None:
    model, splits = trained
    protected = _built(f"saf-{function}", model, splits)
    tau = FUNCTIONS[function][0]
    layers = dict(weight_layers(protected))
    assert transformed_layers(protected) == list(layers)
    conv = layers["stem.0"]
    raw = torch.randn_like(_stored(conv)) * 3  # well beyond the range of tau, where tau(W) differs from W
    with torch.no_grad():
        _stored(conv).copy_(raw)
    images = torch.randn(4, *splits.image_shape)
    expected = F.conv2d(images, tau(raw), conv.bias, conv.stride, conv.padding)
    assert torch.equal(conv(images), expected)
    assert not torch.equal(tau(raw), raw)
    assert not parametrize.is_parametrized(conv, "bias")  # biases stay raw


@pytest.mark.parametrize("function", SAF_FUNCTIONS)
def test_saf_adaptation_starts_at_the_trained_weights(function: str, trained: Any) -> None:
    model, splits = trained
    protected = _built(f"saf-{function}", model, splits)
    for (name, layer), (_, original) in zip(weight_layers(protected), weight_layers(model), strict=True):
        assert torch.allclose(layer.weight, original.weight, atol=1e-5), name
    images = torch.randn(8, *splits.image_shape)
    assert torch.allclose(protected(images), model(images), atol=1e-4)


@pytest.mark.parametrize("function", SAF_FUNCTIONS)
def test_flip_to_1e38_changes_the_used_weight_by_at_most_the_range_of_tau(function: str, trained: Any) -> None:
    model, splits = trained
    protected = _built(f"saf-{function}", model, splits)
    injector = Injector.deploy(protected, resolve_format("fp32"))
    conv = dict(weight_layers(protected))["stem.0"]
    raw = _stored(conv).detach().reshape(-1)
    index = int(torch.nonzero((raw.abs() < 1.0) & (raw != 0))[0])  # exponent < 127: bit 30 is clear
    before = conv.weight.detach().reshape(-1)[index].item()
    with injector.injected(_flip(injector, "stem.0.weight", index, 30)):
        flipped = _stored(conv).detach().reshape(-1)[index].item()
        after = conv.weight.detach().reshape(-1)[index].item()
    assert abs(flipped) > 1e30  # the stored raw weight became about 1e38 (or more)
    limit = torch.tensor(saf_range(function)).item()  # the range's bound in float32 (pi/2 rounds up)
    assert abs(after) <= limit
    assert abs(after - before) <= 2 * limit
    assert conv.weight.detach().reshape(-1)[index].item() == before  # restored bit-exactly

    unprotected = copy.deepcopy(model)
    plain = Injector.deploy(unprotected, resolve_format("fp32"))
    with plain.injected(_flip(plain, "stem.0.weight", index, 30)):
        assert abs(unprotected.get_submodule("stem.0").weight.reshape(-1)[index].item()) > 1e30


def test_nan_stored_weight_counts_as_wrong_and_due_not_repaired(trained: Any) -> None:
    model, splits = trained
    protected = _built("saf-tanh", model, splits)
    conv = dict(weight_layers(protected))["stem.0"]
    with torch.no_grad():
        _stored(conv).reshape(-1)[0] = 1.5  # exponent 127, mantissa not zero: flipping bit 30 gives NaN
    injector = Injector.deploy(protected, resolve_format("fp32"))
    data = load_evaluation_data(splits.test, torch.device("cpu"), 64)
    clean_predictions, _ = predictions_of(predict_logits(protected, data))
    with injector.injected(_flip(injector, "stem.0.weight", 0, 30)):
        assert math.isnan(_stored(conv).reshape(-1)[0].item())
        assert math.isnan(conv.weight.reshape(-1)[0].item())  # tau(NaN) is NaN: nothing repairs it
        metrics = trial_metrics(predict_logits(protected, data), data.labels, clean_predictions)
    assert metrics.due_rate == 100.0
    assert metrics.accuracy == 0.0
    assert metrics.sdc_rate == 0.0  # a DUE is not counted as a silent corruption


def test_saf_fit_adapts_and_scratch_retrains(trained: Any) -> None:
    model, splits = trained
    context = _context(splits)
    adapted = _method("saf-tanh", epochs=2)
    prepared = adapted.build(copy.deepcopy(model), context)
    start = {name: _stored(layer).detach().clone() for name, layer in weight_layers(prepared)}
    metrics = adapted.fit(prepared, context)
    assert metrics["validation_accuracy"] >= 0 and metrics["best_epoch"] in (1, 2)
    assert any(not torch.equal(start[name], _stored(layer)) for name, layer in weight_layers(prepared))

    scratch = _method("saf-tanh", preparation="scratch", epochs=1)
    retrained = scratch.build(copy.deepcopy(model), context)
    scratch.fit(retrained, context)
    # Re-initialized: the raw weights no longer follow tau^-1 of the trained ones.
    for (_, layer), (_, original) in zip(weight_layers(retrained), weight_layers(model), strict=True):
        assert not torch.allclose(layer.weight, original.weight, atol=1e-2)


# ---------------------------------------------------------------------------------------------------------
# Weight scaling
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["fp32", "fp16"])
@pytest.mark.parametrize("t", [None, 0.25, 4.0, 300.0])
def test_power_of_two_scaling_reproduces_unprotected_logits_exactly(format_name: str, t: float | None,
                                                                    trained: Any) -> None:
    model, splits = trained
    plain = copy.deepcopy(model)
    with torch.no_grad():  # keep every stored value, scaled or not, in the format's normal range
        for _, layer in weight_layers(plain):
            layer.weight[layer.weight.abs() < 2.0**-8] = 0.0
    scaled = _built("wscale", plain, splits, format_name, t=t, power_of_two=True)
    scales = [float(layer.parametrizations.weight[0].scale) for _, layer in weight_layers(scaled)]
    assert all(math.log2(scale).is_integer() for scale in scales)
    assert any(scale != 1.0 for scale in scales)
    for _, layer in weight_layers(scaled):  # the stored values are c * W, at most t in magnitude
        assert float(_stored(layer).abs().max()) <= (t or default_t(resolve_format(format_name)))
    number_format = resolve_format(format_name)
    Injector.deploy(plain, number_format)
    Injector.deploy(scaled, number_format)
    data = load_evaluation_data(splits.test, torch.device("cpu"), 64)
    assert torch.equal(predict_logits(scaled, data), predict_logits(plain, data))


def test_fixed_point_default_t_fills_the_range_and_shrinks_flip_errors(trained: Any) -> None:
    model, splits = trained
    scaled = _built("wscale", model, splits, "q2.5")
    largest = 2.0**2 - 2.0**-5
    for _, layer in weight_layers(scaled):
        assert float(_stored(layer).abs().max()) == pytest.approx(largest)
    injector = Injector.deploy(scaled, resolve_format("q2.5"))
    conv = dict(weight_layers(scaled))["stem.0"]
    scale = float(conv.parametrizations.weight[0].scale)
    before = conv.weight.detach().reshape(-1)[0].item()
    with injector.injected(_flip(injector, "stem.0.weight", 0, 7)):  # the sign bit: +-4 in the stored value
        after = conv.weight.detach().reshape(-1)[0].item()
    assert abs(after - before) == pytest.approx(4.0 / scale)
    assert scale > 4  # the error of the unscaled weight would be 4


def test_weight_scaling_is_prepared_per_format(trained: Any) -> None:
    method = _method("wscale")
    assert method.format_dependent
    assert not _method("saf-tanh").format_dependent
    model, splits = trained
    for format_name in ("fp16", "fp32"):  # the default t per format, c a power of two: max stored in (t/2, t]
        scaled = _built("wscale", model, splits, format_name)
        for _, layer in weight_layers(scaled):
            assert FLOAT_T[format_name] / 2 < float(_stored(layer).abs().max()) <= FLOAT_T[format_name]


# ---------------------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------------------


def test_composition_prepares_both_parts_and_both_are_in_the_fault_space(trained: Any) -> None:
    model, splits = trained
    context = _context(splits)
    method = _method("saf-tanh+fitact")
    assert [part.entry.name for part in method.parts] == ["fitact", "saf-tanh"]  # type: ignore[attr-defined]
    prepared = method.build(copy.deepcopy(model), context)
    layers = [name for name, _ in weight_layers(prepared)]
    assert transformed_layers(prepared) == layers
    sites = bounded_sites(prepared, [name for name, module in prepared.named_modules() if hasattr(module, "bound")
                                     and isinstance(module.bound, nn.Parameter)])
    assert sites and all(torch.isinf(module.bound).all() for module in sites.values())
    raw_before = {name: _stored(layer).detach().clone() for name, layer in weight_layers(prepared)}
    metrics = method.fit(prepared, context)
    assert list(metrics) == ["saf-tanh", "fitact"]  # the weights first, then the bounds on the transformed model
    assert all(torch.isfinite(module.bound).all() for module in sites.values())
    assert any(not torch.equal(raw_before[name], _stored(layer)) for name, layer in weight_layers(prepared))

    space = FaultSpace(prepared)
    kinds = {stored.name: stored.kind for stored in space.tensors}
    for name, layer in weight_layers(prepared):
        assert kinds[f"{name}.weight"] == "model"
        stored = next(s for s in space.tensors if s.name == f"{name}.weight")
        assert stored.tensor is layer.parametrizations.weight.original  # faults hit the raw stored weight
    assert {f"{name}.bound" for name in sites} <= {name for name, kind in kinds.items() if kind == "method"}
    assert space.names[: len(FaultSpace(model).names)] == FaultSpace(model).names  # the same layout prefix


def test_activation_part_fit_leaves_transformed_weights_alone(trained: Any) -> None:
    model, splits = trained
    context = _context(splits)
    transform_only = _method("saf-tanh", epochs=1)
    composed = _method("compose", first={"name": "saf-tanh", "epochs": 1}, second="ranger")
    alone = transform_only.build(copy.deepcopy(model), context)
    transform_only.fit(alone, context)
    both = composed.build(copy.deepcopy(model), context)
    composed.fit(both, context)
    for (name, layer), (_, other) in zip(weight_layers(both), weight_layers(alone), strict=True):
        assert torch.equal(_stored(layer), _stored(other)), name  # bounds at +inf during SAF: same training


@pytest.mark.parametrize(("name", "problem"), [
    ("saf-tanh+wscale", "both store the weights through a transform"),
    ("saf-tanh+saf-arctan", "both store the weights through a transform"),
    ("fitact+proact", "both rewrite the activation call sites"),
    ("none+fitact", "declares no change"),
    ("saf-tanh+fitact+wscale", "both store the weights through a transform"),
])
def test_impossible_composition_exits_2_before_any_work(name: str, problem: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "r.sqlite"
    status = main(["run", "--methods", f"none,{name}", "--store", str(store), "--cache-dir", str(tmp_path / "cache"),
                   "--no-progress"])
    assert status == 2
    message = capsys.readouterr().err
    assert problem in message and name.split("+")[0] in message
    assert not store.exists() and not (tmp_path / "cache").exists()
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"methods: [{name}]\n", encoding="utf-8")
    assert main(["validate", str(suite)]) == 2


def test_composed_rows_are_named_by_the_composition(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]\n"
                     "models: [test-mlp]\nbers: [1.0e-3]\ntrials: 2\ntraining: {epochs: 1}\n"
                     "methods: [none, wscale+ranger, {name: saf-tanh+ranger}]\nformats: [fp32]\n", encoding="utf-8")
    status = main(["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "cache"),
                   "--report-dir", str(tmp_path / "reports"), "--no-progress"])
    assert status == 0
    leaderboard = (tmp_path / "reports" / "leaderboard.md").read_text(encoding="utf-8")
    assert "| wscale+ranger |" in leaderboard
    # the leaderboard row (the table of paired differences to none below it also names the method)
    [row] = [line for line in leaderboard.splitlines() if line.startswith("| saf-tanh+ranger |") and "](" in line]
    assert "[Fuengfusin et al., arXiv:2411.19027 2024](https://arxiv.org/abs/2411.19027) + " in row
    assert "Chen et al." in row  # both parts cited, each short and linked
    from resbench.run.store import ResultStore

    with ResultStore(tmp_path / "r.sqlite") as store:
        cells = store.cells_frame()
    composed = cells[cells["method"] == "saf-tanh+ranger"].iloc[0]
    kinds = {entry["kind"] for entry in json.loads(composed["fault_space"])}
    assert kinds == {"model", "method"}
    assert "Fuengfusin" in composed["citation"] and "Chen" in composed["citation"]

    # A second run with a new store loads the fitted compositions from the cache: the same clean results.
    again = main(["run", str(suite), "--store", str(tmp_path / "again.sqlite"), "--cache-dir",
                  str(tmp_path / "cache"), "--no-progress"])
    assert again == 0
    with ResultStore(tmp_path / "again.sqlite") as store:
        reloaded = store.trials_frame()
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = store.trials_frame()
    columns = ["method", "format", "ber", "trial", "accuracy"]
    clean = [frame[frame["ber"] == 0][columns].sort_values(columns).reset_index(drop=True)
             for frame in (first, reloaded)]
    assert clean[0].equals(clean[1])


def test_list_transforms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "transforms"]) == 0
    listed = capsys.readouterr().out
    assert "saf " in listed and "weight-scaling" in listed


def test_models_without_weights_cannot_be_transformed(trained: Any) -> None:
    _, splits = trained
    from resbench.errors import UsageError

    with pytest.raises(UsageError, match="no convolution or linear layer"):
        _method("wscale").build(nn.Sequential(nn.Flatten()), _context(splits))
    model = build_model("test-mlp", splits.image_shape, splits.num_classes)
    twice = _method("wscale").build(model, _context(splits))
    with pytest.raises(UsageError, match="one weight transform"):
        _method("saf-tanh").build(twice, _context(splits))
