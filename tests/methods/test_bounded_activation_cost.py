"""A protected forward pass costs what the method's math costs: no guard, no extra batch-sized tensor,
the same values bit for bit; transformed weights read back once per evaluation pass."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from resbench_plugins.clipact import ZeroAboveActivation
from resbench_plugins.fitact import FitReLUActivation, fitrelu, fitrelu_
from resbench_plugins.ranger import ClampedActivation
from resbench_plugins.saf import SaturatedReadBack
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode

from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.methods import BoundedActivation

BATCH = (16, 3, 4, 4)
SPECIAL = [math.inf, -math.inf, math.nan, 3.0e38, -3.0e38, 0.0, -0.0, 1.0, 2.5, 1e-30]


class _BatchAllocations(TorchDispatchMode):
    """Counts float tensors of the batch's size that operations allocate, and the operators called."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.allocated, self.operators = numel, 0, []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.operators.append(func.overloadpacket.__name__)
        writes_into = {id(arg) for arg in (*args, *kwargs.values()) if isinstance(arg, torch.Tensor)}
        if isinstance(out, torch.Tensor) and id(out) not in writes_into and out.numel() == self.numel \
                and out.is_floating_point():
            self.allocated += 1
        return out


def _module(kind: str, granularity: str) -> BoundedActivation:
    shape = () if granularity == "layer" else BATCH[1:]
    module: BoundedActivation
    if kind == "clamp":
        module = ClampedActivation(nn.ReLU(), shape)
    elif kind == "zero-above":
        module = ZeroAboveActivation(nn.ReLU(), shape)
    else:
        module = FitReLUActivation(nn.ReLU(), shape, slope=20.0)
    with torch.no_grad():
        module.bound.copy_(torch.linspace(0.5, 3.0, max(1, math.prod(shape))).reshape(shape))
    return module


#: Batch-sized float tensors each scheme needs: the activation's output (written in place by the bound)
#: and, for FitReLU, its gate. The guarded form needed two more (the limit's output and the selection).
NEEDED = {"clamp": 1, "zero-above": 1, "fitrelu": 2}


@pytest.mark.parametrize("granularity", ["layer", "neuron"])
@pytest.mark.parametrize("kind", sorted(NEEDED))
def test_a_bounded_call_site_allocates_only_what_its_math_needs(kind: str, granularity: str) -> None:
    module = _module(kind, granularity)
    inputs = torch.randn(BATCH) * 3
    counter = _BatchAllocations(inputs.numel())
    with torch.inference_mode(), counter:
        module(inputs)
    assert counter.allocated == NEEDED[kind], counter.operators
    assert "where" not in counter.operators


@pytest.mark.parametrize("granularity", ["layer", "neuron"])
@pytest.mark.parametrize("kind", sorted(NEEDED))
def test_the_in_place_pass_computes_the_guarded_limit_bit_for_bit(kind: str, granularity: str) -> None:
    module = _module(kind, granularity)
    values = torch.tensor(SPECIAL)
    inputs = values[torch.randint(len(SPECIAL), BATCH, generator=torch.Generator().manual_seed(0))]
    inputs = inputs * torch.rand(BATCH, generator=torch.Generator().manual_seed(1)).add(0.5)
    expected = module._limit_where_bounded(torch.relu(inputs))  # the guarded form: limit, out of place
    with torch.inference_mode():
        fast = module(inputs.clone())
    assert torch.equal(fast.isnan(), expected.isnan())
    assert torch.equal(fast.nan_to_num(), expected.nan_to_num())
    assert torch.equal(fast.signbit(), expected.signbit())


def test_the_in_place_pass_leaves_its_input_alone() -> None:
    module = ClampedActivation(nn.Identity(), ())  # the identity returns its input: nothing may be overwritten
    with torch.no_grad():
        module.bound.fill_(1.0)
    inputs = torch.tensor([0.5, 2.0, 3.0])
    with torch.inference_mode():
        out = module(inputs)
    assert torch.equal(inputs, torch.tensor([0.5, 2.0, 3.0])) and torch.equal(out, torch.tensor([0.5, 1.0, 1.0]))


@pytest.mark.parametrize("bound", [2.0, -math.inf, 3.0e38, -3.0e38, math.nan, math.inf])
def test_fitrelu_in_place_equals_fitrelu_at_every_special_value(bound: float) -> None:
    activated = torch.tensor(SPECIAL)
    bounds = torch.full_like(activated, bound)
    expected = fitrelu(activated, bounds, 20.0)
    got = fitrelu_(activated.clone(), bounds, 20.0)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())
    assert torch.equal(got.signbit(), expected.signbit())


def test_a_transformed_weight_is_read_back_once_per_evaluation_pass() -> None:
    calls = []

    class Counted(SaturatedReadBack):
        def forward(self, stored: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return super().forward(stored)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    parametrize.register_parametrization(model[1], "weight", Counted("tanh"))
    data = EvaluationData(torch.randn(10, 1, 2, 2), torch.zeros(10, dtype=torch.int64), batch_size=3)
    calls.clear()
    logits = predict_logits(model, data)
    assert len(calls) == 1  # four batches, one read-back
    with torch.no_grad():  # the same batches, each reading the weight back itself
        assert torch.equal(logits, torch.cat([model(batch) for batch in data.images.split(data.batch_size)]))
