"""Number formats: how a stored tensor is laid out in bits.

A :class:`NumberFormat` turns float tensors into integer *codes* (the bit patterns held in memory) and
back into the float32 values the network computes with. Faults act on the codes.

**Bit numbering** (used everywhere in resbench): bit ``i`` of a code is the bit of value ``2**i`` in
its unsigned bit pattern, so the least significant bit is bit 0 and the most significant bit, the sign
bit of every built-in format, is bit ``bits_per_element - 1``. For ``fp32`` bit 31 is the sign, bits
30..23 the exponent and bits 22..0 the mantissa (IEEE 754-2019, section 3.4).

Codes live in a signed integer dtype at least ``bits_per_element`` wide (``int32`` for ``fp32``,
``int16`` for ``fp16``/``bf16``, ``int8`` for ``int8`` and ``q2.5``). A fixed-point format whose width
is not 8, 16, 32 or 64 keeps its pattern in the low bits of the next wider dtype, upper bits zero.

Encoding rounds to nearest (ties to even) and saturates at the largest finite magnitude of the format.

**Quantization parameters.** A quantized format stores, beside the codes, a few parameters per *group*
of elements: one group per tensor (``int8``) or one per output channel (``int8`` with ``granularity:
channel``; dim 0 of a weight of two or more dimensions). :meth:`NumberFormat.groups` counts the groups of a
tensor, :meth:`NumberFormat.parameters_for` computes their parameters (float32, one row per group: the
scale first) and :meth:`NumberFormat.encode_with` / :meth:`NumberFormat.decode_with` use them, the rows
broadcasting against the codes with the parameters on a last axis. With ``faultable_parameters`` a format
declares which parameters are stored in the fault space (:meth:`NumberFormat.stored_parameters`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from resbench.errors import UsageError
from resbench.hookspecs import Register
from resbench.options import NoOptions, Options
from resbench.plugins import get_registries, hookimpl

__all__ = [
    "BFloat16",
    "FixedPoint",
    "FixedPointOptions",
    "Float16",
    "Float32",
    "Int8",
    "Int8Options",
    "NumberFormat",
    "StoredParameter",
    "register_formats",
    "resolve_format",
]

_CONTAINERS: tuple[tuple[int, torch.dtype], ...] = (
    (8, torch.int8),
    (16, torch.int16),
    (32, torch.int32),
    (64, torch.int64),
)


def _container(bits: int) -> torch.dtype:
    """The narrowest signed integer dtype holding ``bits`` bits."""
    for width, dtype in _CONTAINERS:
        if bits <= width:
            return dtype
    raise UsageError(f"a code of {bits} bits does not fit in 64 bits")


@dataclass(frozen=True)
class StoredParameter:
    """A quantization parameter kept in the fault space: column ``column`` of the parameter rows, stored as
    a float32 bit pattern (``float32``) or as an unsigned integer of the code's width (``unsigned``)."""

    name: str
    column: int
    kind: Literal["float32", "unsigned"]


