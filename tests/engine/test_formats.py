"""Number formats: round trips, saturation, rounding and the value of every single-bit flip."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from resbench import plugins
from resbench.engine.formats import BFloat16, FixedPoint, Float16, Float32, Int8, NumberFormat, resolve_format
from resbench.errors import UsageError


@pytest.fixture
def engine_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registries filled by the fault-engine plugins alone, through the real plugin manager."""
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", ("resbench.engine.formats", "resbench.engine.faults"))
    monkeypatch.setenv(plugins.DISABLE_PLUGINS_VARIABLE, "1")
    plugins.reset_registries()
    yield
    plugins.reset_registries()


ALL_FORMATS: list[NumberFormat] = [
    Float32(),
    Float16(),
    BFloat16(),
    FixedPoint(15, 16),
    FixedPoint(2, 5),
    FixedPoint(7, 9),
    FixedPoint(0, 3),
    Int8(),
]


def flip(number_format: NumberFormat, value: float, bit: int, scale: torch.Tensor | None = None) -> float:
    """Encode ``value``, flip ``bit`` of its code (in the unsigned pattern) and decode."""
    codes = number_format.encode(torch.tensor([value]), scale)
    width = torch.iinfo(number_format.code_dtype).bits
    pattern = int(codes.to(torch.int64)[0]) & ((1 << width) - 1)
    flipped = pattern ^ (1 << bit)
    if flipped >= 1 << (width - 1):
        flipped -= 1 << width
    return float(number_format.decode(torch.tensor([flipped], dtype=number_format.code_dtype), scale)[0])


@pytest.mark.parametrize("number_format", ALL_FORMATS, ids=lambda f: f.name)
def test_codes_round_trip(number_format: NumberFormat) -> None:
    """encode(decode(c)) == c for every code (all codes of 8/16-bit formats, a sample otherwise).

    A fixed-point code wider than float32's 24-bit significand decodes to the nearest float32, so the
    sample for q15.16 stays within +-2**24, where the round trip is exact.
    """
    bits = number_format.bits_per_element
    generator = torch.Generator().manual_seed(0)
    if bits <= 24 and not isinstance(number_format, Float32):
        codes = torch.arange(1 << bits, dtype=torch.int64)
    elif isinstance(number_format, Float32):
        codes = torch.randint(0, 1 << bits, (100_000,), generator=generator)
    else:
        codes = torch.randint(0, 1 << 24, (100_000,), generator=generator)
        codes = torch.cat([codes, (1 << bits) - codes - 1])
    native = torch.iinfo(number_format.code_dtype).bits == bits
    if native:
        codes = torch.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
    codes = codes.to(number_format.code_dtype)
    scale = torch.tensor(0.03125) if number_format.scaled else None
    decoded = number_format.decode(codes, scale)
    finite = torch.isfinite(decoded)
    if number_format.scaled:
        finite &= codes != -128  # -128 is reachable only by a fault; it saturates to -127 on encode
    assert decoded.dtype == torch.float32
    assert torch.equal(number_format.encode(decoded[finite], scale), codes[finite])


@pytest.mark.parametrize("number_format", ALL_FORMATS, ids=lambda f: f.name)
def test_quantize_is_idempotent_and_keeps_shape(number_format: NumberFormat) -> None:
    values = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    once = number_format.quantize(values)
    assert once.shape == values.shape
    assert torch.equal(number_format.quantize(once), once)


def test_fp32_round_trip_is_exact() -> None:
    values = torch.randn(1000) * 1e3
    assert torch.equal(Float32().quantize(values), values)


def test_float_formats_round_to_nearest_and_saturate() -> None:
    assert Float16().quantize(torch.tensor([1 + 2**-11 + 2**-20])).item() == 1 + 2**-10
    assert Float16().quantize(torch.tensor([1e6, -1e6, math.inf])).tolist() == [65504.0, -65504.0, 65504.0]
    bf16_max = torch.finfo(torch.bfloat16).max
    assert BFloat16().quantize(torch.tensor([3.4e38])).item() == bf16_max
    assert BFloat16().quantize(torch.tensor([1 + 2**-7 + 2**-12])).item() == 1 + 2**-7


def test_fixed_point_rounds_to_nearest_and_saturates() -> None:
    q = FixedPoint(2, 5)
    assert q.bits_per_element == 8
    assert q.quantize(torch.tensor([0.01, 0.02, -0.02, 1.0])).tolist() == [0.0, 1 / 32, -1 / 32, 1.0]
    assert q.quantize(torch.tensor([100.0, -100.0, math.nan])).tolist() == [4 - 1 / 32, -4.0, 0.0]
    wide = FixedPoint(15, 16)
    assert wide.code_dtype == torch.int32
    assert wide.encode(torch.tensor([1e9, -1e9])).tolist() == [2**31 - 1, -(2**31)]
    odd = FixedPoint(7, 9)
    assert odd.code_dtype == torch.int32
    assert odd.quantize(torch.tensor([-3.25, 500.0])).tolist() == [-3.25, 128 - 2**-9]


