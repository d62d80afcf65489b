"""Bounded activations at infinite bounds and infinite inputs: exact, never NaN where the papers mean 0."""

from __future__ import annotations

import math

import pytest
import torch
from resbench_plugins.fitact import FitReLUActivation
from torch import nn

from resbench.methods import BoundedActivation


class TanhLimited(BoundedActivation):
    """``b * tanh(a / b)``: NaN at ``b = +inf`` (inf * 0), as a plugin author may well write it."""

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(activated / self.bound)


def _tanh_limited(bounds: list[float]) -> TanhLimited:
    module = TanhLimited(nn.ReLU(), (len(bounds),))
    with torch.no_grad():
        module.bound.copy_(torch.tensor(bounds))
    return module


def test_a_limit_that_is_nan_at_inf_returns_the_activation_where_the_bound_is_inf() -> None:
    module = _tanh_limited([math.inf, 2.0, math.inf])
    x = torch.tensor([[3.0, 3.0, -1.0], [0.5, 0.5, 7.0]])
    out = module(x)
    assert torch.equal(out[:, 0], torch.relu(x[:, 0])) and torch.equal(out[:, 2], torch.relu(x[:, 2]))
    assert torch.allclose(out[:, 1], 2.0 * torch.tanh(torch.relu(x[:, 1]) / 2.0))


def test_no_nan_gradient_flows_through_the_limit_where_the_bound_is_inf() -> None:
    module = _tanh_limited([math.inf, 2.0, math.inf])
    x = torch.tensor([[3.0, 3.0, 1.0], [0.5, 0.5, 7.0]], requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and module.bound.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(module.bound.grad).all()
    assert torch.equal(x.grad[:, 0], torch.ones(2)) and module.bound.grad[0] == 0 and module.bound.grad[2] == 0
    assert module.bound.grad[1] != 0  # the finite bound still trains


def test_an_all_infinite_bound_leaves_the_module_exactly_the_activation() -> None:
    module = TanhLimited(nn.ReLU(), (3,))
    x = torch.randn(4, 3) * 50
    assert torch.equal(module(x), torch.relu(x))


def _fitrelu(bound: float) -> FitReLUActivation:
    module = FitReLUActivation(nn.Identity(), (), slope=20.0)
    with torch.no_grad():
        module.bound.fill_(bound)
    return module


@torch.no_grad()
def _fitrelu_values(bound: float, inputs: list[float]) -> torch.Tensor:
    return _fitrelu(bound)(torch.tensor(inputs))


def test_fitrelu_gives_zero_at_plus_inf_above_a_finite_bound() -> None:
    out = _fitrelu_values(2.0, [math.inf, 1e30, 3.0])
    assert torch.equal(out[:2], torch.zeros(2))
    assert out[2].item() == pytest.approx(0.0, abs=1e-6)  # the smooth form of eq. 6 where it is finite


def test_fitrelu_at_minus_inf_and_nan_inputs() -> None:
    out = _fitrelu_values(2.0, [-math.inf, math.nan, 1.0])
    assert out[0] == -math.inf  # below the bound: the activation (identity here) passes
    assert math.isnan(out[1])  # NaN is neither above nor below: it stays NaN, as in Clip-Act (a DUE)
    assert out[2].item() == pytest.approx(1.0, abs=1e-6)


def test_fitrelu_behind_relu_at_infinities() -> None:
    module = FitReLUActivation(nn.ReLU(), (), slope=20.0)
    with torch.no_grad():
        module.bound.fill_(2.0)
    with torch.no_grad():
        assert torch.equal(module(torch.tensor([math.inf, -math.inf])), torch.zeros(2))


def test_fitrelu_gradient_in_the_bound_stays_finite_with_an_infinite_input() -> None:
    module = _fitrelu(2.0)
    module(torch.tensor([math.inf, 1.9, 2.1])).sum().backward()
    assert module.bound.grad is not None and torch.isfinite(module.bound.grad).all()