class NumberFormat(ABC):
    """How one stored element is laid out in bits (see the module docstring for the bit numbering).

    Subclasses set :attr:`name`, :attr:`bits_per_element` and :attr:`code_dtype`. Formats with a
    per-tensor scale (``int8``) set :attr:`scaled`; their ``encode``/``decode`` take that scale.
    :attr:`engine` says where a deployed model computes: ``simulated`` (float kernels on the decoded
    values) or ``torch-ao`` (PyTorch's quantized kernels on the stored codes, :mod:`resbench.engine.torch_ao`).
    """

    name: str
    bits_per_element: int
    code_dtype: torch.dtype
    scaled: bool = False
    engine: str = "simulated"
    faultable_parameters: bool = False

    @abstractmethod
    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Integer codes of ``values`` (round to nearest, saturate), same shape and device."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The float32 values that ``codes`` stand for; ``scale`` broadcasts against ``codes``."""

    @abstractmethod
    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        """Named groups of bit positions (``sign``, ``exponent``, ...), for restricting faults."""

    def critical_bits(self) -> tuple[int, ...]:
        """The bits whose single flip can wreck a stored value, which critical-bit strata sample apart
        (:mod:`resbench.engine.strata`). By default the two most significant bits; formats say better."""
        return tuple(range(max(self.bits_per_element - 2, 0), self.bits_per_element))

    def scale_for(self, values: torch.Tensor) -> torch.Tensor:
        """The per-tensor scale stored alongside ``values`` (a 0-d float32 tensor; 1 when unscaled)."""
        return torch.ones((), dtype=torch.float32, device=values.device)

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        """``decode(encode(values))``: what the network computes with once ``values`` are stored."""
        grouped = values.reshape(self.groups(values.shape), -1)
        parameters = self.parameters_for(grouped).unsqueeze(1)
        return self.decode_with(self.encode_with(grouped, parameters), parameters).view(values.shape)

    def groups(self, shape: torch.Size) -> int:
        """How many parameter groups a tensor of ``shape`` is stored with (contiguous runs of its elements
        in memory order): 1, one per tensor, unless the format quantizes per channel."""
        return 1

    def parameters_for(self, grouped: torch.Tensor) -> torch.Tensor:
        """The parameters of each row of ``grouped`` (shape ``(groups, n)``): float32 ``(groups, P)``.
        By default the one column is :meth:`scale_for` of the whole tensor."""
        return self.scale_for(grouped.reshape(-1)).reshape(1, 1).expand(grouped.shape[0], 1).clone()

    def encode_with(self, values: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` with parameter rows that broadcast against ``values`` (parameters on a last axis)."""
        return self.encode(values, parameters[..., 0] if self.scaled else None)

    def decode_with(self, codes: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` with parameter rows that broadcast against ``codes`` (parameters on a last axis)."""
        return self.decode(codes, parameters[..., 0] if self.scaled else None)

    def stored_parameters(self) -> tuple[StoredParameter, ...]:
        """The parameters kept in the fault space, in storage order (none unless ``faultable_parameters``)."""
        return ()

    def describe_layout(self) -> str:
        """The bit layout in one line (``resbench list formats``): fields from the most significant bit down."""
        fields = sorted(self.bit_fields().items(), key=lambda item: -max(item[1], default=-1))
        spans = ", ".join(f"{name} {_span(bits)}" for name, bits in fields if bits)
        return f"{self.bits_per_element} bits ({spans})"

    def __repr__(self) -> str:
        return f"<NumberFormat {self.name}: {self.bits_per_element} bits>"


def _span(bits: tuple[int, ...]) -> str:
    """``7`` or ``6..0``: bit positions, highest first."""
    return str(bits[0]) if len(bits) == 1 else f"{max(bits)}..{min(bits)}"


class _IEEEFloat(NumberFormat):
    """An IEEE 754 binary format stored as its own bit pattern (sign, exponent, mantissa)."""

    storage_dtype: torch.dtype
    exponent_bits: int

    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        limit = torch.finfo(self.storage_dtype).max
        saturated = values.to(torch.float32).clamp(-limit, limit)
        return saturated.to(self.storage_dtype).view(self.code_dtype)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return codes.view(self.storage_dtype).to(torch.float32)

    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        sign = self.bits_per_element - 1
        mantissa_bits = sign - self.exponent_bits
        return {
            "sign": (sign,),
            "exponent": tuple(range(mantissa_bits, sign)),
            "mantissa": tuple(range(mantissa_bits)),
        }

    def critical_bits(self) -> tuple[int, ...]:
        """The top exponent bit: one flip multiplies a value below 1 by ``2**(2**(exponent_bits - 1))``
        (about 3e38 in fp32 and bf16, 65536 in fp16) and turns one in [1, 2) into Inf or NaN."""
        return (self.bits_per_element - 2,)


class Float32(_IEEEFloat):
    """IEEE 754 binary32: 1 sign, 8 exponent and 23 mantissa bits."""

    name = "fp32"
    bits_per_element = 32
    code_dtype = torch.int32
    storage_dtype = torch.float32
    exponent_bits = 8


class Float16(_IEEEFloat):
    """IEEE 754 binary16: 1 sign, 5 exponent and 10 mantissa bits."""

    name = "fp16"
    bits_per_element = 16
    code_dtype = torch.int16
    storage_dtype = torch.float16
    exponent_bits = 5


class BFloat16(_IEEEFloat):
    """bfloat16 (the upper half of binary32): 1 sign, 8 exponent and 7 mantissa bits."""

    name = "bf16"
    bits_per_element = 16
    code_dtype = torch.int16
    storage_dtype = torch.bfloat16
    exponent_bits = 8


class FixedPoint(NumberFormat):
    """Two's-complement fixed point qM.N: 1 sign bit on top, M integer bits, N fraction bits.

    A code ``c`` (read as a signed ``1 + M + N``-bit integer) stands for ``c / 2**N``; the range is
    ``[-2**M, 2**M - 2**-N]``. Codes wider than float32's 24-bit significand are decoded exactly in
    float64 and rounded toward zero to float32, so a decoded value never leaves the format's range (the
    largest q15.16 code decodes to 32767.998, not 32768).
    """

    def __init__(self, integer_bits: int, fraction_bits: int) -> None:
        self.integer_bits = integer_bits
        self.fraction_bits = fraction_bits
        self.bits_per_element = 1 + integer_bits + fraction_bits
        self.code_dtype = _container(self.bits_per_element)
        self.name = f"q{integer_bits}.{fraction_bits}"
        self._native = torch.iinfo(self.code_dtype).bits == self.bits_per_element

    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        top = 2.0 ** (self.bits_per_element - 1)
        highest = math.nextafter(top, 0.0) if self.bits_per_element > 53 else top - 1
        scaled = torch.nan_to_num(values.to(torch.float64), nan=0.0) * 2.0**self.fraction_bits
        signed = scaled.round().clamp(-top, highest).to(torch.int64)
        if not self._native:
            signed = signed & ((1 << self.bits_per_element) - 1)
        return signed.to(self.code_dtype)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        signed = codes
        if not self._native:
            half = 1 << (self.bits_per_element - 1)
            sign = (codes >> (self.bits_per_element - 1)) & 1
            signed = codes - sign * half - sign * half
        if self.bits_per_element <= 24:
            return signed.to(torch.float32) * 2.0**-self.fraction_bits
        exact = signed.to(torch.float64) * 2.0**-self.fraction_bits
        rounded = exact.to(torch.float32)
        outward = rounded.to(torch.float64).abs() > exact.abs()
        return torch.where(outward, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)

    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        sign = self.bits_per_element - 1
        return {
            "sign": (sign,),
            "integer": tuple(range(self.fraction_bits, sign)),
            "fraction": tuple(range(self.fraction_bits)),
        }

    def critical_bits(self) -> tuple[int, ...]:
        """The sign and integer bits: one flip moves a value by at least 1."""
        return tuple(range(self.fraction_bits, self.bits_per_element))


class Int8(NumberFormat):
    """Symmetric int8: ``code = round(x / s)`` in [-127, 127] with ``s = max|x| / 127``, per tensor or,
    with ``granularity="channel"``, per output channel (dim 0 of every tensor of two or more dimensions,
    as PyTorch's fbgemm and qnnpack weights are; biases and other 1-d tensors keep one scale).

    The scale is kept in float32, outside the fault space unless ``faultable_parameters`` (Jacob et al.,
    CVPR 2018, eq. 1 with zero point 0). ``max|x|`` is taken over the finite values, and the scale is at
    least float32's machine epsilon, as PyTorch's quantization observers do (``MinMaxObserver``: ``scale =
    max(scale, eps)``): an all-zero tensor gets a tiny scale, so a flipped bit in it stays tiny.
    """

    name = "int8"
    bits_per_element = 8
    code_dtype = torch.int8
    scaled = True

    def __init__(self, granularity: Literal["tensor", "channel"] = "tensor", faultable_parameters: bool = False,
                 engine: Literal["simulated", "torch-ao"] = "simulated", backend: str = "fbgemm",
                 calibration_images: int = 256) -> None:
        self.granularity = granularity
        self.faultable_parameters = faultable_parameters
        self.engine = engine
        self.backend = backend
        self.calibration_images = calibration_images

    def scheme(self) -> dict[str, object]:
        """What identifies the deployment: engine, granularity and, for torch-ao, backend and calibration."""
        described: dict[str, object] = {"engine": self.engine, "granularity": self.granularity,
                                        "faultable_parameters": self.faultable_parameters}
        if self.engine == "torch-ao":
            described |= {"backend": self.backend, "calibration_images": self.calibration_images}
        return described

    def groups(self, shape: torch.Size) -> int:
        return shape[0] if self.granularity == "channel" and len(shape) >= 2 else 1

    def scale_for(self, values: torch.Tensor) -> torch.Tensor:
        return self.parameters_for(values.reshape(1, -1))[0, 0]

    def parameters_for(self, grouped: torch.Tensor) -> torch.Tensor:
        magnitudes = grouped.detach().abs().to(torch.float32)
        finite = torch.where(torch.isfinite(magnitudes), magnitudes, torch.zeros_like(magnitudes))
        largest = finite.amax(dim=1, keepdim=True) if finite.shape[1] else finite.new_zeros(finite.shape[0], 1)
        return torch.clamp(largest / 127.0, min=torch.finfo(torch.float32).eps)

    def stored_parameters(self) -> tuple[StoredParameter, ...]:
        return (StoredParameter("scale", 0, "float32"),) if self.faultable_parameters else ()

    def describe_layout(self) -> str:
        where = "in the fault space, 4 codes each" if self.faultable_parameters else "outside the fault space"
        return (f"{super().describe_layout()}, two's complement, x = code * s; a float32 scale s per "
                f"{self.granularity} ({where})")

    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale_for(values) if scale is None else scale
        ratio = torch.nan_to_num(values.to(torch.float32) / scale, nan=0.0)
        return ratio.round().clamp(-127, 127).to(torch.int8)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if scale is None:
            raise ValueError("int8 codes need their per-tensor scale to be decoded")
        return codes.to(torch.float32) * scale

    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        return {"sign": (7,), "magnitude": tuple(range(7))}


class Int8Options(Options):
    """Options of symmetric ``int8``."""

    granularity: Literal["tensor", "channel"] = Field(
        default="tensor", description="one scale per tensor, or per output channel (dim 0 of weights)")
    faultable_parameters: bool = Field(
        default=False, description="store the scales in the fault space (float32 bit patterns, 4 codes each)")
    engine: Literal["simulated", "torch-ao"] = Field(
        default="simulated", description="simulated: float kernels on decoded weights; torch-ao: the model "
        "converted by PyTorch post-training quantization, run by its quantized kernels, faults in int_repr()")
    backend: Literal["fbgemm", "qnnpack", "x86"] = Field(
        default="fbgemm", description="torch-ao: the quantized engine (fbgemm on x86, qnnpack on ARM)")
    calibration_images: int = Field(
        default=256, ge=1, le=100_000, description="torch-ao: training images (seeded sample) that calibrate "
        "the activation observers")


class FixedPointOptions(Options):
    """Widths of a qM.N fixed-point format (1 sign bit + M integer bits + N fraction bits <= 64)."""

    integer_bits: int = Field(ge=0, le=63, description="M: integer bits below the sign bit")
    fraction_bits: int = Field(ge=0, le=63, description="N: fraction bits")

    @model_validator(mode="after")
    def _fits(self) -> FixedPointOptions:
        if 1 + self.integer_bits + self.fraction_bits > 64:
            raise ValueError("1 + integer_bits + fraction_bits must be at most 64")
        if self.integer_bits + self.fraction_bits == 0:
            raise ValueError("q0.0 has a sign bit and no value bit; give at least one integer or fraction bit")
        return self


def _fp32(options: NoOptions) -> NumberFormat:
    """IEEE 754 binary32 (32 bits)."""
    return Float32()


def _fp16(options: NoOptions) -> NumberFormat:
    """IEEE 754 binary16 (16 bits)."""
    return Float16()


def _bf16(options: NoOptions) -> NumberFormat:
    """bfloat16 (16 bits: 8 exponent, 7 mantissa)."""
    return BFloat16()


def _int8(options: Int8Options) -> NumberFormat:
    """Symmetric int8 (8 bits, scale max|x|/127 per tensor or per channel; torch-ao: real quantized kernels)."""
    return Int8(options.granularity, options.faultable_parameters, options.engine, options.backend,
                options.calibration_images)


def _fixed_point(options: FixedPointOptions) -> NumberFormat:
    """Two's-complement fixed point qM.N (1 sign + M integer + N fraction bits)."""
    return FixedPoint(options.integer_bits, options.fraction_bits)


def _q15_16(options: NoOptions) -> NumberFormat:
    """Fixed point q15.16 (32 bits)."""
    return FixedPoint(15, 16)


def _q2_5(options: NoOptions) -> NumberFormat:
    """Fixed point q2.5 (8 bits)."""
    return FixedPoint(2, 5)


@hookimpl
def register_formats(register: Register) -> None:
    """Register the built-in number formats."""
    for name, factory in (("fp32", _fp32), ("fp16", _fp16), ("bf16", _bf16)):
        register(name, factory, options=NoOptions)
    register("int8", _int8, options=Int8Options)
    register("q15.16", _q15_16, options=NoOptions)
    register("q2.5", _q2_5, options=NoOptions)
    register(
        "qM.N",
        _fixed_point,
        options=FixedPointOptions,
        pattern=r"q(?P<integer_bits>\d+)\.(?P<fraction_bits>\d+)",
    )


def resolve_format(name: str, options: dict[str, Any] | None = None) -> NumberFormat:
    """The number format called ``name`` (``fp16``, ``q3.4``, ...) built with ``options``.

    Unknown names and invalid options raise :class:`UsageError` with one clear line.
    """
    made: NumberFormat = get_registries().formats.build(name, options, where=f"format {name!r}").value
    return made
