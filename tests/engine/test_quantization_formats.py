"""Quantization schemes: per-channel symmetric int8, asymmetric unsigned m-bit codes, faultable parameters.

Bit layouts and round trips of every scheme, the exact value of a single-bit flip (2**k times the scale,
clamped where the scheme clamps), and an injector that keeps scales and zero points out of the fault space
unless asked, and restores them bit for bit when they are in it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resbench.engine.faults import BernoulliFaults, FaultModelOptions, FaultSites
from resbench.engine.formats import Int8, NumberFormat, resolve_format
from resbench.engine.injection import Injector
from resbench.engine.quantization import AsymmetricUnsigned
from resbench.errors import UsageError

SCHEMES: list[NumberFormat] = [Int8("channel"), AsymmetricUnsigned(8), AsymmetricUnsigned(4),
                               AsymmetricUnsigned(2), AsymmetricUnsigned(8, "channel")]


def _weights(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 3, 3, generator=generator) * torch.linspace(0.1, 2.0, 6).view(6, 1, 1, 1) + 0.05


def _grouped(number_format: NumberFormat, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    grouped = values.reshape(number_format.groups(values.shape), -1)
    return grouped, number_format.parameters_for(grouped).unsqueeze(1)


def _unsigned(codes: torch.Tensor, bits: int) -> torch.Tensor:
    return codes.to(torch.int64) & ((1 << bits) - 1)


def _with_bit_flipped(codes: torch.Tensor, bit: int, bits: int) -> torch.Tensor:
    flipped = _unsigned(codes, bits) ^ (1 << bit)
    width = torch.iinfo(codes.dtype).bits
    return torch.where(flipped >= 1 << (width - 1), flipped - (1 << width), flipped).to(codes.dtype)


@pytest.mark.parametrize("number_format", SCHEMES, ids=lambda f: f"{f.name}-{getattr(f, 'granularity', '')}")
def test_every_code_round_trips_and_values_land_within_half_a_step(number_format: NumberFormat) -> None:
    values = _weights()
    grouped, parameters = _grouped(number_format, values)
    bits = number_format.bits_per_element
    codes = number_format.encode_with(grouped, parameters)
    assert int(_unsigned(codes, 8).max()) < 1 << bits
    assert torch.equal(_unsigned(codes, 8), _unsigned(codes, bits))  # upper bits of the container are zero
    decoded = number_format.decode_with(codes, parameters)
    assert torch.all((decoded - grouped).abs() <= parameters[..., 0] / 2 * (1 + 1e-5))
    every = torch.arange(1 << bits) if bits < 8 else torch.arange(-128, 128)
    every_codes = every.to(torch.int8).view(1, -1).expand(grouped.shape[0], -1)
    again = number_format.encode_with(number_format.decode_with(every_codes, parameters), parameters)
    expected = every_codes.clamp(-127, 127) if isinstance(number_format, Int8) else every_codes
    assert torch.equal(again, expected)


def test_per_channel_int8_has_one_scale_per_output_channel() -> None:
    values = _weights()
    number_format = Int8("channel")
    assert number_format.groups(values.shape) == 6 and number_format.groups(torch.Size([6])) == 1
    _, parameters = _grouped(number_format, values)
    expected = values.abs().amax(dim=(1, 2, 3)) / 127
    assert torch.equal(parameters[:, 0, 0], expected)
    assert Int8().groups(values.shape) == 1
    per_tensor = Int8().quantize(values)
    per_channel = number_format.quantize(values)
    assert (per_channel - values).abs().amax(dim=(1, 2, 3))[0] < (per_tensor - values).abs().amax(dim=(1, 2, 3))[0]


def test_asymmetric_parameters_are_the_range_with_zero_exact() -> None:
    values = torch.tensor([[-0.3, 0.0, 0.9, 0.45]])
    number_format = AsymmetricUnsigned(8)
    scale, zero_point, low, high = number_format.parameters_for(values)[0].tolist()
    assert (low, high) == pytest.approx((-0.3, 0.9))
    assert scale == pytest.approx(1.2 / 255)
    assert zero_point == round(0.3 / scale)
    codes = number_format.encode(values, number_format.parameters_for(values)[0])
    assert int(_unsigned(codes, 8)[0, 1]) == zero_point
    assert float(number_format.decode(codes, number_format.parameters_for(values)[0])[0, 1]) == 0.0
    assert AsymmetricUnsigned(4).bit_fields() == {"msb": (3,), "lower": (0, 1, 2)}


@pytest.mark.parametrize("number_format", SCHEMES, ids=lambda f: f"{f.name}-{getattr(f, 'granularity', '')}")
@pytest.mark.parametrize("seed", [0, 1])
def test_a_flip_of_bit_k_moves_the_value_by_two_to_the_k_scales(number_format: NumberFormat, seed: int) -> None:
    """|decode(c ^ 2**k) - decode(c)| == 2**k * s, clamped to [lo, hi] where the scheme clamps."""
    grouped, parameters = _grouped(number_format, _weights(seed))
    codes = number_format.encode_with(grouped, parameters)
    clean = number_format.decode_with(codes, parameters)
    scale = parameters[..., 0].expand_as(clean)
    for bit in range(number_format.bits_per_element):
        flipped = number_format.decode_with(_with_bit_flipped(codes, bit, number_format.bits_per_element), parameters)
        if isinstance(number_format, Int8):
            expected = scale * 2**bit
        else:
            zero_point, low, high = parameters[..., 1], parameters[..., 2], parameters[..., 3]
            raw = _unsigned(codes, number_format.bits_per_element).to(torch.float32)
            moved = torch.where(raw.to(torch.int64) & (1 << bit) != 0, raw - 2**bit, raw + 2**bit)
            target = torch.minimum(torch.maximum(scale * (moved - zero_point), low), high)
            expected = (target - clean).abs()
            assert torch.all((flipped >= low) & (flipped <= high))
        rounding = 2 * torch.finfo(torch.float32).eps * (flipped.abs() + clean.abs() + expected)  # of each product
        assert torch.all(((flipped.double() - clean.double()).abs() - expected.double()).abs() <= rounding)


def test_the_registry_builds_every_scheme_and_refuses_bad_options() -> None:
    assert resolve_format("uint4-asym").bits_per_element == 4
    assert resolve_format("uint2-asym", {"granularity": "channel"}).groups(torch.Size([3, 2])) == 3
    assert resolve_format("int8", {"granularity": "channel"}).groups(torch.Size([3, 2])) == 3
    assert resolve_format("int8").groups(torch.Size([3, 2])) == 1
    for name, options in (("uint9-asym", {}), ("int8", {"granularity": "row"}), ("uint8-asym", {"bits": 4}),
                          ("int8", {"engine": "tensorrt"})):
        with pytest.raises(UsageError):
            resolve_format(name, options)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


def _single_flip(injector: Injector, element: int, bit: int) -> FaultSites:
    return FaultSites(injector.layout, np.array([element]), np.array([bit]), "flip", 1e-3)


@pytest.mark.parametrize("number_format", SCHEMES, ids=lambda f: f"{f.name}-{getattr(f, 'granularity', '')}")
def test_the_injector_decodes_each_element_with_its_own_group(number_format: NumberFormat) -> None:
    net = _net()
    expected = number_format.quantize(net[0].weight.detach().clone())
    injector = Injector.deploy(net, number_format)
    assert torch.equal(net[0].weight, expected)
    for element in (0, 40, 107):
        clean = float(injector.values[element])
        channel = element // 27
        rows = injector.parameters[channel if number_format.groups(net[0].weight.shape) > 1 else 0]
        with injector.injected(_single_flip(injector, element, 1)):
            moved = abs(float(injector.values[element]) - clean)
            if isinstance(number_format, Int8):
                assert moved == pytest.approx(2 * float(rows[0]), rel=2e-5)  # float32 products
            else:
                assert moved <= 2 * float(rows[0]) * (1 + 2e-5)
        assert injector.is_clean() and float(injector.values[element]) == clean


def test_scales_and_zero_points_are_in_the_fault_space_only_when_asked() -> None:
    plain = Injector.deploy(_net(), AsymmetricUnsigned(8))
    stored = Injector.deploy(_net(), AsymmetricUnsigned(8, faultable_parameters=True))
    assert plain.layout.names == ("0.weight", "0.bias", "3.weight", "3.bias")
    assert stored.layout.names[:4] == plain.layout.names
    assert stored.layout.names[4:] == ("0.weight.scale", "0.weight.zero_point", "0.bias.scale", "0.bias.zero_point",
                                       "3.weight.scale", "3.weight.zero_point", "3.bias.scale", "3.bias.zero_point")
    assert stored.layout.numels[4:6] == (4, 1)
    per_channel = Injector.deploy(_net(), Int8("channel", faultable_parameters=True))
    assert per_channel.layout.names[4:] == ("0.weight.scale", "0.bias.scale", "3.weight.scale", "3.bias.scale")
    assert per_channel.layout.numels[4:] == (4 * 4, 4, 5 * 4, 4)
    sites = BernoulliFaults(FaultModelOptions()).sample(plain.layout, [0.05], seed=3)[0]
    assert sites.elements.max() < plain.layout.total_elements == plain.values.numel()


def test_a_flipped_scale_bit_rescales_its_whole_group_and_restores_exactly() -> None:
    net = _net()
    injector = Injector.deploy(net, Int8("channel", faultable_parameters=True))
    clean_weight = net[0].weight.detach().clone()
    scale_start = injector.layout.offsets[4]
    channel, byte, bit = 2, 2, 7  # bit 23 of the float32 scale: the lowest exponent bit
    scale = float(injector.parameters[channel, 0])
    with injector.injected(_single_flip(injector, scale_start + channel * 4 + byte, bit)):
        new_scale = float(injector.parameters[channel, 0])
        assert new_scale in (scale * 2, scale / 2)
        torch.testing.assert_close(net[0].weight[channel], clean_weight[channel] * new_scale / scale)
        assert torch.equal(net[0].weight[channel + 1], clean_weight[channel + 1])
    assert injector.is_clean()
    assert torch.equal(net[0].weight.view(torch.int32), clean_weight.view(torch.int32))
    assert float(injector.parameters[channel, 0]) == scale


def test_a_flipped_zero_point_bit_shifts_its_group_within_the_range() -> None:
    net = _net()
    injector = Injector.deploy(net, AsymmetricUnsigned(4, faultable_parameters=True))
    clean_weight = net[0].weight.detach().clone()
    zero_point_element = injector.layout.offsets[5]
    scale, zero_point, low, high = injector.parameters[0].tolist()
    with injector.injected(_single_flip(injector, zero_point_element, 0)):
        moved_zero_point = float(injector.parameters[0, 1])
        assert abs(moved_zero_point - zero_point) == 1
        codes = injector.codes[:108].to(torch.int64) & 15
        expected = (scale * (codes.to(torch.float32) - moved_zero_point)).clamp(low, high)
        assert torch.equal(net[0].weight.reshape(-1), expected)
    injector.reset()
    assert torch.equal(net[0].weight, clean_weight)
