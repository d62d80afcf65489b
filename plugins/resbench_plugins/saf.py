"""SAF weight constraints (Fuengfusin & Tamukoh 2024): store the raw weight W, compute with tau(W).

Every convolution and linear weight is read back through a saturated activation function
tau in {tanh, arctan, softsign, hardtanh}; biases stay raw and there is no scale factor (the paper's
forward pass a_i = sigma(tau(W_i) a_{i-1} + b_i)). Faults hit the raw stored W; whatever value a flip
produces (1e38, inf), the weight used is bounded by the range of tau. A NaN stays NaN: tau(NaN) is NaN,
and resbench's global rule counts the sample as wrong and as a DUE; nothing is repaired.

Preparation (option ``preparation``):

* ``adapt`` (default): the raw weights start at tau^-1 of the trained weights (clamped just inside the
  range of tau), so tau(W) starts at the trained model, then a few epochs of fine-tuning with tau in
  the graph (the paper adapts a pre-trained ImageNet ResNet-18 "by training for a few epochs");
* ``scratch``: the weights are re-initialized (PyTorch's default initialization, seeded) and trained
  with tau in the graph.

Both keep the epoch best on the validation split (carved from the training data).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pydantic
import torch
from torch import nn
from torch.nn.utils import parametrize

from resbench.config import ComponentSpec
from resbench.datasets import DatasetSplits
from resbench.hookspecs import Register
from resbench.methods import Citation, PrepareContext
from resbench.methods.transforms import TransformMethod, WeightTransform, weight_layers
from resbench.options import Options
from resbench.plugins import hookimpl
from resbench.training import TrainingOptions, evaluate, train_model

__all__ = ["SAF", "SAF_CITATION", "SafMethod", "SafOptions", "SaturatedReadBack", "register_methods",
           "register_weight_transforms"]

SAF_CITATION = Citation(
    authors="N. Fuengfusin, H. Tamukoh",
    title="Enhancing Neural Network Robustness Against Fault Injection Through Non-linear Weight Transformations",
    venue="arXiv:2411.19027",
    year=2024,
    link="https://arxiv.org/abs/2411.19027",
)

SafFunction = Literal["tanh", "arctan", "softsign", "hardtanh"]

# tau, its inverse on the open range, and the bound of |tau| (tanh, softsign: 1; arctan: pi/2; hardtanh: 1).
FUNCTIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], float]] = {
    "tanh": (torch.tanh, torch.atanh, 1.0),
    "arctan": (torch.atan, torch.tan, math.pi / 2),
    "softsign": (lambda w: w / (1 + w.abs()), lambda y: y / (1 - y.abs()), 1.0),
    "hardtanh": (lambda w: w.clamp(-1.0, 1.0), lambda y: y, 1.0),
}

#: A trained weight at or beyond the range of tau starts at tau^-1 of this share of the range.
INVERSE_LIMIT = 0.999

# Preset training for each preparation; unset options come from here. ``adapt``: a few epochs at a
# small learning rate; ``scratch``: the LeNet/MNIST baseline recipe of resbench.training (Adam 2e-3, 15 epochs).
PREPARATIONS: dict[str, dict[str, Any]] = {
    "adapt": {"epochs": 3, "lr": 5e-4},
    "scratch": {"epochs": 15, "lr": 2e-3},
}


def saf_range(function: str) -> float:
    """The bound of |tau(w)| for every w (NaN aside): 1 for tanh, softsign and hardtanh, pi/2 for arctan."""
    return FUNCTIONS[function][2]


class SaturatedReadBack(nn.Module):
    """Read back ``tau(stored)``; store ``tau^-1(weight)`` (``identity`` init: the weight itself)."""

    def __init__(self, function: str, inverse_init: bool = True) -> None:
        super().__init__()
        self.function = function
        self.inverse_init = inverse_init

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return FUNCTIONS[self.function][0](stored)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.inverse_init:
            return weight.clone()
        limit = INVERSE_LIMIT * saf_range(self.function)
        return FUNCTIONS[self.function][1](weight.clamp(-limit, limit))

    def extra_repr(self) -> str:
        return self.function


class SafOptions(Options):
    """Options of the ``saf`` weight transform."""

    function: SafFunction = pydantic.Field(default="tanh", description="saturated function tau")
    preparation: Literal["adapt", "scratch"] = pydantic.Field(
        default="adapt", description="adapt the trained model (init tau(W) = trained weights, fine-tune) or "
        "train from scratch with tau in the graph")
    init: Literal["inverse", "identity"] = pydantic.Field(
        default="inverse", description="adapt: raw W = tau^-1(trained) (exact) or = trained (tau(w) ~ w for small w)")
    epochs: int | None = pydantic.Field(default=None, ge=0, le=10_000,
                                        description="training epochs (adapt: 3, scratch: 15; 0: no training)")
    lr: float | None = pydantic.Field(default=None, gt=0, le=10, description="Adam learning rate "
                                      "(adapt: 5e-4, scratch: 2e-3)")
    batch_size: int = pydantic.Field(default=64, ge=2, le=65_536, description="training batch size")
    augment_shift: int = pydantic.Field(default=0, ge=0, le=16,
                                        description="random translation by up to N pixels while training")

    @pydantic.model_validator(mode="after")
    def _fill_from_preparation(self) -> SafOptions:
        for key, value in PREPARATIONS[self.preparation].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self


def _reinitialize(model: nn.Module, seed: int) -> None:
    """PyTorch's default initialization of every layer, seeded; a transformed weight's raw tensor gets
    what the plain weight would (Kaiming uniform, a = sqrt(5)), as when training from scratch."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in weight_layers(model):
            stored = layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") \
                else layer.weight
            fan_in = stored[0].numel()
            bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) and the bias share this bound
            stored.copy_(torch.empty(stored.shape).uniform_(-bound, bound, generator=generator))
            if layer.bias is not None:
                layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=generator))
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()


