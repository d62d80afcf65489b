"""Transient activation faults: sampling (act-single, act-bitflip), hook injection, shared faults across
methods, the binomial law of per-image counts, and clean passes that stay bit-identical."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import TensorDataset

from resbench.datasets import load_dataset
from resbench.engine.activation_faults import (
    ONE_FAULT_PER_INFERENCE,
    ActivationFaultModel,
    ImageFaults,
    image_seeds,
    image_uniforms,
)
from resbench.engine.activation_injection import ActivationInjector
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.faults import resolve_fault_model
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import resolve_format
from resbench.errors import UsageError
from resbench.methods.base import Method, PrepareContext
from resbench.models import build_model
from resbench.plugins import get_registries
from resbench.run.activation_campaign import faulty_logits, prepare_activation_campaign

MASK64 = 2**64 - 1


def _fault_model(name: str, **options: Any) -> ActivationFaultModel:
    made = resolve_fault_model(name, options)
    assert isinstance(made, ActivationFaultModel)
    return made


def _model(name: str = "test-cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, (1, 8, 8), 10, {}).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity, so outputs are not trivial
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _data(count: int = 96, batch_size: int = 40, seed: int = 1) -> EvaluationData:
    generator = torch.Generator().manual_seed(seed)
    return EvaluationData(torch.randn(count, 1, 8, 8, generator=generator),
                          torch.randint(0, 10, (count,), generator=generator), batch_size)


class _Recorder:
    """Forward hooks that copy each operator's output: registered after the injector's (the output as the
    model uses it) or, with ``before``, ahead of them (the output as the operator computed it)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], before: bool = False) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        self.handles = [model.get_submodule(name).register_forward_hook(self._hook(name), prepend=before)
                        for name in names]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.outputs[name].append(output.detach().clone())
        return hook

    def stacked(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat(outputs).flatten(1) for name, outputs in self.outputs.items()}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _flipped(
    injector: ActivationInjector, data: EvaluationData, faults: ImageFaults
) -> list[tuple[int, str, int, int]]:
    """(image, operator, element, XOR of the bit patterns) wherever an operator's output as the model used
    it differs from the output the operator computed, in one faulty pass over every image."""
    names = injector.layout.names
    computed, used = _Recorder(injector.model, names, before=True), _Recorder(injector.model, names)
    try:
        faulty_logits(injector, data, faults, torch.zeros(data.size, 10))
    finally:
        computed.remove()
        used.remove()
    found = []
    for name in names:
        before, after = computed.stacked()[name].view(torch.int32), used.stacked()[name].view(torch.int32)
        for image, element in (before != after).nonzero().tolist():
            found.append((image, name, element, int(before[image, element] ^ after[image, element]) & 0xFFFFFFFF))
    return sorted(found)


# -- act-single --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pick", ["element", "operator"])
def test_act_single_flips_exactly_one_bit_per_image(pick: str) -> None:
    model, data = _model(), _data()
    fault_model = _fault_model("act-single", pick=pick)
    injector = ActivationInjector(model, fault_model, data.images)
    for trial_seed in (3, 4):
        (faults,) = fault_model.sample_images(injector.layout, fault_model.cell_bers([1e-3]), trial_seed, data.size)
        assert faults.ber == ONE_FAULT_PER_INFERENCE
        assert faults.flips_per_image(data.size).tolist() == [1] * data.size
        flipped = _flipped(injector, data, faults)
        # one output element per image is changed, in one bit
        assert [image for image, *_ in flipped] == list(range(data.size))
        assert all(bin(xor).count("1") == 1 for *_, xor in flipped)
    injector.remove()


def _splitmix64(state: int) -> int:
    """SplitMix64's output for ``state``, in plain Python integers (Steele, Lea and Flood 2014)."""
    z = state & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _reference_uniform(trial_seed: int, image: int, draw: int) -> float:
    gamma = 0x9E3779B97F4A7C15
    image_seed = _splitmix64(trial_seed + (image + 1) * gamma)
    return (_splitmix64(image_seed + (draw + 1) * gamma) >> 11) / 2.0**53


