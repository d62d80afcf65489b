"""Real quantized models: torch.ao conversion, faults in int_repr() codes, exact restore, and agreement with
the simulated per-channel int8 on the same weights."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from resbench.cache import ArtifactCache
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.deployment import deploy_model
from resbench.engine.evaluation import EvaluationData, load_evaluation_data, predict_logits, predictions_of
from resbench.engine.faults import BernoulliFaults, FaultModelOptions, FaultSites
from resbench.engine.formats import Int8
from resbench.engine.injection import Injector
from resbench.engine.torch_ao import QuantizedInjector
from resbench.training import load_or_train_baseline

REAL = Int8("channel", engine="torch-ao", calibration_images=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[nn.Module, DatasetSplits, EvaluationData]]:
    """LeNet-5 trained for one epoch on 1,000 embedded MNIST images, and 300 test images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    splits = load_dataset("mnist5k", {"test_limit": 300})
    cache = ArtifactCache(Path(tmp_path_factory.mktemp("cache")))
    model = load_or_train_baseline("lenet5", {}, splits, seed=0, cache=cache, device="cpu",
                                   training_options={"epochs": 1}, progress=False).model.eval()
    yield model, splits, load_evaluation_data(splits.test, torch.device("cpu"), 300)
    torch.set_num_threads(threads)


def _real(trained: tuple[nn.Module, DatasetSplits, EvaluationData], number_format: Int8 = REAL
          ) -> tuple[nn.Module, QuantizedInjector]:
    model, splits, _ = trained
    quantized, injector = deploy_model(copy.deepcopy(model), number_format, calibration=splits.profiling, seed=0)
    assert isinstance(injector, QuantizedInjector)
    return quantized, injector


def _snapshot(injector: QuantizedInjector) -> dict[str, Any]:
    """Every stored bit of the quantized weights: codes, scales (float64 bits), zero points."""
    return {name: (weight.int_repr().clone(), weight.q_per_channel_scales().clone().view(torch.int64),
                   weight.q_per_channel_zero_points().clone()) for name, weight in injector.weights().items()}


