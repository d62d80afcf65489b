"""Injector: deploy once, inject in place, restore bit-exactly, on every format and fault kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from resbench.engine.faults import BernoulliFaults, FaultSites, LegacyCountFaults
from resbench.engine.faultspace import FaultSpace, FaultSpaceOptions, mark_stored
from resbench.engine.formats import BFloat16, FixedPoint, Float16, Float32, Int8, NumberFormat
from resbench.engine.injection import Injector
from resbench.errors import ResbenchError, UsageError

FORMATS: list[NumberFormat] = [Float32(), Float16(), BFloat16(), FixedPoint(15, 16), FixedPoint(7, 9), Int8()]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Bounded(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.full((channels,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.bound.view(1, -1, 1, 1))


class Tanh(nn.Module):
    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.tanh(raw)


def make_net(device: str = "cpu", seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        Bounded(8),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )
    mark_stored(net[2], "bound")
    return net.to(device).eval()


def bit_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as raw bits, so that -0.0, NaN payloads and every ulp count."""
    return {
        name: value.detach().clone().contiguous().view(torch.int32)
        if value.dtype == torch.float32
        else value.detach().clone()
        for name, value in model.state_dict().items()
    }


def assert_same_bits(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def assert_consistent(injector: Injector) -> None:
    """Every value the network computes with is the decode of its stored code."""
    numels = torch.tensor(injector.layout.numels, device=injector.device)
    scales = injector.scales.repeat_interleave(numels) if injector.format.scaled else None
    decoded = injector.format.decode(injector.codes, scales)
    assert torch.equal(decoded.view(torch.int32), injector.values.view(torch.int32))


def sites_at(injector: Injector, elements: list[int], bits: list[int], kind: str = "flip") -> FaultSites:
    return FaultSites(injector.layout, np.array(elements), np.array(bits), kind, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("number_format", FORMATS, ids=lambda f: f.name)
def test_deploy_computes_with_the_quantized_weights(number_format: NumberFormat) -> None:
    net = make_net()
    originals = {name: p.detach().clone() for name, p in net.named_parameters()}
    injector = Injector.deploy(net, number_format)
    for stored in injector.space.tensors:
        expected = number_format.quantize(originals[stored.name])
        assert torch.equal(stored.tensor, expected), stored.name
        assert stored.tensor.data_ptr() != originals[stored.name].data_ptr()
    assert torch.equal(net[1].weight, originals["1.weight"])  # batch norm is outside the default space
    assert_consistent(injector)


def test_fp32_deploy_changes_nothing() -> None:
    net = make_net()
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        before = net(x)
        Injector.deploy(net, Float32())
        assert torch.equal(net(x), before)


def test_a_single_flip_lands_on_the_named_element_and_bit() -> None:
    net = make_net()
    with torch.no_grad():
        net[4].weight[3, 7] = 0.5
    injector = Injector.deploy(net, Float32())
    element = injector.layout.offsets[injector.layout.names.index("4.weight")] + 3 * 288 + 7
    with injector.injected(sites_at(injector, [element], [30])):
        assert net[4].weight[3, 7].item() == 0.5 * 2.0**128
        assert torch.count_nonzero(net[4].weight != net[4].weight[3, 7]) == net[4].weight.numel() - 1
    assert net[4].weight[3, 7].item() == 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("number_format", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["flip", "stuck-at-0", "stuck-at-1"])
def test_inject_matches_a_reference_and_restore_is_bit_exact(
    number_format: NumberFormat, kind: str, device: str
) -> None:
    net = make_net(device)
    injector = Injector.deploy(net, number_format, FaultSpaceOptions(batch_norm=True))
    clean = bit_snapshot(net)
    sites = BernoulliFaults(kind=kind).sample(injector.layout, [2e-2], seed=5)[0]  # type: ignore[arg-type]
    reference = injector.codes.cpu().numpy().astype(np.int64).copy()
    for element, bit in zip(sites.elements.tolist(), sites.bits.tolist(), strict=True):
        if kind == "flip":
            reference[element] ^= 1 << bit
        elif kind == "stuck-at-1":
            reference[element] |= 1 << bit
        else:
            reference[element] &= ~(1 << bit)
    width = torch.iinfo(number_format.code_dtype).bits
    reference = ((reference + (1 << (width - 1))) % (1 << width)) - (1 << (width - 1))
    with injector.injected(sites):
        assert np.array_equal(injector.codes.cpu().numpy().astype(np.int64), reference)
        assert_consistent(injector)
        assert not injector.is_clean()
        changed = np.bitwise_count(np.bitwise_xor(injector.codes.cpu().numpy().astype(np.int64),
                                                  injector.clean_codes.cpu().numpy().astype(np.int64))
                                   & ((1 << width) - 1)).sum()
        assert injector.effective_flips == changed  # stuck-at sites already at their value change nothing
        assert (changed < sites.num_flips) == (kind != "flip")
    assert injector.is_clean()
    assert_same_bits(bit_snapshot(net), clean)


def test_the_model_sees_faults_and_gets_its_outputs_back() -> None:
    net = make_net()
    injector = Injector.deploy(net, Float16())
    x = torch.randn(16, 3, 8, 8)
    sites = BernoulliFaults().sample(injector.layout, [1e-2], seed=1)[0]
    with torch.inference_mode():
        clean = net(x)
        with injector.injected(sites):
            faulty = net(x)
        again = net(x)
    assert not torch.equal(clean, faulty)
    assert torch.equal(clean.view(torch.int32), again.view(torch.int32))


def test_parametrized_weights_are_faulted_in_their_raw_storage() -> None:
    net = make_net()
    parametrize.register_parametrization(net[4], "weight", Tanh())
    injector = Injector.deploy(net, Float32())
    raw = net[4].parametrizations.weight.original
    element = injector.layout.offsets[injector.layout.names.index("4.weight")]
    before, raw_before = net[4].weight[0, 0].item(), raw[0, 0].item()
    with injector.injected(sites_at(injector, [element], [31])):
        assert raw[0, 0].item() == -raw_before
        assert net[4].weight[0, 0].item() == pytest.approx(-before)
    assert net[4].weight[0, 0].item() == before


def test_methods_sharing_tensors_get_the_same_faults_in_them() -> None:
    plain, bounded = make_net(seed=3), make_net(seed=3)
    plain_space = FaultSpace(plain, FaultSpaceOptions(method_tensors=False))
    plain_injector, bounded_injector = Injector(plain_space, Float32()), Injector.deploy(bounded, Float32())
    model = BernoulliFaults()
    plain_sites = model.sample(plain_injector.layout, [1e-3], seed=9)[0]
    bounded_sites = model.sample(bounded_injector.layout, [1e-3], seed=9)[0]
    with plain_injector.injected(plain_sites), bounded_injector.injected(bounded_sites):
        for name in ("0.weight", "0.bias", "4.weight", "4.bias"):
            faulty = plain.get_parameter(name).view(torch.int32)
            assert torch.equal(faulty, bounded.get_parameter(name).view(torch.int32)), name
        assert not plain_injector.is_clean()


def test_duplicate_draws_cancel_like_two_flips() -> None:
    net = make_net()
    injector = Injector.deploy(net, FixedPoint(2, 5))
    clean = bit_snapshot(net)
    with injector.injected(sites_at(injector, [5, 5, 9], [3, 3, 2])):
        assert torch.equal(injector.codes[5], injector.clean_codes[5])
        assert not torch.equal(injector.codes[9], injector.clean_codes[9])
    assert_same_bits(bit_snapshot(net), clean)
    legacy = LegacyCountFaults().sample(injector.layout, [0.2], seed=0)[0]
    with injector.injected(legacy):
        assert_consistent(injector)
    assert injector.is_clean()


def test_restore_happens_when_the_block_raises_and_reset_recovers_anything() -> None:
    net = make_net()
    injector = Injector.deploy(net, Int8())
    clean = bit_snapshot(net)
    sites = BernoulliFaults().sample(injector.layout, [1e-2], seed=2)[0]
    with pytest.raises(KeyError), injector.injected(sites):
        raise KeyError("evaluation failed")
    assert_same_bits(bit_snapshot(net), clean)
    injector.inject(sites)
    injector.reset()
    assert injector.is_clean() and not injector.injected_now
    assert_same_bits(bit_snapshot(net), clean)


def test_misuse_is_refused() -> None:
    net = make_net()
    injector = Injector.deploy(net, Float32())
    sites = BernoulliFaults().sample(injector.layout, [1e-2], seed=2)[0]
    injector.inject(sites)
    with pytest.raises(ResbenchError, match="restore first"):
        injector.inject(sites)
    injector.restore()
    injector.restore()  # nothing injected: a no-op
    other = Injector.deploy(make_net(), Float16())
    with pytest.raises(ResbenchError, match="another fault space layout"):
        other.inject(sites)


def test_undeploy_gives_back_the_original_tensors() -> None:
    net = make_net()
    original = net[0].weight.detach().clone()
    injector = Injector.deploy(net, FixedPoint(2, 5))
    assert not torch.equal(net[0].weight, original)
    injector.undeploy()
    assert torch.equal(net[0].weight, original)
    sites = BernoulliFaults().sample(injector.layout, [1e-2], seed=2)[0]
    with pytest.raises(ResbenchError, match="undeployed"):
        injector.inject(sites)


def test_deploying_again_reproduces_the_clean_state() -> None:
    first, second = Injector.deploy(make_net(seed=4), Int8()), Injector.deploy(make_net(seed=4), Int8())
    assert torch.equal(first.codes, second.codes) and torch.equal(first.values, second.values)


def test_tensors_on_several_devices_are_refused() -> None:
    net = make_net()
    net[4].to("meta")
    with pytest.raises(UsageError, match="several devices"):
        Injector.deploy(net, Float32())