def test_act_single_hits_the_element_and_bit_of_a_hand_built_reference() -> None:
    """Image i's element is floor(U0 * total elements), its bit floor(U2 * 32), from SplitMix64 streams
    computed here with Python integers; the operator is found from the per-image output sizes."""
    model, data = _model("test-mlp"), _data(count=25)
    fault_model = _fault_model("act-single")
    injector = ActivationInjector(model, fault_model, data.images)
    assert injector.layout.names == ("fc1", "fc2", "fc3") and injector.layout.numels == (16, 16, 10)
    trial_seed = 2**62 + 12345
    (faults,) = fault_model.sample_images(injector.layout, [ONE_FAULT_PER_INFERENCE], trial_seed, data.size)
    expected = []
    for image in range(data.size):
        element = math.floor(_reference_uniform(trial_seed, image, 0) * 42)
        bit = math.floor(_reference_uniform(trial_seed, image, 2) * 32)
        operator = 0 if element < 16 else 1 if element < 32 else 2
        name, local = ("fc1", "fc2", "fc3")[operator], element - (0, 16, 32)[operator]
        expected.append((image, name, local, 1 << bit))
    assert _flipped(injector, data, faults) == expected
    injector.remove()


def test_image_streams_match_the_reference_and_do_not_depend_on_the_set_size() -> None:
    seeds = image_seeds(99, 7)
    assert image_uniforms(seeds, 5).tolist() == [_reference_uniform(99, image, 5) for image in range(7)]
    assert np.array_equal(image_seeds(99, 3), seeds[:3])


def test_top_bits_and_bit_fields_restrict_the_flipped_bits() -> None:
    layout = FaultSpaceLayout(("a", "b"), (50, 30), 32, resolve_format("fp32").bit_fields())
    top = _fault_model("act-single", top_bits=9).sample_images(layout, [ONE_FAULT_PER_INFERENCE], 1, 4000)[0]
    assert set(top.bits.tolist()) == set(range(23, 32))
    exponent = _fault_model("act-single", bits=["exponent"]).sample_images(layout, [-1.0], 1, 4000)[0]
    assert set(exponent.bits.tolist()) == set(range(23, 31))


def test_pick_operator_chooses_operators_uniformly_whatever_their_size() -> None:
    layout = FaultSpaceLayout(("big", "small"), (1000, 10), 32)
    count = 20_000
    by_operator = _fault_model("act-single", pick="operator").sample_images(layout, [-1.0], 5, count)[0].operators()
    by_element = _fault_model("act-single").sample_images(layout, [-1.0], 5, count)[0].operators()
    # operator first: half and half; element first: in proportion to size (10 of 1010)
    assert stats.binomtest(int((by_operator == 1).sum()), count, 0.5).pvalue > 1e-3
    assert stats.binomtest(int((by_element == 1).sum()), count, 10 / 1010).pvalue > 1e-3