def test_int8_is_symmetric_per_tensor_and_saturates() -> None:
    fmt = Int8()
    values = torch.tensor([0.5, -1.27, 0.004])
    scale = fmt.scale_for(values)
    assert scale.item() == pytest.approx(0.01)
    assert fmt.encode(values, scale).tolist() == [50, -127, 0]
    assert fmt.encode(torch.tensor([1000.0, -1000.0]), scale).tolist() == [127, -127]
    eps = torch.finfo(torch.float32).eps
    zero_scale = fmt.scale_for(torch.zeros(3))
    assert zero_scale.item() == pytest.approx(eps)  # PyTorch observers' floor, not 1.0
    assert fmt.decode(torch.tensor([64], dtype=torch.int8), zero_scale).item() < 1e-5  # bit 6 of a zero
    assert fmt.scale_for(torch.tensor([1.27, float("inf"), float("nan")])).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="scale"):
        fmt.decode(torch.zeros(2, dtype=torch.int8))


@pytest.mark.parametrize("number_format", [Float32(), Float16(), BFloat16()], ids=lambda f: f.name)
def test_single_flip_of_every_bit_in_ieee_formats(number_format: NumberFormat) -> None:
    """0.5 = 2**-1: sign bit negates, exponent bit k scales by 2**(+-2**k), mantissa bit i adds 2**(i-M)."""
    fields = number_format.bit_fields()
    mantissa_bits = len(fields["mantissa"])
    exponent_bits = len(fields["exponent"])
    bias = 2 ** (exponent_bits - 1) - 1
    stored_exponent = bias - 1
    for bit in range(number_format.bits_per_element):
        if bit == number_format.bits_per_element - 1:
            expected = -0.5
        elif bit >= mantissa_bits:
            exponent = stored_exponent ^ (1 << (bit - mantissa_bits))
            expected = math.ldexp(1.0, exponent - bias)
        else:
            expected = 0.5 * (1 + 2.0 ** (bit - mantissa_bits))
        assert flip(number_format, 0.5, bit) == expected, bit


def test_fp32_exponent_msb_flip_of_one_half() -> None:
    assert flip(Float32(), 0.5, 30) == 0.5 * 2.0**128


def test_single_flip_of_every_bit_in_q2_5() -> None:
    # 0.5 in q2.5 is code 16 = 0b0001_0000; bit 7 is the sign (-128 / 32 = -4)
    expected = [0.5 + 1 / 32, 0.5 + 1 / 16, 0.5 + 1 / 8, 0.5 + 1 / 4, 0.0, 1.5, 2.5, 0.5 - 4]
    assert [flip(FixedPoint(2, 5), 0.5, bit) for bit in range(8)] == expected


@pytest.mark.parametrize("widths", [(15, 16), (7, 9), (3, 4), (0, 3)])
def test_single_flip_of_every_bit_in_fixed_point(widths: tuple[int, int]) -> None:
    integer_bits, fraction_bits = widths
    fmt = FixedPoint(integer_bits, fraction_bits)
    value = 0.5 if fraction_bits else 0.0
    code = round(value * 2**fraction_bits)
    for bit in range(fmt.bits_per_element):
        weight = -(2.0**integer_bits) if bit == fmt.bits_per_element - 1 else 2.0 ** (bit - fraction_bits)
        expected = value - weight if code >> bit & 1 else value + weight
        assert flip(fmt, value, bit) == expected, bit


def test_single_flip_of_every_bit_in_int8() -> None:
    scale = torch.tensor(0.25)
    # 5.0 / 0.25 = code 20 = 0b0001_0100; bit 7 is the sign (-128)
    expected = [(20 ^ (1 << bit)) * 0.25 for bit in range(7)] + [(20 - 128) * 0.25]
    assert [flip(Int8(), 5.0, bit, scale) for bit in range(8)] == expected


def test_bit_fields_partition_the_bits() -> None:
    for fmt in ALL_FORMATS:
        positions = sorted(bit for group in fmt.bit_fields().values() for bit in group)
        assert positions == list(range(fmt.bits_per_element)), fmt.name
        assert fmt.bit_fields()["sign"] == (fmt.bits_per_element - 1,)


def test_formats_are_registered_and_resolved(engine_registries: None) -> None:
    registry = plugins.get_registries().formats
    assert {"fp32", "fp16", "bf16", "int8", "q15.16", "q2.5", "qM.N"} <= set(registry.names())
    assert isinstance(resolve_format("fp16"), Float16)
    q = resolve_format("q3.4")
    assert isinstance(q, FixedPoint) and (q.integer_bits, q.fraction_bits, q.bits_per_element) == (3, 4, 8)
    assert resolve_format("q15.16").bits_per_element == 32
    assert resolve_format("qM.N", {"integer_bits": 1, "fraction_bits": 6}).name == "q1.6"


def test_bad_format_names_and_options_are_usage_errors(engine_registries: None) -> None:
    with pytest.raises(UsageError, match="did you mean 'fp32'"):
        resolve_format("fp31")
    with pytest.raises(UsageError, match="at most 64"):
        resolve_format("q40.40")
    with pytest.raises(UsageError, match="contradicts"):
        resolve_format("q3.4", {"integer_bits": 5})
    with pytest.raises(UsageError, match="unknown option"):
        resolve_format("fp32", {"rounding": "down"})


def test_q15_16_decodes_exactly_and_never_leaves_its_range() -> None:
    fmt = FixedPoint(15, 16)
    codes = torch.tensor([2**31 - 1, -(2**31), 2**24 + 1, 5], dtype=torch.int32)
    decoded = fmt.decode(codes).tolist()
    assert decoded[0] < 32768.0 and decoded[0] == pytest.approx(32767.99998, abs=2e-3)
    assert decoded[1] == -32768.0
    assert decoded[3] == 5 / 65536
    exact = [int(code) / 65536 for code in codes]
    assert all(abs(value) <= abs(truth) for value, truth in zip(decoded, exact, strict=True))  # toward zero
