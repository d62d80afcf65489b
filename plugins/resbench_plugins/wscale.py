"""Weight scaling (Fuengfusin & Tamukoh 2024): store c * W per layer, divide by c after reading.

Per conv/linear layer, c = t / max|W| (the paper's layer-wise constant), so the largest stored
magnitude is t. A bit flip is an error of bounded size in fixed point (additive, like noise), which the
division shrinks by c; in floating point, scaling moves the stored values to other exponents, which
changes what an exponent flip does. t depends on the number format:

* fixed point ``qM.N``: the largest representable value (2^M - 2^-N), filling the range as the paper's
  8-bit headline does; c is exact (not rounded), so the range is filled;
* ``int8`` (per tensor or per channel) and ``uintM-asym``: scaling cannot change what is stored (the format
  rescales: the integer-range rule), t = 1; on PyTorch's quantized kernels (``int8``, ``engine: torch-ao``)
  the read-back is folded before conversion, so the codes are the unscaled model's (up to float32 rounding
  of c * W / c): wscale runs there and equals ``none``;
* floating point: :data:`FLOAT_T`, with c rounded down to a power of two so that, without faults, the
  model computes exactly what the unscaled one does (dividing by 2^k is exact as long as no value over-
  or underflows). The values come from a sweep of t in {1/16, 1/4, 1, 16, 256, 8192} on LeNet-5 / MNIST
  (``benchmarks/weight_scaling_t.yaml``, 30 trials per point). fp16: t = 256 keeps 96.6% at BER 1e-5
  and 68.8% at 1e-4 where the unscaled model keeps 77.5% and 25.2%. The stored values then lie in
  (128, 256], exponent 10110b: its top exponent bit is set, so flipping it sends a value toward zero,
  and flipping a clear exponent bit multiplies it by at most 2^8, where a small unscaled weight
  (exponent 0xxxxb) grows by 2^16. Larger t is worse (8192: 78.2% at 1e-5): values near 2^12 reach
  the all-ones exponent, inf or NaN, with one flip; t = 16 is worse than none. fp32: no t tested helps
  (the top exponent flip of any value below 2 gives about 1e38, and above 2 the next exponent bits do
  the same), so t = 1 (c moves max|W| into (0.5, 1]); bf16 has fp32's exponent and takes the same t,
  unmeasured.

c is a constant of the read-back (a buffer of the parametrization), outside the fault space, as the
scale of a quantizer is. No training. Biases are not scaled.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pydantic
import torch
from torch import nn

from resbench.config import ComponentSpec
from resbench.engine.formats import FixedPoint, NumberFormat
from resbench.hookspecs import Register
from resbench.methods import Citation, PrepareContext
from resbench.methods.transforms import TransformMethod, WeightTransform
from resbench.options import Options
from resbench.plugins import hookimpl

__all__ = ["FLOAT_T", "SCALING_CITATION", "ScaledReadBack", "WeightScaling", "WeightScalingMethod",
           "WeightScalingOptions", "default_t", "register_methods", "register_weight_transforms"]

SCALING_CITATION = Citation(
    authors="N. Fuengfusin, H. Tamukoh",
    title="Harden Deep Neural Networks Against Fault Injections Through Weight Scaling",
    venue="arXiv:2411.18993",
    year=2024,
    link="https://arxiv.org/abs/2411.18993",
)

#: Default t for floating-point formats (the paper's values are not known; chosen from a sweep, see the
#: module docstring).
FLOAT_T: dict[str, float] = {"fp32": 1.0, "fp16": 256.0, "bf16": 1.0}


def _is_floating(number_format: NumberFormat) -> bool:
    return not isinstance(number_format, FixedPoint) and not number_format.scaled


def default_t(number_format: NumberFormat) -> float:
    """The default t of ``number_format`` (see the module docstring)."""
    if isinstance(number_format, FixedPoint):
        return 2.0**number_format.integer_bits - 2.0**-number_format.fraction_bits
    return FLOAT_T.get(number_format.name, 1.0)


class ScaledReadBack(nn.Module):
    """Read back ``stored / c``; store ``c * weight``."""

    scale: torch.Tensor

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored / self.scale

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale

    def extra_repr(self) -> str:
        return f"c={float(self.scale):g}"


class WeightScalingOptions(Options):
    """Options of the ``weight-scaling`` transform and the ``wscale`` method."""

    t: float | None = pydantic.Field(default=None, gt=0, le=1e30,
                                     description="largest stored magnitude per layer (default: per format)")
    power_of_two: bool | None = pydantic.Field(
        default=None, description="round c down to a power of two (default: for floating-point formats)")


class WeightScaling(WeightTransform):
    """Weight scaling: store c * W per layer with c = t / max|W|, divide by c after reading."""

    Options: ClassVar[type[Options]] = WeightScalingOptions
    format_dependent: ClassVar[bool] = True
    #: The integer-range rule: a quantizer with its own scale stores the same codes for c * W as for W.
    not_quantizable: ClassVar[str | None] = None

    def scale_for(self, weight: torch.Tensor, number_format: NumberFormat) -> float:
        """The constant c of a layer with trained ``weight``, deployed in ``number_format``."""
        options = self.options
        assert isinstance(options, WeightScalingOptions)
        largest = float(weight.detach().abs().max()) if weight.numel() else 0.0
        if not math.isfinite(largest) or largest == 0.0:
            return 1.0
        scale = (options.t if options.t is not None else default_t(number_format)) / largest
        power_of_two = options.power_of_two if options.power_of_two is not None else _is_floating(number_format)
        return 2.0 ** math.floor(math.log2(scale)) if power_of_two else scale

    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        return ScaledReadBack(self.scale_for(weight, context.number_format)).to(weight.device)


class WeightScalingMethod(TransformMethod):
    """Weight scaling: every conv/linear weight stored as c * W (c = t / max|W| per layer), read back / c."""

    Options: ClassVar[type[Options]] = WeightScalingOptions
    citation = SCALING_CITATION
    notes = ("division right after the read (not moved to the logits); t per format: fixed point fills the "
             "range, floating point uses resbench's sweep-chosen default (the paper's t is not known). In a "
             "short fixed-point format (q2.5) scaling also changes the resolution: the 'clean vs none' column "
             "shows its clean accuracy beside the unscaled model's, read gains under faults against it")

    def transform_spec(self) -> ComponentSpec:
        return ComponentSpec(name="weight-scaling", options=self.options.model_dump(mode="json"))


@hookimpl
def register_weight_transforms(register: Register) -> None:
    """Register ``weight-scaling``."""
    register("weight-scaling", WeightScaling)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``wscale``."""
    register("wscale", WeightScalingMethod)