# -- act-bitflip -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ber", [3e-4, 2e-3])
def test_act_bitflip_counts_per_image_follow_the_binomial(ber: float) -> None:
    """Chi-squared goodness of fit of the flips per image to Binomial(bits per image, BER)."""
    layout = FaultSpaceLayout(("a", "b"), (100, 37), 32)
    bits = layout.total_elements * 32
    count = 20_000
    sites = _fault_model("act-bitflip").sample_images(layout, [ber], 11, count)[0]
    observed = np.bincount(sites.flips_per_image(count))
    expected = stats.binom.pmf(np.arange(observed.size), bits, ber) * count
    last = int(np.flatnonzero(expected >= 5)[-1])  # pool the tail so every bin expects at least 5
    observed_bins = [*observed[:last], observed[last:].sum()]
    expected_bins = [*expected[:last], count - expected[:last].sum()]
    assert stats.chisquare(observed_bins, expected_bins).pvalue > 1e-3
    # positions: distinct per image and uniform over the bit line
    line = sites.elements * 32 + sites.bits
    assert np.unique(sites.images * bits + line).size == sites.num_flips
    histogram = np.bincount(line * 10 // bits, minlength=10)
    assert stats.chisquare(histogram).pvalue > 1e-3


def test_act_bitflip_sweeps_are_nested_and_thinned_to_their_rate() -> None:
    layout = FaultSpaceLayout(("a",), (200,), 32)
    bers = [1e-4, 1e-3, 1e-2]
    sweep = _fault_model("act-bitflip").sample_images(layout, bers, 21, 2000)
    keys = [set(zip(s.images.tolist(), s.elements.tolist(), s.bits.tolist(), strict=True)) for s in sweep]
    assert keys[0] <= keys[1] <= keys[2]
    for ber, sites in zip(bers, sweep, strict=True):
        assert stats.binomtest(sites.num_flips, 2000 * 6400, ber).pvalue > 1e-3
    alone = _fault_model("act-bitflip").sample_images(layout, [1e-2], 21, 2000)[0]
    assert np.array_equal(alone.elements, sweep[-1].elements) and np.array_equal(alone.images, sweep[-1].images)


# -- clean passes and shared faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("operators", [("conv", "linear"), ("activation", "pool", "norm")])
def test_clean_passes_are_bit_identical_with_the_hooks_installed(operators: tuple[str, ...]) -> None:
    model, data = _model(), _data()
    reference = predict_logits(model, data)
    fault_model = _fault_model("act-bitflip", operators=operators)
    campaign = prepare_activation_campaign(model, fault_model, data, None, 0)
    assert torch.equal(campaign.clean_logits, reference)
    none = fault_model.sample_images(campaign.injector.layout, [1e-12], 0, data.size)[0]
    assert none.num_flips == 0
    assert torch.equal(faulty_logits(campaign.injector, data, none, campaign.clean_logits), reference)
    campaign.close()
    assert torch.equal(predict_logits(model, data), reference)


def test_faults_in_a_gathered_subset_change_only_the_faulty_images() -> None:
    model, data = _model(), _data(count=120, batch_size=16)
    fault_model = _fault_model("act-bitflip", top_bits=2)
    campaign = prepare_activation_campaign(model, fault_model, data, None, 0)
    faults = fault_model.sample_images(campaign.injector.layout, [3e-5], 8, data.size)[0]
    faulty_images = set(faults.images.tolist())
    assert 0 < len(faulty_images) < data.size
    logits = faulty_logits(campaign.injector, data, faults, campaign.clean_logits)
    changed = set((logits != campaign.clean_logits).any(dim=1).nonzero().flatten().tolist())
    assert changed and changed <= faulty_images
    # the gathered evaluation agrees with full batches of the whole set, faults placed by image
    injector, every_image = campaign.injector, np.arange(data.size)
    full = []
    with torch.inference_mode():
        for start in range(0, data.size, data.batch_size):
            stop = min(start + data.batch_size, data.size)
            injector.plan = injector.batch_plan(faults, every_image, start, stop)
            full.append(injector.model(data.images[start:stop]))
    injector.plan = {}
    assert torch.allclose(torch.cat(full), logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.cat(full).argmax(1), logits.argmax(1))
    campaign.close()


def _ranger(model: nn.Module) -> nn.Module:
    splits = load_dataset("synthetic", {"train_size": 64, "test_size": 8, "seed": 3})
    built = get_registries().methods.build("ranger", {})
    method: Method = built.value
    context = PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                             num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                             number_format=resolve_format("fp32"), batch_size=32)
    prepared = method.build(copy.deepcopy(model), context)
    method.fit(prepared, context)
    return prepared.eval()


def test_unprotected_and_bounded_models_see_identical_faults_at_shared_operators() -> None:
    model, data = _model(), _data()
    protected = _ranger(model)
    fault_model = _fault_model("act-single")
    injectors = [ActivationInjector(candidate, fault_model, data.images) for candidate in (model, protected)]
    assert injectors[0].layout == injectors[1].layout
    sites = [fault_model.sample_images(inj.layout, [-1.0], 77, data.size)[0] for inj in injectors]
    flipped = [_flipped(inj, data, faults) for inj, faults in zip(injectors, sites, strict=True)]
    # same operator, element and bit for every image; the bound downstream changes only what follows
    assert flipped[0] == flipped[1] and len(flipped[0]) == data.size


# -- formats and ranges ----------------------------------------------------------------------------------------


def test_fixed_point_activations_flip_bits_of_the_code() -> None:
    model, data = _model("test-mlp"), _data(count=30)
    fault_model = _fault_model("act-single", format="q15.16", operators=("linear",), names=("fc3",))
    campaign = prepare_activation_campaign(model, fault_model, data, None, 0)
    number_format = resolve_format("q15.16")
    plain = predict_logits(model, data)
    assert torch.equal(campaign.clean_logits, number_format.quantize(plain))
    faults = fault_model.sample_images(campaign.injector.layout, [-1.0], 5, data.size)[0]
    faulty = faulty_logits(campaign.injector, data, faults, campaign.clean_logits)
    # what the model computes with: decode(encode(y) XOR 2**bit), the code read as a signed 32-bit integer
    expected = campaign.clean_logits.clone()
    for image, element, bit in zip(faults.images.tolist(), faults.elements.tolist(), faults.bits.tolist(),
                                   strict=True):
        code = int(number_format.encode(campaign.clean_logits[image, element]).item()) & 0xFFFFFFFF
        flipped = code ^ (1 << bit)
        signed = flipped - (1 << 32) if flipped >= 1 << 31 else flipped
        expected[image, element] = number_format.decode(torch.tensor([signed], dtype=number_format.code_dtype))[0]
    assert torch.equal(faulty, expected)
    campaign.close()


