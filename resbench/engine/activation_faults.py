"""Transient faults in activations: bits that flip in operator outputs while an image passes through.

The weight fault models (:mod:`resbench.engine.faults`) corrupt stored tensors, one permanent pattern per trial.
The models here have the ``activations`` target: a bit of an operator's *output* flips during one
inference, and every image of a trial gets its own faults (PyTorchFI, TensorFI and Ranger's setting).

**Where.** The *operators* are modules chosen by kind or class name (``conv`` and ``linear`` by default;
``activation`` for the activation call sites, ``pool``, ``norm``, ``any``, or a class name such as
``BatchNorm2d``), optionally narrowed by regular expressions over qualified module names (``names``).
Operators that are functions, not modules, are chosen by the kinds ``add`` (the residual add of a ResNet
or transformer block) and ``matmul`` (attention products written with ``@`` or ``torch.matmul``): the
model's traced graph gives each such call a module of its own (``layer1.0.add``;
:mod:`resbench.models.operators`), where the graph shows it.
Conv and linear modules keep their names in every method (methods replace activations only), so
protected and unprotected models share these operators and see the same faults there; a bounded
activation *follows* a conv, so a fault in the conv output passes through the bound (Ranger's point).

**The per-image layout.** One image's chosen outputs, in execution order, form a line of elements
(a :class:`FaultSpaceLayout` whose tensors are the operators); element ``e``, allowed bit ``j`` sits
at position ``e * len(bits) + j``, as in the weight engine.

**Number format.** Outputs are held in the fault model's ``format`` (``fp32`` by default; ``fp16``,
``bf16``, ``qM.N``, ``int8``): every pass computes with ``decode(encode(output))`` and a fault flips a bit
of the code. ``int8`` uses a per-operator scale ``max|output| / 127`` profiled on training images.

**Fault models.**

* ``act-single``: exactly one single-bit flip per inference, in a uniformly chosen element of the chosen
  outputs (``pick: operator`` chooses the operator uniformly first, then the element), bit uniform over
  the allowed bits (``bits``, or the ``top_bits`` most significant). Its cells carry no BER: the cell's
  BER column holds :data:`ONE_FAULT_PER_INFERENCE`.
* ``act-bitflip``: every bit of every chosen output element flips independently with probability BER,
  drawn anew for every image: geometric gaps along the image's bit line (Devroye 1986, sec. X.2.1, by
  inversion), exact Bernoulli at any BER, O(flips). Sweeps are nested as for weights: sites are drawn at
  the largest BER and a site carrying the uniform ``u`` is kept at BER ``b`` when ``u < b / BER_max``.

**Seeds.** Image ``i`` of trial ``t`` draws from its own SplitMix64 stream (Steele, Lea and Flood,
OOPSLA 2014), seeded with the ``i``-th output of SplitMix64 started at the trial seed, which the runner
derives from (base seed, model, dataset, format, fault model, trial), never from the method. Draws are
counter-based, so they are vectorized over images and replay for one image alone.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from torch import nn

from resbench.engine.bers import ONE_FAULT_PER_INFERENCE
from resbench.engine.faults import FaultModel, FaultModelOptions, FaultRecord, FaultSites, FaultTarget
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import NumberFormat, resolve_format
from resbench.errors import UsageError
from resbench.hookspecs import Register
from resbench.models.operators import FUNCTION_KINDS, FunctionOperator
from resbench.plugins import hookimpl

__all__ = [
    "ONE_FAULT_PER_INFERENCE",
    "OPERATOR_KINDS",
    "ActivationBitflip",
    "ActivationFaultModel",
    "ActivationFaultOptions",
    "ImageFaults",
    "SingleActivationFault",
    "SingleFaultOptions",
    "check_operator_options",
    "image_seeds",
    "image_uniforms",
    "register_fault_models",
    "select_operators",
]

#: Operator kinds by module type (``activation`` and ``any`` are resolved by :func:`select_operators`).
OPERATOR_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "linear": (nn.Linear,),
    "pool": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d),
    "norm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm),
}
_SPECIAL_KINDS = ("activation", "any", *FUNCTION_KINDS)

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


class ActivationFaultOptions(FaultModelOptions):
    """Options of the activation fault models: the fault target, the operators and the number format."""

    target: FaultTarget = Field(default="activations", description="what faults hit (activations only)")
    operators: tuple[str, ...] = Field(
        default=("conv", "linear"),
        description="operators whose outputs faults hit: kinds (conv, linear, activation, pool, norm, any; add "
        "and matmul for function calls) or module class names (BatchNorm2d)",
    )
    names: tuple[str, ...] = Field(
        default=(), description="regular expressions a chosen operator's qualified name must match (any of them)"
    )
    format: str = Field(default="fp32", description="number format activations are held in (fp32, fp16, bf16, "
                        "qM.N, int8)")
    top_bits: int | None = Field(default=None, ge=1, le=64,
                                 description="only the N most significant of the allowed bits")
    range_samples: int = Field(default=1024, ge=1, le=1_000_000,
                               description="int8: training images profiled for each operator's range")


class SingleFaultOptions(ActivationFaultOptions):
    """Options of ``act-single``."""

    pick: Literal["element", "operator"] = Field(
        default="element",
        description="element: uniform over all chosen output elements; operator: a uniform operator first, then "
        "a uniform element of its output",
    )


def _mix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function (a bijection of uint64), elementwise."""
    values = (values ^ (values >> np.uint64(30))) * _MIX_1
    values = (values ^ (values >> np.uint64(27))) * _MIX_2
    return values ^ (values >> np.uint64(31))


