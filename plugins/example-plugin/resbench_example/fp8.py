"""FP8 E4M3: the 8-bit float of the OCP 8-bit Floating Point Specification (OFP8), rev. 1.0, 2023.

Layout, bit 7 first (resbench numbers bits from the least significant, bit 0):

* bit 7: sign ``S``;
* bits 6..3: exponent ``E``, bias 7;
* bits 2..0: mantissa ``M``.

A code stands for ``(-1)**S * 2**(E - 7) * (1 + M / 8)`` when ``E > 0`` and for the subnormal
``(-1)**S * 2**-6 * (M / 8)`` when ``E == 0`` (OFP8 table 1). This is the ``e4m3fn`` variant: there is
no infinity, and the only NaN codes are ``S.1111.111``, so ``S.1111.110`` = 448 is the largest finite
magnitude. Encoding rounds to nearest, ties to even, and (by default) saturates: anything beyond 448,
infinities included, becomes ±448 (OFP8 section 5.2, "saturation mode"). NaN encodes as ``0.1111.111``.

A single bit flip can therefore turn 1.0 (``0.0111.000``) into 256.0 (flip bit 6) or a weight of 448
into NaN (flip bit 0): the behaviour a resilience benchmark wants to measure.
"""

from __future__ import annotations

import torch
from pydantic import Field
from resbench.engine.formats import NumberFormat
from resbench.options import Options

__all__ = ["FP8E4M3", "FP8E4M3Options"]

EXPONENT_BIAS = 7
MANTISSA_BITS = 3
LARGEST = 448.0  # 2**8 * 1.75, code 0.1111.110
SMALLEST_NORMAL_EXPONENT = 1 - EXPONENT_BIAS  # -6
NAN_CODE = 0x7F
SIGN_BIT = 0x80


def _quantum(magnitude: torch.Tensor) -> torch.Tensor:
    """The spacing of representable values at ``magnitude``: ``2**(floor(log2(magnitude)) - 3)``.

    The exponent never goes below the smallest normal one, so subnormals (and zero) share the spacing
    ``2**-9`` of the first binade. ``frexp`` gives the exponent exactly, without a rounded logarithm.
    """
    _, exponent = torch.frexp(magnitude)
    normal = magnitude >= 2.0**SMALLEST_NORMAL_EXPONENT
    binade = torch.where(normal, exponent - 1, SMALLEST_NORMAL_EXPONENT)
    return torch.ldexp(torch.ones_like(magnitude), binade - MANTISSA_BITS)


class FP8E4M3Options(Options):
    """Options of the FP8 E4M3 format."""

    saturate: bool = Field(
        default=True, description="clamp overflow to ±448 (OFP8 saturation mode); false: overflow is NaN"
    )


class FP8E4M3(NumberFormat):
    """OCP FP8 E4M3 (e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits; max 448, no infinity."""

    name = "fp8-e4m3"
    bits_per_element = 8
    code_dtype = torch.int8

    def __init__(self, saturate: bool = True) -> None:
        self.saturate = saturate

    def encode(self, values: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of ``values``: round to nearest (ties to even), overflow saturates or becomes NaN."""
        values = values.to(torch.float32)
        magnitude = values.abs()
        rounded = _quantum(magnitude) * torch.round(magnitude / _quantum(magnitude))  # half to even
        overflow = rounded > LARGEST
        rounded = rounded.clamp(max=LARGEST)
        # Rounding may carry into the next binade, so measure the rounded value again. In units of its
        # quantum, a normal value is 8..15 (the implicit 1 and the mantissa) in binade E - 7, and a
        # subnormal 0..7 in binade -6: the magnitude bits are ((binade + 6) << 3) + units either way.
        quantum = _quantum(rounded)
        binade = torch.log2(quantum).to(torch.int32) + MANTISSA_BITS
        units = (rounded / quantum).to(torch.int32)
        codes = ((binade - SMALLEST_NORMAL_EXPONENT) << MANTISSA_BITS) + units
        invalid = torch.isnan(values) | (overflow if not self.saturate else torch.zeros_like(overflow))
        codes = torch.where(invalid, NAN_CODE, codes)
        codes = torch.where(torch.signbit(values), codes | SIGN_BIT, codes)
        return codes.to(torch.uint8).view(torch.int8)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The float32 values of ``codes``; ``S.1111.111`` decodes to NaN."""
        bits = codes.view(torch.uint8).to(torch.int32)
        exponent_field = (bits >> MANTISSA_BITS) & 0xF
        mantissa = (bits & 0x7).to(torch.float32) / 2**MANTISSA_BITS
        normal = exponent_field > 0
        significand = torch.where(normal, 1 + mantissa, mantissa)
        exponent = torch.where(normal, exponent_field - EXPONENT_BIAS, SMALLEST_NORMAL_EXPONENT)
        magnitude = torch.ldexp(significand, exponent)
        magnitude = torch.where((bits & 0x7F) == NAN_CODE, torch.nan, magnitude)
        return torch.where((bits & SIGN_BIT) != 0, -magnitude, magnitude)

    def bit_fields(self) -> dict[str, tuple[int, ...]]:
        """Sign bit 7, exponent bits 6..3, mantissa bits 2..0."""
        return {"sign": (7,), "exponent": (3, 4, 5, 6), "mantissa": (0, 1, 2)}