def test_int8_ranges_are_profiled_per_operator_on_training_images_only() -> None:
    model, data = _model("test-mlp"), _data(count=20)
    train = TensorDataset(torch.randn(50, 1, 8, 8) * 3, torch.zeros(50, dtype=torch.int64))
    fault_model = _fault_model("act-single", format="int8", range_samples=50)
    campaign = prepare_activation_campaign(model, fault_model, data, train, 0)
    recorder = _Recorder(model, ("fc1", "fc2", "fc3"))
    campaign.close()
    with torch.inference_mode():
        model(train.tensors[0])
    outputs = recorder.stacked()
    recorder.remove()
    for name, output in outputs.items():
        assert torch.allclose(campaign.injector.scales[name], output.abs().max() / 127)
    with pytest.raises(ValueError, match="training data"):
        prepare_activation_campaign(model, fault_model, data, None, 0)


# -- bad input ---------------------------------------------------------------------------------------------------


def test_targets_are_checked_by_each_fault_model() -> None:
    with pytest.raises(UsageError, match="bitflip supports the weights target only"):
        resolve_fault_model("bitflip", {"target": "activations"}).check_target()
    with pytest.raises(UsageError, match="act-single supports the activations target only"):
        resolve_fault_model("act-single", {"target": "weights"}).check_target()
    with pytest.raises(UsageError, match="no operator of the model matches"):
        ActivationInjector(_model("test-mlp"), _fault_model("act-single", operators=("conv",)), _data().images)


def test_a_shared_module_called_twice_is_refused() -> None:
    model = _model()  # block.relu is one module called twice; the unrewritten model exposes it as is
    with pytest.raises(UsageError, match=r"more than once per inference.*block\.relu"):
        ActivationInjector(model, _fault_model("act-single", operators=("ReLU",)), _data().images)


# -- Ranger's clamps after pooling and flatten ---------------------------------------------------------------


def _clamp_recipe(model: nn.Module, after: list[str]) -> nn.Module:
    splits = load_dataset("synthetic", {"train_size": 64, "test_size": 8, "seed": 3})
    built = get_registries().methods.build("ranger", {"activation": {"name": "clamp", "after": after}})
    method: Method = built.value
    context = PrepareContext(train=splits.train, validation=splits.validation, image_shape=splits.image_shape,
                             num_classes=splits.num_classes, device=torch.device("cpu"), seed=0,
                             number_format=resolve_format("fp32"), batch_size=32)
    prepared = method.build(copy.deepcopy(model), context)
    method.fit(prepared, context)
    return prepared.eval()


def test_clamps_after_pooling_and_flatten_bound_faults_there_with_the_activations_bound() -> None:
    from resbench_plugins.ranger import FollowingClamp

    from resbench.engine.faultspace import FaultSpace

    model, data = _model(), _data()
    plain, extended = _clamp_recipe(model, []), _clamp_recipe(model, ["pool", "flatten"])
    clamps = [module for module in extended.modules() if isinstance(module, FollowingClamp)]
    assert len(clamps) == 2  # test-cnn: act6 -> pool -> flatten -> fc1
    bound = extended.get_submodule("act6").bound
    assert all(clamp.source.bound is bound for clamp in clamps)
    limit = float(bound.detach())
    assert FaultSpace(extended).names == FaultSpace(plain).names  # the bound is stored once
    assert torch.equal(predict_logits(extended, data), predict_logits(plain, data))
    # a fault that blows up the pooled value is held at act6's bound before it reaches fc1
    fault_model = _fault_model("act-single", operators=("pool",), top_bits=2, bits=["exponent"])
    largest = []
    for candidate in (plain, extended):
        seen: list[torch.Tensor] = []
        injector = ActivationInjector(candidate, fault_model, data.images)
        fc1 = candidate.get_submodule("fc1")
        handle = fc1.register_forward_pre_hook(lambda _module, inputs, seen=seen: seen.append(inputs[0]))
        faults = fault_model.sample_images(injector.layout, [-1.0], 2, data.size)[0]
        faulty_logits(injector, data, faults, torch.zeros(data.size, 10))
        handle.remove()
        injector.remove()
        largest.append(float(torch.cat(seen).max()))
    assert largest[0] > limit * 1e3
    assert largest[1] <= limit
    copied = copy.deepcopy(extended)
    copied_clamps = [module for module in copied.modules() if isinstance(module, FollowingClamp)]
    assert all(clamp.source.bound is copied.get_submodule("act6").bound for clamp in copied_clamps)
