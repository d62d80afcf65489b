"""Activation call sites: one module per call, identical logits, unchanged tensor names, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resbench.errors import UsageError
from resbench.models import build_model
from resbench.models.callsites import (
    activation_call_sites,
    call_site_details,
    get_call_site,
    replace_call_site,
    rewrite_activation_call_sites,
)

BUILT_IN = ["mlp", "lenet5", "alexnet-cifar", "vgg11", "vgg16", "resnet20", "resnet56", "test-mlp", "test-cnn"]
TORCHVISION = ["resnet18", "resnet50", "vgg16_bn", "alexnet", "mobilenet_v2"]


def _check_rewrite(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    model.eval()
    rewritten = rewrite_activation_call_sites(model)
    images = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(model(images.clone()), rewritten(images.clone()))
    assert list(model.state_dict()) == list(rewritten.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, rewritten.state_dict()[key])
    sites = activation_call_sites(rewritten)
    assert len(sites) == len(set(sites))
    modules = [get_call_site(rewritten, site) for site in sites]
    assert len({id(module) for module in modules}) == len(modules), "a module is shared by two call sites"
    assert not any(getattr(module, "inplace", False) for module in modules)
    return rewritten


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_models_keep_their_logits(name: str) -> None:
    _check_rewrite(build_model(name, (3, 16, 16), 10), (3, 16, 16))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_keep_their_logits(name: str) -> None:
    _check_rewrite(build_model(name, (3, 16, 16), 10), (3, 16, 16))


def test_torchvision_resnet18_has_two_sites_per_basic_block() -> None:
    rewritten = _check_rewrite(build_model("resnet18", (3, 16, 16), 10), (3, 16, 16))
    sites = activation_call_sites(rewritten)
    assert len(sites) == 1 + 8 * 2
    assert [site for site in sites if site.startswith("layer1.0.")] == ["layer1.0.relu", "layer1.0.relu_1"]


def test_torchvision_resnet50_bottleneck_has_three_sites() -> None:
    rewritten = rewrite_activation_call_sites(build_model("resnet50", (3, 16, 16), 10))
    sites = activation_call_sites(rewritten)
    assert len(sites) == 1 + 16 * 3
    assert [s for s in sites if s.startswith("layer2.1.")] == ["layer2.1.relu", "layer2.1.relu_1", "layer2.1.relu_2"]


def test_test_cnn_names_every_call_pattern() -> None:
    details = call_site_details(build_model("test-cnn", (1, 8, 8), 10))
    assert [site.name for site in details] == [
        "stem.2", "block.relu", "block.relu_1", "relu", "act6", "relu_1", "relu_2"]
    assert [site.kind for site in details] == ["relu"] * 4 + ["relu6"] + ["relu"] * 2
    assert details[2].origin == "module block.relu"


def test_names_are_stable_and_listing_needs_no_rewrite() -> None:
    model = build_model("resnet20", (3, 8, 8), 10)
    relu, modules = model.layer1[0].relu, len(list(model.modules()))
    assert activation_call_sites(model) == activation_call_sites(rewrite_activation_call_sites(model))
    assert model.layer1[0].relu is relu and relu.inplace and len(list(model.modules())) == modules
    assert activation_call_sites(model)[:3] == ["relu", "layer1.0.relu", "layer1.0.relu_1"]


def test_rewrite_copies_by_default() -> None:
    model = build_model("test-mlp", (1, 4, 4), 3)
    rewritten = rewrite_activation_call_sites(model)
    with torch.no_grad():
        rewritten.fc1.weight.zero_()
    assert model.fc1.weight.abs().sum() > 0
    assert rewrite_activation_call_sites(rewritten, copy_model=False) is rewritten


class InPlaceTricks(nn.Module):
    """In-place activations whose input is read again later, functional calls inside a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4))
        self.leaky = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        F.relu(y, inplace=True)
        z = y * 2
        torch.relu_(z)
        return z + y + F.leaky_relu(x, 0.1) + self.leaky(x) + F.relu6(x) + F.gelu(x)


def test_in_place_semantics_and_function_arguments_are_kept() -> None:
    model = InPlaceTricks()
    rewritten = _check_rewrite(model, (4,))
    kinds = [(site.name, site.kind) for site in call_site_details(rewritten)]
    assert kinds == [("relu", "relu"), ("relu_1", "relu"), ("leaky_relu", "leaky_relu"), ("leaky", "leaky_relu"),
                     ("relu6", "relu6"), ("gelu", "gelu")]
    assert get_call_site(rewritten, "leaky_relu").negative_slope == 0.1


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if x.sum() > 0 else -x


def test_untraceable_model_names_the_obstacle() -> None:
    model = nn.Sequential(nn.Linear(2, 2), DataDependent())
    with pytest.raises(UsageError) as raised:
        rewrite_activation_call_sites(model)
    message = str(raised.value)
    assert "'1'" in message and "control flow" in message and "\n" not in message


class Clamp(nn.Module):
    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.tensor(bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(F.relu(x), self.bound)


def test_replacing_a_call_site_changes_only_that_site() -> None:
    model = build_model("test-cnn", (1, 8, 8), 10).eval()
    rewritten = rewrite_activation_call_sites(model)
    before = copy.deepcopy(rewritten)
    previous = replace_call_site(rewritten, "block.relu_1", Clamp(0.0))
    assert isinstance(previous, nn.ReLU)
    assert activation_call_sites(rewritten) == activation_call_sites(before)
    assert "block.relu_1.bound" in rewritten.state_dict()
    assert isinstance(copy.deepcopy(rewritten).get_submodule("block.relu_1"), Clamp)
    images = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(rewritten(images), before(images))
    with pytest.raises(UsageError, match="unknown activation call site"):
        replace_call_site(rewritten, "block.conv1", nn.ReLU())