def image_seeds(trial_seed: int, count: int) -> np.ndarray:
    """The seeds of images ``0 .. count-1`` of a trial: outputs of SplitMix64 started at ``trial_seed``."""
    start = np.array([int(trial_seed) % 2**64], dtype=np.uint64)
    return _mix64(start + (np.arange(1, count + 1, dtype=np.uint64) * _GAMMA))


def image_uniforms(seeds: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    """Uniform doubles in [0, 1) (53 random bits): draw number ``draw`` of each image stream ``seeds``."""
    step = np.asarray(draw, dtype=np.uint64).reshape(-1) + np.uint64(1)
    return (_mix64(seeds + step * _GAMMA) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _below(uniforms: np.ndarray, bound: np.ndarray | int) -> np.ndarray:
    """``floor(u * bound)`` as int64, kept below ``bound`` (the product may round up to it)."""
    upper = np.asarray(bound, dtype=np.int64)
    return np.minimum(np.floor(uniforms * upper).astype(np.int64), upper - 1)


class ImageFaults:
    """The sites of one trial at one BER over a set of images, sorted by image then element.

    ``images`` index the evaluation set; ``elements`` the per-image layout's element line (operators in
    execution order); ``bits`` are bit positions (LSB = 0).
    """

    def __init__(self, layout: FaultSpaceLayout, images: np.ndarray, elements: np.ndarray, bits: np.ndarray,
                 ber: float) -> None:
        order = np.lexsort((bits, elements, images))
        self.layout = layout
        self.images = np.ascontiguousarray(images[order], dtype=np.int64)
        self.elements = np.ascontiguousarray(elements[order], dtype=np.int64)
        self.bits = np.ascontiguousarray(bits[order], dtype=np.int64)
        self.ber = ber

    @property
    def num_flips(self) -> int:
        """Flips over all images."""
        return int(self.images.size)

    def flips_per_image(self, count: int) -> np.ndarray:
        """Flips of each of ``count`` images."""
        return np.bincount(self.images, minlength=count)

    def operators(self) -> np.ndarray:
        """Index of the operator (in execution order) each site lies in."""
        return np.searchsorted(np.asarray(self.layout.offsets[1:]), self.elements, side="right")

    def record(self) -> FaultRecord:
        """Flips in total, per operator (non-zero only) and per bit position."""
        as_sites = FaultSites(self.layout, self.elements, self.bits, "flip", self.ber)
        record = as_sites.record()
        return FaultRecord(self.num_flips, record.per_tensor, record.per_bit)

    def __repr__(self) -> str:
        return f"<ImageFaults BER={self.ber:g}: {self.num_flips} flips>"


class ActivationFaultModel(FaultModel):
    """A fault model of the ``activations`` target: samples per-image sites over operator outputs."""

    targets: tuple[FaultTarget, ...] = ("activations",)
    options: ActivationFaultOptions

    def __init__(self, options: ActivationFaultOptions | None = None) -> None:
        super().__init__(options or ActivationFaultOptions())

    def number_format(self) -> NumberFormat:
        """The number format activations are held in."""
        return resolve_format(self.options.format)

    def probe_layout(self) -> FaultSpaceLayout:
        """A one-element layout in the activation format, for checking the bit options before any work."""
        number_format = self.number_format()
        return FaultSpaceLayout(("probe",), (1,), number_format.bits_per_element, number_format.bit_fields())

    def allowed_bits(self, layout: FaultSpaceLayout) -> np.ndarray:
        """The ``bits`` option's positions, narrowed to the ``top_bits`` most significant."""
        allowed = super().allowed_bits(layout)
        if self.options.top_bits is not None:
            allowed = allowed[-self.options.top_bits:]
        return allowed

    def sample_sites(
        self,
        layout: FaultSpaceLayout,
        bers: list[float],
        allowed: np.ndarray,
        generators: list[np.random.Generator],
    ) -> list[FaultSites]:
        raise UsageError(f"fault model {self.name} hits operator outputs, not stored tensors; "
                         "use sample_images()")

    def check(self, number_format: NumberFormat) -> None:
        """Bad input found before any work: the target, an unknown operator, bits outside the format the
        activations are held in (its own ``format`` option: the weights' ``number_format`` plays no part)."""
        self.check_target()
        check_operator_options(self.options, f"fault model {self.name}")
        self.allowed_bits(self.probe_layout())

    def definition_fields(self) -> dict[str, object]:
        """The fault target joins the cell's definition."""
        return {"fault_target": self.target}

    def sample_images(self, layout: FaultSpaceLayout, bers: Sequence[float], trial_seed: int,
                      count: int) -> list[ImageFaults]:
        """One :class:`ImageFaults` per entry of ``bers`` for images ``0 .. count-1`` of a trial."""
        if layout.total_elements == 0:
            raise UsageError(f"fault model {self.name}: the chosen operators output nothing")
        allowed = self.allowed_bits(layout)
        return self.sample_image_sites(layout, list(bers), allowed, image_seeds(trial_seed, count))

    @abstractmethod
    def sample_image_sites(self, layout: FaultSpaceLayout, bers: list[float], allowed: np.ndarray,
                           seeds: np.ndarray) -> list[ImageFaults]:
        """What an activation fault model implements: sites for the images whose streams are ``seeds``."""


class SingleActivationFault(ActivationFaultModel):
    """Exactly one single-bit flip per inference (``act-single``)."""

    name = "act-single"
    options: SingleFaultOptions

    def cell_bers(self, bers: Sequence[float]) -> list[float]:
        """One cell per fault model, whatever the sweep: its BER column holds :data:`ONE_FAULT_PER_INFERENCE`."""
        return [ONE_FAULT_PER_INFERENCE]

    def definition_fields(self) -> dict[str, object]:
        """No BER sweep thins its sites."""
        return {**super().definition_fields(), "sweep_max_ber": None}

    def sample_image_sites(self, layout: FaultSpaceLayout, bers: list[float], allowed: np.ndarray,
                           seeds: np.ndarray) -> list[ImageFaults]:
        if self.options.pick == "operator":
            numels = np.asarray(layout.numels, dtype=np.int64)
            operator = _below(image_uniforms(seeds, 0), numels.size)
            offsets = np.asarray(layout.offsets[:-1], dtype=np.int64)
            elements = offsets[operator] + _below(image_uniforms(seeds, 1), numels[operator])
        else:
            elements = _below(image_uniforms(seeds, 0), layout.total_elements)
        bits = allowed[_below(image_uniforms(seeds, 2), allowed.size)]
        images = np.arange(seeds.size, dtype=np.int64)
        return [ImageFaults(layout, images, elements, bits, ber) for ber in bers]


class ActivationBitflip(ActivationFaultModel):
    """Every bit of every chosen output element flips with probability BER, anew for each image."""

    name = "act-bitflip"

    def sample_image_sites(self, layout: FaultSpaceLayout, bers: list[float], allowed: np.ndarray,
                           seeds: np.ndarray) -> list[ImageFaults]:
        highest = bers[-1] if bers else 0.0
        images, line, thinning = _bernoulli_lines(seeds, layout.total_elements * allowed.size, highest)
        sites = []
        for ber in bers:
            keep = thinning < ber / highest if highest > 0 else np.zeros(line.size, dtype=bool)
            kept = line[keep]
            sites.append(ImageFaults(layout, images[keep], kept // allowed.size, allowed[kept % allowed.size], ber))
        return sites


def _bernoulli_lines(seeds: np.ndarray, length: int, ber: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, positions in ``[0, length)`` present with probability ``ber`` and a uniform per position.

    Round ``k`` draws gap ``k`` (stream draw ``2k``, inverted geometric: ``floor(log(1-U) / log(1-p)) + 1``)
    and its thinning uniform (draw ``2k + 1``) for every image whose line is not yet passed.
    """
    empty = np.zeros(0, dtype=np.int64)
    if ber <= 0.0 or length == 0:
        return empty, empty, np.zeros(0)
    log_keep = math.log1p(-ber) if ber < 1.0 else -math.inf
    active = np.arange(seeds.size, dtype=np.int64)
    position = np.full(seeds.size, -1, dtype=np.int64)
    found: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    draw = 0
    while active.size:
        gaps = np.floor(np.log1p(-image_uniforms(seeds[active], 2 * draw)) / log_keep) + 1
        position[active] += np.minimum(gaps, length + 1).astype(np.int64)
        inside = position[active] < length
        active = active[inside]
        found[0].append(active)
        found[1].append(position[active])
        found[2].append(image_uniforms(seeds[active], 2 * draw + 1))
        draw += 1
    return np.concatenate(found[0]), np.concatenate(found[1]), np.concatenate(found[2])


def select_operators(model: nn.Module, options: ActivationFaultOptions, call_sites: Sequence[str] = ()) -> set[str]:
    """Qualified names of the modules of ``model`` the options choose (``call_sites``: its activation call sites)."""
    patterns = [re.compile(pattern) for pattern in options.names]
    chosen = set()
    for name, module in model.named_modules():
        if not name or not _of_kind(name, module, options.operators, call_sites):
            continue
        if patterns and not any(pattern.fullmatch(name) for pattern in patterns):
            continue
        chosen.add(name)
    return chosen


def _of_kind(name: str, module: nn.Module, operators: Sequence[str], call_sites: Sequence[str]) -> bool:
    for operator in operators:
        if operator == "any" and not any(True for _ in module.children()):
            return True
        if operator == "activation" and name in call_sites:
            return True
        if isinstance(module, FunctionOperator) and module.kind == operator:
            return True
        if isinstance(module, OPERATOR_KINDS.get(operator, ())) or type(module).__name__ == operator:
            return True
    return False


def check_operator_options(options: ActivationFaultOptions, where: str) -> None:
    """Refuse an unknown operator kind or a malformed name pattern (bad input, before any work)."""
    for operator in options.operators:
        known_class = any(cls.__name__ == operator for cls in _module_classes())
        if operator not in OPERATOR_KINDS and operator not in _SPECIAL_KINDS and not known_class:
            kinds = ", ".join([*OPERATOR_KINDS, *_SPECIAL_KINDS])
            raise UsageError(f"{where}: unknown operator {operator!r} (kinds: {kinds}, or a torch.nn class name)")
    for pattern in options.names:
        try:
            re.compile(pattern)
        except re.error as error:
            raise UsageError(f"{where}: operator name pattern {pattern!r} is not a regular expression: "
                             f"{error}") from None


def _module_classes() -> list[type[nn.Module]]:
    return [value for value in vars(nn).values() if isinstance(value, type) and issubclass(value, nn.Module)]


def _act_single(options: SingleFaultOptions) -> FaultModel:
    """One single-bit flip per inference in a uniformly chosen output element (activations)."""
    return SingleActivationFault(options)


def _act_bitflip(options: ActivationFaultOptions) -> FaultModel:
    """Each bit of each operator output flips with probability BER, anew per image (activations)."""
    return ActivationBitflip(options)


@hookimpl
def register_fault_models(register: Register) -> None:
    """Register the activation fault models."""
    register("act-single", _act_single, options=SingleFaultOptions)
    register("act-bitflip", _act_bitflip, options=ActivationFaultOptions)
