"""Asymmetric unsigned quantization with a per-layer range: ``uint8-asym``, ``uint4-asym``, ``uint2-asym``.

An m-bit code ``q`` in ``[0, 2**m - 1]`` stands for ``s * (q - z)``, clamped to the layer's range
``[lo, hi]`` (the affine scheme of Jacob et al., CVPR 2018, eq. 1, with unsigned codes). The range is the
minimum and maximum of the stored tensor, widened to hold 0 as PyTorch's ``MinMaxObserver`` does, so that
0 is exact; ``s = (hi - lo) / (2**m - 1)`` (at least float32's epsilon) and the zero point
``z = round(-lo / s)``. Encoding rounds to nearest and clamps to the code range. This is the "robust
quantization" of Stutz et al. (MLSys 2021, sec. 4.1: per-layer, asymmetric, unsigned, rounding to
nearest), the scheme their random bit-error training builds on: an unsigned code has no sign bit whose
flip reverses a weight, and no code decodes outside the layer's range, so a flip of bit ``k`` moves a
weight by ``2**k * s`` at most.

Codes live in ``int8`` (the m-bit pattern in the low bits, upper bits zero, as fixed point narrower than
8 bits does). Parameters per group (one group per tensor, or per output channel with ``granularity:
channel``): ``[s, z, lo, hi]``. With ``faultable_parameters`` the scale (a float32 bit pattern spread over
``32 / m`` codes) and the zero point (one m-bit code) are stored in the fault space; the range ``[lo, hi]``
that dequantization clamps to is a constant of the kernel.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from resbench.engine.formats import NumberFormat, StoredParameter
from resbench.hookspecs import Register
from resbench.options import Options
from resbench.plugins import hookimpl

__all__ = ["AsymmetricUnsigned", "AsymmetricUnsignedOptions", "register_formats"]

_EPSILON = torch.finfo(torch.float32).eps


class AsymmetricUnsigned(NumberFormat):
    """Unsigned m-bit codes with a scale, a zero point and a clamp range per group (module docstring)."""

    code_dtype = torch.int8
    scaled = True

    def __init__(self, bits: int, granularity: Literal["tensor", "channel"] = "tensor",
                 faultable_parameters: bool = False) -> None:
        self.bits_per_element = bits
        self.granularity = granularity
        self.faultable_parameters = faultable_parameters
        self.name = f"uint{bits}-asym"
        self.largest_code = (1 << bits) - 1

    def groups(self, shape: torch.Size) -> int:
        return shape[0] if self.granularity == "channel" and len(shape) >= 2 else 1

    def parameters_for(self, grouped: torch.Tensor) -> torch.Tensor:
        """``[s, z, lo, hi]`` per row of ``grouped`` over its finite values, the range widened to hold 0."""
        values = grouped.detach().to(torch.float32)
        finite = torch.isfinite(values)
        zero = torch.zeros_like(values)
        low = torch.where(finite, values, zero).amin(dim=1).clamp(max=0.0) if values.shape[1] else zero[:, 0]
        high = torch.where(finite, values, zero).amax(dim=1).clamp(min=0.0) if values.shape[1] else zero[:, 0]
        scale = ((high - low) / self.largest_code).clamp(min=_EPSILON)
        zero_point = (-low / scale).round().clamp(0, self.largest_code)
        return torch.stack([scale, zero_point, low, high], dim=1)

    def scale_for(self, values: torch.Tensor) -> torch.Tensor:
        """The parameter row ``[s, z, lo, hi]`` of the whole of ``values`` (the ``scale`` of encode/decode)."""
        return self.parameters_for(values.reshape(1, -1))[0]

    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of ``values``; ``scale`` is the parameter rows ``[s, z, lo, hi]`` on a last axis."""
        parameters = self.scale_for(values) if scale is None else scale
        ratio = torch.nan_to_num(values.to(torch.float32) / parameters[..., 0], nan=0.0)
        unsigned = (ratio.round() + parameters[..., 1]).clamp(0, self.largest_code).to(torch.int16)
        return torch.where(unsigned > 127, unsigned - 256, unsigned).to(torch.int8)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``clamp(s * (q - z), lo, hi)`` with ``scale`` the parameter rows ``[s, z, lo, hi]``."""
        if scale is None:
            raise ValueError(f"{self.name} codes need their parameters (scale, zero point, range) to be decoded")
        unsigned = (codes.to(torch.int32) & self.largest_code).to(torch.float32)
        dequantized = scale[..., 0] * (unsigned - scale[..., 1])
        return torch.minimum(torch.maximum(dequantized, scale[..., 2]), scale[..., 3])

    def encode_with(self, values: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        return self.encode(values, parameters)

    def decode_with(self, codes: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        return self.decode(codes, parameters)

    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        return {"msb": (self.bits_per_element - 1,), "lower": tuple(range(self.bits_per_element - 1))}

    def critical_bits(self) -> tuple[int, ...]:
        """The most significant bit: one flip moves a weight by half the layer's range."""
        return (self.bits_per_element - 1,)

    def describe_layout(self) -> str:
        where = (f"scale over {-(-32 // self.bits_per_element)} codes and zero point over 1 in the fault space"
                 if self.faultable_parameters else "outside the fault space")
        return (f"{super().describe_layout()}, unsigned, x = clamp(s * (code - z), lo, hi); scale s, zero point "
                f"z and range [lo, hi] per {'layer' if self.granularity == 'tensor' else 'channel'} ({where})")

    def stored_parameters(self) -> tuple[StoredParameter, ...]:
        if not self.faultable_parameters:
            return ()
        return StoredParameter("scale", 0, "float32"), StoredParameter("zero_point", 1, "unsigned")


class AsymmetricUnsignedOptions(Options):
    """Options of the ``uintM-asym`` formats."""

    bits: int = Field(ge=1, le=8, description="m: bits per code (the name's M: uint8-asym, uint4-asym, uint2-asym)")
    granularity: Literal["tensor", "channel"] = Field(
        default="tensor", description="one range per tensor (per layer), or per output channel (dim 0 of weights)")
    faultable_parameters: bool = Field(
        default=False, description="store scale (float32 bits over 32/m codes) and zero point (one code) in the "
        "fault space")


def _asymmetric(options: AsymmetricUnsignedOptions) -> NumberFormat:
    """Asymmetric unsigned m bits (uint8-asym, uint4-asym, uint2-asym), per-layer range and zero point (Stutz 2021).

    The "robust quantization" of Stutz et al., MLSys 2021 (see the module docstring)."""
    return AsymmetricUnsigned(options.bits, options.granularity, options.faultable_parameters)


@hookimpl
def register_formats(register: Register) -> None:
    """Register the asymmetric unsigned formats: ``uintM-asym`` answers ``uint8-asym``, ``uint4-asym``, ..."""
    register("uintM-asym", _asymmetric, options=AsymmetricUnsignedOptions, pattern=r"uint(?P<bits>\d+)-asym")