def _same(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return first.keys() == second.keys() and all(
        all(torch.equal(a, b) for a, b in zip(first[name], second[name], strict=True)) for name in first)


def _flip(injector: Injector, element: int, bit: int) -> FaultSites:
    return FaultSites(injector.layout, np.array([element]), np.array([bit]), "flip", 1e-3)


def test_inject_and_restore_leave_the_quantized_model_bit_identical(trained: Any) -> None:
    quantized, injector = _real(trained)
    data = trained[2]
    clean_logits = predict_logits(quantized, data)
    clean_bits = _snapshot(injector)
    sites = BernoulliFaults(FaultModelOptions()).sample(injector.layout, [2e-3], seed=5)[0]
    assert sites.num_flips > 50
    with injector.injected(sites):
        assert not _same(_snapshot(injector), clean_bits)
        assert not torch.equal(predict_logits(quantized, data), clean_logits)
    assert injector.is_clean() and _same(_snapshot(injector), clean_bits)
    assert torch.equal(predict_logits(quantized, data), clean_logits)


@pytest.mark.parametrize("bit", range(8))
def test_a_flip_of_bit_k_moves_the_real_weight_by_two_to_the_k_scales(trained: Any, bit: int) -> None:
    _, injector = _real(trained)
    name, element = "features.3.weight", 7 * 150 + 31  # output channel 7 of the second convolution
    start = injector.layout.offsets[injector.layout.names.index(name)]
    before = injector.weights()[name]
    with injector.injected(_flip(injector, start + element, bit)):
        after = injector.weights()[name]
        moved = (after.int_repr().reshape(-1)[element].item() - before.int_repr().reshape(-1)[element].item())
        assert abs(moved) == 2**bit
        new_value = float(after.dequantize().reshape(-1)[element])
        old_value = float(before.dequantize().reshape(-1)[element])
        scale = before.q_per_channel_scales()[7].item()
        rounding = 2 * torch.finfo(torch.float32).eps * (abs(new_value) + abs(old_value))  # of each float32 product
        assert abs((new_value - old_value) - moved * scale) <= rounding
        unchanged = torch.ones(before.numel(), dtype=torch.bool)
        unchanged[element] = False
        assert torch.equal(after.int_repr().reshape(-1)[unchanged], before.int_repr().reshape(-1)[unchanged])


def test_simulated_and_real_int8_store_the_same_codes_and_move_alike(trained: Any) -> None:
    """For the same weights, per-channel simulated int8 and torch.ao hold the same scales and the same codes
    but at exact ties (torch.ao rounds ``x * (1/s)``, the simulation ``x / s``: a tie may land one code
    apart), and the same bit flip moves the same weight by the same amount."""
    model = trained[0]
    _, real = _real(trained)
    simulated = Injector.deploy(copy.deepcopy(model), Int8("channel"))
    floats = dict(model.named_parameters())
    differing = 0
    for index, name in enumerate(real.layout.names):
        sim_index = simulated.layout.names.index(name)
        sim_start, sim_end = simulated.layout.offsets[sim_index], simulated.layout.offsets[sim_index + 1]
        groups = simulated.stored_parameters
        scales = simulated.parameters[groups.starts[sim_index]:groups.starts[sim_index + 1], 0]
        assert torch.equal(scales, real.weights()[name].q_per_channel_scales().to(torch.float32))
        real_codes = real.weights()[name].int_repr().reshape(-1)
        apart = simulated.codes[sim_start:sim_end] != real_codes
        ratio = (floats[name].detach().reshape(scales.numel(), -1) / scales.view(-1, 1)).reshape(-1)  # float32
        assert torch.all(ratio.abs().frac()[apart] == 0.5)  # ties of x / s only
        assert torch.all((simulated.codes[sim_start:sim_end].int() - real_codes.int()).abs() <= 1)
        differing += int(apart.sum())
        element, bit = (sim_end - sim_start) // 3, index % 8
        clean_sim = float(simulated.values[sim_start + element])
        clean_real = float(real.values[real.layout.offsets[index] + element])
        with simulated.injected(_flip(simulated, sim_start + element, bit)):
            moved_sim = float(simulated.values[sim_start + element]) - clean_sim
        with real.injected(_flip(real, real.layout.offsets[index] + element, bit)):
            moved_real = float(real.values[real.layout.offsets[index] + element]) - clean_real
        assert moved_sim == pytest.approx(moved_real, rel=1e-5) and moved_sim != 0
    assert differing <= real.layout.total_elements // 10_000


def test_simulated_and_real_int8_agree_on_clean_predictions(trained: Any) -> None:
    """The only difference is the real kernels' quantized activations (quint8, reduced range) and integer
    accumulation: at least 97% of predictions agree, and accuracy within 2 points."""
    model, _, data = trained
    quantized, _ = _real(trained)
    simulated_model = copy.deepcopy(model)
    Injector.deploy(simulated_model, Int8("channel"))
    real_predictions, _ = predictions_of(predict_logits(quantized, data))
    simulated_predictions, _ = predictions_of(predict_logits(simulated_model, data))
    agreement = float((real_predictions == simulated_predictions).float().mean())
    assert agreement >= 0.97
    accuracies = [float((predictions == data.labels).float().mean()) for predictions in
                  (real_predictions, simulated_predictions)]
    assert abs(accuracies[0] - accuracies[1]) <= 0.02


def test_per_tensor_real_int8_has_one_scale_per_layer(trained: Any) -> None:
    _, injector = _real(trained, Int8("tensor", engine="torch-ao", calibration_images=64))
    weight = injector.weights()["features.0.weight"]
    assert weight.qscheme() in (torch.per_tensor_symmetric, torch.per_tensor_affine) and weight.q_zero_point() == 0
    assert weight.q_scale() == pytest.approx(float(trained[0].features[0].weight.detach().abs().max()) / 127, rel=1e-6)
    assert injector.parameters.shape[0] == len(injector.layout.names)


def test_real_scales_are_faulted_only_when_asked_and_restored_exactly(trained: Any) -> None:
    _, plain = _real(trained)
    assert all(name.endswith(".weight") for name in plain.layout.names)
    faultable = Int8("channel", faultable_parameters=True, engine="torch-ao", calibration_images=128)
    _, injector = _real(trained, faultable)
    names = injector.layout.names
    assert names[:len(plain.layout.names)] == plain.layout.names
    assert names[len(plain.layout.names):] == tuple(f"{name}.scale" for name in plain.layout.names)
    clean_bits = _snapshot(injector)
    start = injector.layout.offsets[names.index("features.0.weight.scale")]
    channel = 2
    before = injector.weights()["features.0.weight"]
    with injector.injected(_flip(injector, start + 4 * channel + 2, 7)):  # bit 23: the lowest exponent bit
        after = injector.weights()["features.0.weight"]
        ratio = after.q_per_channel_scales()[channel] / before.q_per_channel_scales()[channel]
        assert float(ratio) in (0.5, 2.0)
        assert torch.equal(after.int_repr(), before.int_repr())
        assert torch.equal(after.q_per_channel_scales()[channel + 1:], before.q_per_channel_scales()[channel + 1:])
    assert _same(_snapshot(injector), clean_bits)