class SAF(WeightTransform):
    """SAF: store the raw weight W, compute with tau(W) (tanh, arctan, softsign or hardtanh); biases raw."""

    Options: ClassVar[type[Options]] = SafOptions

    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        options = self.options
        assert isinstance(options, SafOptions)
        return SaturatedReadBack(options.function, inverse_init=options.init == "inverse")

    def fit(self, model: nn.Module, layers: list[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, SafOptions)
        start = evaluate(model, context.validation, context.device, context.batch_size)
        if options.preparation == "scratch":
            _reinitialize(model, context.seed)
        if not options.epochs:
            return {"start_validation_accuracy": start, "validation_accuracy": start}
        training = TrainingOptions(epochs=options.epochs, lr=options.lr, optimizer="adam", schedule="cosine",
                                   batch_size=options.batch_size, augment_shift=options.augment_shift)
        splits = DatasetSplits("prepare", context.train, context.validation, context.validation,
                               context.image_shape, context.num_classes)
        result = train_model(model, splits, training, context.device, seed=context.seed, progress=context.progress,
                             description=f"saf-{options.function} {options.preparation}")
        return {"start_validation_accuracy": start, "validation_accuracy": result.validation_accuracy,
                "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 3)}


def _saf_options(function: str) -> type[SafOptions]:
    """The options of method ``saf-<function>``: SAF's, with tau fixed by the name."""
    annotation: Any = Literal[function]  # type: ignore[valid-type]
    return pydantic.create_model(  # type: ignore[call-overload,no-any-return]
        f"Saf{function.capitalize()}Options",
        __base__=SafOptions,
        __doc__=f"Options of ``saf-{function}`` (tau = {function}).",
        function=(annotation, pydantic.Field(default=function, description="saturated function tau (the name's)")),
    )


class SafMethod(TransformMethod):
    """SAF weight constraints: every conv/linear weight stored raw and used as tau(W)."""

    Options: ClassVar[type[Options]] = SafOptions
    citation = SAF_CITATION
    notes = ("adapted from the trained baseline by default (tau^-1 init, 3 epochs of Adam fine-tuning, selection "
             "on the validation split); preparation=scratch trains with tau in the graph; NaN weights are not "
             "repaired")

    def transform_spec(self) -> ComponentSpec:
        return ComponentSpec(name="saf", options=self.options.model_dump(mode="json"))


@hookimpl
def register_weight_transforms(register: Register) -> None:
    """Register ``saf``."""
    register("saf", SAF)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``saf-tanh``, ``saf-arctan``, ``saf-softsign`` and ``saf-hardtanh``."""
    for function in FUNCTIONS:
        register(f"saf-{function}", SafMethod, options=_saf_options(function),
                 description=f"SAF weight constraints with tau = {function} (Fuengfusin & Tamukoh 2024)")
