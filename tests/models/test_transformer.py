"""The zoo's vision transformer: its fault space, bit-exact injection in attention weights, its activation call
sites, and the methods that bound or transform it."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.faults import FaultSites
from resbench.engine.faultspace import FaultSpace
from resbench.engine.formats import FixedPoint, Float32
from resbench.engine.injection import Injector
from resbench.methods import BoundedActivation, PrepareContext
from resbench.methods.base import Method
from resbench.models import build_model
from resbench.models.callsites import call_site_details
from resbench.plugins import get_registries

SMALL = {"dim": 16, "depth": 2, "heads": 2, "mlp_dim": 32}


@pytest.fixture(scope="module")
def splits() -> DatasetSplits:
    return load_dataset("synthetic", {"height": 14, "width": 14, "train_size": 96, "test_size": 16})


def _vit(splits: DatasetSplits) -> nn.Module:
    torch.manual_seed(0)
    return build_model("vit-tiny", splits.image_shape, splits.num_classes, {"patch_size": 7, **SMALL}).eval()


def test_every_stored_tensor_is_in_the_fault_space(splits: DatasetSplits) -> None:
    model = _vit(splits)
    space = FaultSpace(model)
    stored = [tensor for tensor in (*model.parameters(), *model.buffers()) if tensor.is_floating_point()]
    assert {id(entry.tensor) for entry in space.tensors} == {id(tensor) for tensor in stored}
    assert "blocks.0.attention.in_proj_weight" in space.names and "cls_token" in space.names


@pytest.mark.parametrize("number_format", [Float32(), FixedPoint(integer_bits=15, fraction_bits=16)])
def test_single_bit_flip_in_in_proj_weight_is_injected_and_restored_bit_exactly(
    splits: DatasetSplits, number_format: Any
) -> None:
    model = _vit(splits)
    images = torch.stack([splits.test[index][0] for index in range(8)])
    injector = Injector.deploy(model, number_format)
    name = "blocks.1.attention.in_proj_weight"
    tensor = model.get_parameter(name)
    before, clean_logits = tensor.detach().clone(), model(images).detach()
    index = injector.layout.names.index(name)
    element, bit = injector.layout.offsets[index] + 37, number_format.bits_per_element - 2  # a high exponent bit
    sites = FaultSites(injector.layout, np.array([element]), np.array([bit]), "flip", 0.0)
    with torch.no_grad(), injector.injected(sites):
        changed = (tensor.detach() != before).flatten().nonzero().flatten().tolist()
        faulty_logits = model(images).detach()
    assert changed == [37]
    assert not torch.equal(faulty_logits, clean_logits)
    assert torch.equal(tensor.detach().view(torch.int32), before.view(torch.int32))
    assert torch.equal(model(images).detach(), clean_logits) and injector.is_clean


def test_call_sites_are_the_gelus(splits: DatasetSplits) -> None:
    from resbench.models.callsites import rewrite_activation_call_sites

    sites = call_site_details(rewrite_activation_call_sites(_vit(splits)))
    assert [(site.name, site.kind) for site in sites] == [("blocks.0.mlp.1", "gelu"), ("blocks.1.mlp.1", "gelu")]


def _context(splits: DatasetSplits) -> PrepareContext:
    return PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                          num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                          number_format=Float32(), batch_size=64)


def _prepared(name: str, model: nn.Module, splits: DatasetSplits, **options: Any) -> nn.Module:
    method: Method = get_registries().methods.build(name, options).value
    built = method.build(copy.deepcopy(model), _context(splits))
    method.fit(built, _context(splits))
    return built.eval()


@pytest.mark.parametrize(("method", "options"), [
    ("ranger", {}),
    ("clipact", {"optimizer": {"name": "ftclipact-search", "draws": 1, "min_rounds": 1, "max_rounds": 2}}),
])
def test_activation_bounding_methods_bound_the_gelu_sites(splits: DatasetSplits, method: str,
                                                          options: dict[str, Any]) -> None:
    model = _vit(splits)
    prepared = _prepared(method, model, splits, **options)
    bounded = {name: module for name, module in prepared.named_modules() if isinstance(module, BoundedActivation)}
    assert sorted(bounded) == ["blocks.0.mlp.1", "blocks.1.mlp.1"]
    assert all(bool(torch.isfinite(module.bound).all()) for module in bounded.values())
    method_tensors = [entry.name for entry in FaultSpace(prepared).tensors if entry.kind == "method"]
    assert method_tensors == ["blocks.0.mlp.1.bound", "blocks.1.mlp.1.bound"]


def test_weight_transform_applies_to_the_linear_layers(splits: DatasetSplits) -> None:
    model = _vit(splits)
    method: Method = get_registries().methods.build("saf-tanh", {"epochs": 1}).value
    built = method.build(copy.deepcopy(model), _context(splits))
    transformed = {name for name, module in built.named_modules()
                   if isinstance(module, nn.Linear) and hasattr(module, "parametrizations")}
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    assert transformed == linear and "blocks.0.attention.out_proj" in transformed
    assert FaultSpace(built).names[:len(FaultSpace(model).names)] == FaultSpace(model).names
