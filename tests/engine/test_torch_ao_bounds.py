"""Bounds a model on quantized kernels carries: Ranger's clamp and Clip-Act's zero-above survive torch.ao
conversion and act on the dequantized activations."""

from __future__ import annotations

import copy

import pytest
import torch
from resbench_plugins.clipact import ZeroAboveActivation
from resbench_plugins.ranger import ClampedActivation
from torch import nn

from resbench.engine.formats import Int8
from resbench.engine.torch_ao import convert
from resbench.methods import BoundedActivation

BOUND = 0.05


class Net(nn.Module):
    """A convolution, a bounded ReLU whose output is the network's output (flattened), then nothing else."""

    def __init__(self, bounded: type[BoundedActivation] | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act: nn.Module = nn.ReLU() if bounded is None else bounded(nn.ReLU(), (1,))
        if bounded is not None:
            with torch.no_grad():
                self.act.bound.fill_(BOUND)  # type: ignore[union-attr, operator]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(inputs)).flatten(1)


@pytest.mark.parametrize("bounded", [ClampedActivation, ZeroAboveActivation], ids=["clamp", "zero-above"])
def test_a_bound_survives_conversion_and_acts_on_quantized_activations(bounded: type[BoundedActivation]) -> None:
    torch.manual_seed(0)
    images = torch.randn(64, 1, 8, 8)
    plain = Net(None).eval()
    protected = Net(bounded).eval()
    protected.conv.load_state_dict(plain.conv.state_dict())
    number_format = Int8("channel", engine="torch-ao")
    with torch.no_grad():
        reference = protected(images)
        plain_out = convert(copy.deepcopy(plain), number_format, images)(images)
        converted = convert(copy.deepcopy(protected), number_format, images)
        protected_out = converted(images)
    step = float(converted.conv.scale)  # one step of the quantized convolution output
    assert float(plain_out.max()) > 5 * BOUND  # without the bound, activations reach far above it
    assert float(protected_out.max()) <= BOUND + 1e-6
    close = (protected_out - reference).abs() <= step
    assert float(close.float().mean()) >= 0.98  # the rest: values within a step of the bound (zero-above)
    assert float(((plain_out - reference).abs() <= step).float().mean()) < 0.9
