"""FP8 E4M3: round trips, rounding, saturation and what single bit flips do to stored values."""

from __future__ import annotations

import math

import pytest
import torch

from resbench_example import FP8E4M3, FP8E4M3Options, make_fp8_e4m3

ALL_CODES = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.int8)


def code(bits: str) -> torch.Tensor:
    """A one-element code tensor from ``"S.EEEE.MMM"``."""
    return torch.tensor([int(bits.replace(".", ""), 2)], dtype=torch.int32).to(torch.uint8).view(torch.int8)


def value(bits: str) -> float:
    return float(FP8E4M3().decode(code(bits))[0])


def test_layout() -> None:
    fp8 = FP8E4M3()
    assert (fp8.name, fp8.bits_per_element, fp8.code_dtype) == ("fp8-e4m3", 8, torch.int8)
    fields = fp8.bit_fields()
    assert sorted(bit for bits in fields.values() for bit in bits) == list(range(8))


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        ("0.0111.000", 1.0),
        ("1.0111.000", -1.0),
        ("0.1000.100", 3.0),
        ("0.1111.110", 448.0),
        ("0.0001.000", 2.0**-6),  # smallest normal
        ("0.0000.001", 2.0**-9),  # smallest subnormal
        ("0.0000.111", 7 * 2.0**-9),  # largest subnormal
        ("0.1111.000", 256.0),  # E = 15 is an ordinary binade: there is no infinity
    ],
)
def test_decode_known_codes(bits: str, expected: float) -> None:
    assert value(bits) == expected


def test_zero_signs_and_nan() -> None:
    assert value("0.0000.000") == 0.0
    assert math.copysign(1.0, value("1.0000.000")) == -1.0
    assert math.isnan(value("0.1111.111"))
    assert math.isnan(value("1.1111.111"))


def test_every_finite_code_round_trips() -> None:
    fp8 = FP8E4M3()
    values = fp8.decode(ALL_CODES)
    finite = torch.isfinite(values)
    assert int(finite.sum()) == 254  # 256 codes less the two NaNs
    assert torch.equal(fp8.encode(values[finite]), ALL_CODES[finite])
    assert values.dtype == torch.float32


def test_decode_is_monotone_in_the_code() -> None:
    values = FP8E4M3().decode(ALL_CODES[:127])  # 0.0000.000 .. 0.1111.110
    assert bool((values[1:] > values[:-1]).all())


def test_rounds_to_nearest_ties_to_even() -> None:
    fp8 = FP8E4M3()
    assert fp8.quantize(torch.tensor([1.0625])).item() == 1.0  # halfway 1.0 / 1.125: even mantissa 000
    assert fp8.quantize(torch.tensor([1.1875])).item() == 1.25  # halfway 1.125 / 1.25: even mantissa 010
    assert fp8.quantize(torch.tensor([1.07])).item() == 1.125
    assert fp8.quantize(torch.tensor([2.0**-10])).item() == 0.0  # halfway 0 / smallest subnormal
    assert fp8.quantize(torch.tensor([3 * 2.0**-11])).item() == 2.0**-9
    assert fp8.quantize(torch.tensor([15.5])).item() == 16.0  # carries into the next binade


def test_every_midpoint_rounds_to_the_even_code() -> None:
    fp8 = FP8E4M3()
    values = fp8.decode(ALL_CODES[:127])
    midpoints = (values[1:] + values[:-1]) / 2
    codes = fp8.encode(midpoints).to(torch.int32)
    assert bool((codes % 2 == 0).all())
    assert torch.equal(codes, torch.where(torch.arange(126) % 2 == 0, torch.arange(126), torch.arange(1, 127)))


def test_overflow_saturates_by_default() -> None:
    fp8 = FP8E4M3()
    big = torch.tensor([448.0, 463.9, 464.0, 1e6, math.inf, -math.inf, -500.0])
    assert fp8.quantize(big).tolist() == [448.0, 448.0, 448.0, 448.0, 448.0, -448.0, -448.0]


def test_overflow_is_nan_without_saturation() -> None:
    fp8 = make_fp8_e4m3(FP8E4M3Options(saturate=False))
    quantized = fp8.quantize(torch.tensor([448.0, 500.0, -math.inf]))
    assert quantized[0].item() == 448.0
    assert bool(torch.isnan(quantized[1:]).all())


def test_nan_encodes_as_nan() -> None:
    fp8 = FP8E4M3()
    assert fp8.encode(torch.tensor([math.nan])).view(torch.uint8).item() == 0b0_1111_111


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="this torch has no float8_e4m3fn to compare with")
def test_agrees_with_torch_float8() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(50_000, generator=generator) * torch.exp2(
        torch.randint(-14, 12, (50_000,), generator=generator).to(torch.float32)
    )
    fp8 = FP8E4M3()
    assert torch.equal(fp8.encode(values), values.to(torch.float8_e4m3fn).view(torch.int8))
    reference = ALL_CODES.view(torch.float8_e4m3fn).to(torch.float32)
    assert torch.equal(fp8.decode(ALL_CODES).nan_to_num(nan=1234.0), reference.nan_to_num(nan=1234.0))


@pytest.mark.parametrize(
    ("bit", "expected"),
    [
        (7, -1.0),  # sign
        (6, 256.0),  # top exponent bit: 2**0 -> 2**8
        (5, 2.0**-4),  # 0111 -> 0011
        (3, 0.5),  # 0111 -> 0110
        (2, 1.5),  # top mantissa bit
        (0, 1.125),  # bottom mantissa bit
    ],
)
def test_single_bit_flip_of_one(bit: int, expected: float) -> None:
    fp8 = FP8E4M3()
    codes = fp8.encode(torch.tensor([1.0]))
    flipped = codes ^ torch.tensor([1 << bit], dtype=torch.int32).to(torch.uint8).view(torch.int8)
    assert fp8.decode(flipped).item() == expected
    assert torch.equal(flipped ^ torch.tensor([1 << bit], dtype=torch.int32).to(torch.uint8).view(torch.int8), codes)


def test_flipping_the_lowest_bit_of_the_largest_value_gives_nan() -> None:
    fp8 = FP8E4M3()
    flipped = fp8.encode(torch.tensor([448.0])) ^ torch.tensor([1], dtype=torch.int8)
    assert math.isnan(fp8.decode(flipped).item())


def test_every_single_bit_flip_lands_on_the_code_with_that_bit_changed() -> None:
    """Flip bit ``i`` of all 256 codes by XOR (as the fault engine does) and restore exactly."""
    fp8 = FP8E4M3()
    table = fp8.decode(ALL_CODES)
    for bit in range(8):
        mask = torch.tensor(1 << bit, dtype=torch.int32).to(torch.uint8).view(torch.int8)
        flipped = ALL_CODES ^ mask
        expected = table[flipped.view(torch.uint8).to(torch.int64)]
        decoded = fp8.decode(flipped)
        assert torch.equal(decoded.nan_to_num(nan=1234.0), expected.nan_to_num(nan=1234.0))
        assert torch.equal(flipped ^ mask, ALL_CODES)
        if bit == 7:
            assert torch.equal(decoded.abs().nan_to_num(nan=1.0), table.abs().nan_to_num(nan=1.0))
