"""Fault space: which tensors are stored, in which order, under which names, and how many bits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from resbench.engine.faultspace import FaultSpace, FaultSpaceOptions, mark_stored, stored_attributes
from resbench.engine.formats import FixedPoint, Float16, Float32
from resbench.errors import UsageError
from resbench.options import validate_options


class Bounded(nn.Module):
    """A bounded ReLU holding a stored bound, as activation-bounding methods add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.bound.view(1, -1, 1, 1))


class Tanh(nn.Module):
    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.tanh(raw)


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def protected_net() -> nn.Sequential:
    net = small_net()
    net[2] = Bounded(4)
    mark_stored(net[2], "bound")
    return net


def test_default_space_is_conv_and_linear_weights_and_biases_in_module_order() -> None:
    space = FaultSpace(small_net())
    assert space.names == ("0.weight", "0.bias", "4.weight", "4.bias")
    assert [stored.kind for stored in space.tensors] == ["model"] * 4
    assert space.total_elements == 4 * 3 * 9 + 4 + 5 * 144 + 5


def test_bits_per_tensor_follow_the_format() -> None:
    space = FaultSpace(small_net())
    expected = {"0.weight": 108 * 32, "0.bias": 128, "4.weight": 720 * 32, "4.bias": 160}
    assert space.bits_per_tensor(Float32()) == expected
    assert space.total_bits(Float16()) == space.total_elements * 16
    assert space.total_bits(FixedPoint(2, 5)) == space.total_elements * 8
    layout = space.layout(Float32())
    assert layout.total_bits == space.total_bits(Float32())
    assert layout.offsets == (0, 108, 112, 832, 837)


def test_batch_norm_option_adds_affine_parameters_and_statistics() -> None:
    space = FaultSpace(small_net(), FaultSpaceOptions(batch_norm=True))
    assert space.names == (
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "4.weight",
        "4.bias",
    )


def test_method_tensors_come_after_model_tensors_and_can_be_dropped() -> None:
    net = protected_net()
    space = FaultSpace(net)
    assert space.names == ("0.weight", "0.bias", "4.weight", "4.bias", "2.bound")
    assert space.tensors[-1].kind == "method"
    assert space.tensors[-1].tensor is net[2].bound
    assert FaultSpace(net, FaultSpaceOptions(method_tensors=False)).names == FaultSpace(small_net()).names
    assert stored_attributes(net[2]) == ("bound",)


def test_marking_a_model_tensor_keeps_it_in_the_model_prefix() -> None:
    net = small_net()
    mark_stored(net[0], "weight")
    assert FaultSpace(net).names == ("0.weight", "0.bias", "4.weight", "4.bias")


def test_marking_something_that_is_not_a_float_tensor_is_a_usage_error() -> None:
    net = small_net()
    with pytest.raises(UsageError, match="not a floating-point parameter or buffer"):
        mark_stored(net[0], "stride")
    with pytest.raises(UsageError, match="num_batches_tracked"):
        mark_stored(net[1], "num_batches_tracked")


def test_marked_buffers_join_the_space() -> None:
    net = small_net()
    net[2].register_buffer("threshold", torch.tensor(6.0))
    mark_stored(net[2], "threshold")
    assert FaultSpace(net).names[-1] == "2.threshold"


def test_layers_selected_by_glob_regex_exclusion_and_type() -> None:
    net = protected_net()
    assert FaultSpace(net, FaultSpaceOptions(layers=("4",))).names == ("4.weight", "4.bias")
    assert FaultSpace(net, FaultSpaceOptions(layers=("re:[02]",))).names == ("0.weight", "0.bias", "2.bound")
    by_type = FaultSpace(net, FaultSpaceOptions(module_types=("Linear", "BatchNorm2d")))
    assert by_type.names[:6] == ("1.weight", "1.bias", "1.running_mean", "1.running_var", "4.weight", "4.bias")
    assert FaultSpace(net, FaultSpaceOptions(exclude_layers=("0",))).names == ("4.weight", "4.bias", "2.bound")


def test_empty_space_and_bad_regex_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="empty"):
        FaultSpace(small_net(), FaultSpaceOptions(layers=("nothing.*",)))
    with pytest.raises(UsageError, match="not a valid regex"):
        FaultSpace(small_net(), FaultSpaceOptions(layers=("re:(",)))
    with pytest.raises(UsageError, match="unknown option"):
        validate_options(FaultSpaceOptions, {"batchnorm": True}, "fault space")


def test_parametrized_weight_keeps_its_canonical_name_and_stores_the_raw_tensor() -> None:
    plain = small_net()
    transformed = small_net()
    parametrize.register_parametrization(transformed[0], "weight", Tanh())
    space = FaultSpace(transformed)
    assert space.names == FaultSpace(plain).names
    stored = space.tensors[0]
    assert stored.tensor is transformed[0].parametrizations.weight.original
    assert space.layout(Float32()) == FaultSpace(plain).layout(Float32())


def test_tied_tensors_are_stored_once() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    assert FaultSpace(net).names == ("0.weight", "0.bias", "1.bias")
