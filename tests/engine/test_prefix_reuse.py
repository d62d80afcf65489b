"""Prefix reuse: a weight-fault trial that restarts from kept clean values gives the full pass's logits bit for
bit, for every format, fault model, a residual model and a composed method; the kept values fit the budget."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from resbench.engine.estimator import sample_given_flips
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.faults import FaultModel, resolve_fault_model
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.engine.prefix_reuse import PrefixReuse
from resbench.methods.testing import prepare_method, tiny_model, tiny_prepare_context
from resbench.models import build_model


def _data(image_shape: tuple[int, int, int], count: int = 40, batch_size: int = 16) -> EvaluationData:
    images = torch.rand(count, *image_shape, generator=torch.Generator().manual_seed(3)) * 2
    return EvaluationData(images, torch.zeros(count, dtype=torch.int64), batch_size)


def _bits(logits: torch.Tensor) -> torch.Tensor:
    return logits.view(torch.int32)


def _check_trials(model: nn.Module, number_format: str, fault_model: FaultModel, bers: list[float],
                  data: EvaluationData, trials: int = 6) -> tuple[list[int], int, int]:
    """Logits with and without reuse for ``trials`` trials per BER; returns the nodes each trial recomputed,
    the nodes a full pass computes and the batches answered by an early exit."""
    injector = Injector.deploy(model, resolve_format(number_format))
    reuse = PrefixReuse.build(model, injector, data)
    assert reuse is not None
    recomputed, early_exits = [], 0
    for ber in bers:
        for trial in range(trials):
            sites = sample_given_flips(fault_model, injector.layout, ber, 1000 * trial + 7)
            with injector.injected(sites):
                full = predict_logits(model, data)
                reused = reuse.logits(sites)
            assert torch.equal(_bits(full), _bits(reused)), (number_format, ber, trial, sites.num_flips)
            recomputed.append(reuse.last_recomputed)
            early_exits += reuse.last_early_exits
    assert injector.is_clean()
    return recomputed, len(reuse.program.nodes) * len(reuse.clean_logits), early_exits


@pytest.fixture(scope="module")
def composed() -> tuple[nn.Module, tuple[int, int, int]]:
    """A small CNN protected by SAF and Ranger together: transformed weights, bounds and clamps after pooling."""
    context = tiny_prepare_context(image_shape=(1, 8, 8))
    return prepare_method("saf-tanh+ranger", tiny_model(context), context), context.image_shape


@pytest.mark.parametrize("fault", ["bitflip", "stuck-at-1", "bitflip-count"])
@pytest.mark.parametrize("number_format", ["fp32", "fp16", "q15.16", "int8"])
def test_reuse_gives_the_full_pass_logits_bit_for_bit(composed: tuple[nn.Module, tuple[int, int, int]],
                                                       number_format: str, fault: str) -> None:
    prepared, image_shape = composed
    recomputed, full, _ = _check_trials(copy.deepcopy(prepared).eval(), number_format,
                                        resolve_fault_model(fault), [1e-4, 1e-3], _data(image_shape))
    assert min(recomputed) < full  # some trials restart late or stop early


def test_a_masked_fault_ends_the_pass_early_with_the_clean_logits(
        composed: tuple[nn.Module, tuple[int, int, int]]) -> None:
    prepared, image_shape = composed
    _, _, early_exits = _check_trials(copy.deepcopy(prepared).eval(), "int8", resolve_fault_model("bitflip"),
                                      [1e-4, 1e-3], _data(image_shape))
    assert early_exits > 0


def test_reuse_on_a_residual_model_restarts_late_and_stays_exact() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).eval()
    data = _data((3, 32, 32), count=12, batch_size=8)
    recomputed, full, _ = _check_trials(model, "fp32", resolve_fault_model("bitflip"), [1e-7, 1e-6], data, trials=4)
    assert min(recomputed) < full / 2  # faults in the last stages skip most of the network


@pytest.mark.parametrize("budget", [0, 2**16, 2**30])
def test_kept_values_stay_within_the_memory_budget(budget: int) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).eval()
    data = _data((3, 32, 32), count=12, batch_size=8)
    injector = Injector.deploy(model, resolve_format("fp32"))
    reuse = PrefixReuse.build(model, injector, data, memory_bytes=budget)
    assert reuse is not None
    assert reuse.stored_bytes <= budget
    if budget == 2**30:
        assert len(reuse.cuts) > 10  # a restart point before every stage's convolutions


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.flatten(1)
        return self.linear(flat) if flat.sum() > 0 else -self.linear(flat)


def test_a_model_that_does_not_trace_falls_back_to_the_full_pass() -> None:
    model = _DataDependent()
    injector = Injector.deploy(model, resolve_format("fp32"))
    assert PrefixReuse.build(model, injector, _data((1, 2, 2), count=8, batch_size=4)) is None
