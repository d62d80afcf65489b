"""Activation schemes, threshold optimizers and recipes, checked against hand computations."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from resbench_plugins.clipact import ZeroAboveActivation, area_under_accuracy
from resbench_plugins.fitact import FitReLUActivation
from resbench_plugins.ranger import ClampedActivation
from torch import nn

from resbench.cache import ArtifactCache
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.faultspace import FaultSpace
from resbench.engine.formats import resolve_format
from resbench.methods import (
    BoundedActivation,
    PrepareContext,
    activation_call_sites,
    bound_shape,
    bounded_sites,
    profile_activations,
)
from resbench.methods.base import Method
from resbench.plugins import get_registries
from resbench.training import load_or_train_baseline


def _bounded(cls: type[BoundedActivation], bound: float, **keywords: Any) -> BoundedActivation:
    module = cls(nn.ReLU(), (), **keywords)
    with torch.no_grad():
        module.bound.fill_(bound)
    return module


def test_fitrelu_matches_equation_6_around_the_bound_and_has_a_gradient_in_the_bound() -> None:
    module = _bounded(FitReLUActivation, 2.0, slope=20.0)
    x = torch.tensor([-1.0, 0.0, 1.0, 1.9, 2.0, 2.1, 3.0])
    expected = [max(0.0, v - v / (1 + math.exp(-20 * (v - 2.0)))) for v in x.tolist()]  # eq. 6, k = -20
    assert torch.allclose(module(x), torch.tensor(expected), atol=1e-6)
    assert module(torch.tensor(2.0)).item() == pytest.approx(1.0)  # half of x exactly at the bound
    assert module(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-6)  # ~x well below
    assert module(torch.tensor(3.0)).item() == pytest.approx(0.0, abs=1e-6)  # ~0 well above
    module(torch.tensor([1.9, 2.0, 2.1])).sum().backward()
    assert module.bound.grad is not None and module.bound.grad.item() > 0  # raising b lets more through


def test_clamp_saturates_and_zero_above_zeroes() -> None:
    x = torch.tensor([-2.0, 0.5, 1.0, 1.5, 1e30])
    assert torch.equal(_bounded(ClampedActivation, 1.0)(x), torch.tensor([0.0, 0.5, 1.0, 1.0, 1.0]))
    assert torch.equal(_bounded(ZeroAboveActivation, 1.0)(x), torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("cls", [ClampedActivation, ZeroAboveActivation, FitReLUActivation])
def test_an_unset_bound_computes_the_original_activation(cls: type[BoundedActivation]) -> None:
    keywords = {"slope": 20.0} if cls is FitReLUActivation else {}
    module = cls(nn.ReLU(), (3,), **keywords)
    x = torch.randn(5, 3) * 100
    assert torch.equal(module(x), torch.relu(x))


def test_bound_shapes_per_granularity() -> None:
    assert bound_shape((8, 4, 4), "layer") == ()
    assert bound_shape((8, 4, 4), "channel") == (8, 1, 1)
    assert bound_shape((8, 4, 4), "neuron") == (8, 4, 4)
    assert bound_shape((16,), "channel") == (16,)


# ---------------------------------------------------------------------------------------------------------
# Optimizers on a trained tiny model
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, DatasetSplits]:
    splits = load_dataset("synthetic", {"train_size": 400, "test_size": 64, "separation": 1.5,
                                        "validation_fraction": 0.25})
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    baseline = load_or_train_baseline("test-mlp", {}, splits, seed=0, cache=cache, device=torch.device("cpu"),
                                      training_options={"epochs": 8}, progress=False)
    return baseline.model.eval(), splits


class _NoTestSplit:
    """Stands in for the test split: any access fails the test."""

    def __len__(self) -> int:
        raise AssertionError("a method touched the test split")

    def __getitem__(self, index: int) -> Any:
        raise AssertionError("a method touched the test split")


def _context(splits: DatasetSplits, format_name: str = "fp32") -> PrepareContext:
    return PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                          num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                          number_format=resolve_format(format_name), batch_size=64)


def _prepared(
    method_spec: dict[str, Any] | str, model: nn.Module, splits: DatasetSplits
) -> tuple[nn.Module, dict[str, Any]]:
    """Build and fit a method (by suite spec) on a copy of ``model``, as the runner does."""
    spec = {"name": method_spec} if isinstance(method_spec, str) else method_spec
    built = get_registries().methods.build(spec["name"], {k: v for k, v in spec.items() if k != "name"})
    method: Method = built.value
    context = _context(splits)
    prepared = method.build(copy.deepcopy(model), context)
    metrics = method.fit(prepared, context)
    return prepared.eval(), metrics


def _validation_accuracy(model: nn.Module, splits: DatasetSplits) -> float:
    from resbench.training import evaluate

    return evaluate(model, splits.validation, "cpu")


def test_no_component_can_reach_the_test_split(trained: tuple[nn.Module, DatasetSplits]) -> None:
    model, splits = trained
    assert not hasattr(_context(splits), "test") and not hasattr(_context(splits), "splits")
    guarded = DatasetSplits(splits.name, splits.train, splits.validation, _NoTestSplit(),  # type: ignore[arg-type]
                            splits.image_shape, splits.num_classes, splits.key)
    for name in ("ranger", "clipact", "fitact", "proact"):
        _prepared({"name": name}, model, guarded)  # fails if anything reads the test split


def test_profile_max_equals_the_maximum_over_its_profiling_sample(trained: tuple[nn.Module, DatasetSplits]) -> None:
    model, splits = trained
    prepared, _ = _prepared({"name": "recipe", "activation": "clamp",
                             "optimizer": {"name": "profile-max", "fraction": 1.0}}, model, splits)
    profiles = profile_activations(model, splits.train, "cpu")
    sites = activation_call_sites(prepared)
    assert len(sites) == 2
    for name, module in bounded_sites(prepared, sites).items():
        assert module.bound.detach().item() == pytest.approx(profiles[name].max)
    # The first site's maximum, by hand: the largest hidden activation over the whole training split.
    images = torch.stack([splits.train[index][0] for index in range(len(splits.train))])  # type: ignore[arg-type]
    with torch.no_grad():
        hidden = torch.relu(model.fc1(images.flatten(1)))  # type: ignore[operator]
    assert bounded_sites(prepared, sites)[sites[0]].bound.detach().item() == pytest.approx(float(hidden.max()))
    ranger, _ = _prepared("ranger", model, splits)
    for module in bounded_sites(ranger, sites).values():  # Ranger rounds its bounds up
        bound = module.bound.detach().item()
        assert bound == math.ceil(bound) and bound > 0


def test_fitact_post_training_lowers_bounds_within_its_validation_tolerance(
    trained: tuple[nn.Module, DatasetSplits],
) -> None:
    model, splits = trained
    profiled, _ = _prepared({"name": "recipe", "activation": "fitrelu", "granularity": "neuron",
                             "optimizer": {"name": "profile-max", "fraction": 1.0}}, model, splits)
    fitted, metrics = _prepared({"name": "fitact", "optimizer": {"name": "fitact-posttrain", "epochs": 6,
                                                                  "tolerance": 1.0}}, model, splits)
    sites = activation_call_sites(fitted)
    before = torch.cat([m.bound.detach().flatten() for m in bounded_sites(profiled, sites).values()])
    after = torch.cat([m.bound.detach().flatten() for m in bounded_sites(fitted, sites).values()])
    assert after.shape == before.shape == (32,)  # neuron-wise: 16 + 16 neurons
    assert float((after**2).mean()) < float((before**2).mean())  # the bounds came down
    assert metrics["selected_epoch"] >= 0
    assert _validation_accuracy(fitted, splits) >= metrics["start_accuracy"] - 1.0 - 1e-9
    assert _validation_accuracy(fitted, splits) == pytest.approx(metrics["accuracy"])


def test_proact_trains_one_call_site_at_a_time_from_the_last(
    trained: tuple[nn.Module, DatasetSplits], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, splits = trained
    import resbench_plugins.proact as proact

    trained_shapes: list[tuple[tuple[int, ...], ...]] = []
    original = proact.train_bounds

    def spy(model: nn.Module, bounds: list[torch.Tensor], *args: Any, **keywords: Any) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        original(model, bounds, *args, after_epoch=lambda _epoch: trained_shapes.append(
            tuple(tuple(p.shape) for p in model.parameters() if p.requires_grad)), **keywords)
        assert trainable is not None

    monkeypatch.setattr(proact, "train_bounds", spy)
    fitted, metrics = _prepared("proact", model, splits)
    sites = activation_call_sites(fitted)
    assert metrics["order"] == list(reversed(sites))
    # Each training epoch had exactly one trainable tensor: a call site's bound, and only the last is neuron-wise.
    assert trained_shapes and all(len(shapes) == 1 for shapes in trained_shapes)
    assert trained_shapes[0] == ((16,),)  # the last call site first, neuron-wise
    assert set(trained_shapes[1:]) <= {((16,),), ((),)}
    assert ((),) in trained_shapes
    bounds = bounded_sites(fitted, sites)
    assert tuple(bounds[sites[-1]].bound.shape) == (16,)
    assert all(tuple(bounds[name].bound.shape) == () for name in sites[:-1])


@pytest.mark.parametrize(("granularity", "expected"), [("layer", 2), ("neuron", 32), ("hybrid", 1 + 16)])
def test_added_stored_values_per_granularity(
    trained: tuple[nn.Module, DatasetSplits], granularity: str, expected: int
) -> None:
    model, splits = trained
    prepared, _ = _prepared({"name": "recipe", "activation": "clamp", "optimizer": "profile-max",
                             "granularity": granularity}, model, splits)
    space = FaultSpace(prepared)
    added = sum(stored.numel for stored in space.tensors if stored.kind == "method")
    assert added == expected
    assert space.total_elements - FaultSpace(model).total_elements == expected


def test_ftclipact_scores_by_trapezoid_on_an_even_axis_and_finds_layer_thresholds(
    trained: tuple[nn.Module, DatasetSplits],
) -> None:
    assert area_under_accuracy([100.0] * 5) == pytest.approx(80.0)  # 0.2 .. 1.0
    assert area_under_accuracy([0.0, 0.0, 0.0, 0.0, 100.0]) == pytest.approx(10.0)
    model, splits = trained
    profiled, _ = _prepared({"name": "recipe", "activation": "zero-above",
                             "optimizer": {"name": "profile-max", "fraction": 0.2}}, model, splits)
    fitted, metrics = _prepared({"name": "clipact", "optimizer": {"name": "ftclipact-search", "draws": 2}},
                                model, splits)
    sites = activation_call_sites(fitted)
    for name in sites:
        found = metrics["sites"][name]
        assert 3 <= found["rounds"] <= 4
        bound = bounded_sites(fitted, sites)[name].bound.detach().item()
        assert bound == pytest.approx(found["bound"])
        assert 0.0 <= bound <= bounded_sites(profiled, sites)[name].bound.detach().item() + 1e-6


@pytest.mark.parametrize("method", ["fitact", "proact", "clipact"])
def test_preparation_is_deterministic_for_a_seed(trained: tuple[nn.Module, DatasetSplits], method: str) -> None:
    model, splits = trained
    spec: dict[str, Any] = {"name": method}
    if method == "clipact":
        spec["optimizer"] = {"name": "ftclipact-search", "draws": 1, "max_rounds": 3}
    first, _ = _prepared(spec, model, splits)
    second, _ = _prepared(spec, model, splits)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
