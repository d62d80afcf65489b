"""ProAct (Mousavi et al.): hybrid clipped activations trained progressively, last call site first.

HyReLU is the FitReLU form with layer-wise scalar bounds at every call site except the last, which is
neuron-wise. The ``proact-progressive`` threshold optimizer starts every bound at its profiled maximum,
then trains one call site at a time from the last to the first, all other bounds and every weight
frozen, with a·CE + c·KD (soft targets of the unprotected model, temperature 1). For each call site a
decay sweep pulls the bound down: decay values are tried from large to small and the first whose
validation accuracy stays within a tolerance of the starting accuracy is kept; otherwise the bound is
restored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from resbench.config import ComponentSpec
from resbench.hookspecs import Register
from resbench.methods import (
    Citation,
    PrepareContext,
    Recipe,
    RecipeOptions,
    ThresholdOptimizer,
    bounded_sites,
    set_profiled_bounds,
)
from resbench.methods.bound_training import train_bounds, validation_accuracy
from resbench.options import Options
from resbench.plugins import hookimpl

__all__ = ["ProAct", "ProActProgressive", "register_methods", "register_threshold_optimizers"]

PROACT = Citation(
    authors="S. H. Mousavi, M. H. Ahmadilivani, J. Raik, M. Jenihhin, M. Daneshtalab",
    title="ProAct: Progressive Training for Hybrid Clipped Activation Function to Enhance Resilience of DNNs",
    venue="arXiv:2406.06313",
    year=2024,
    link="https://arxiv.org/abs/2406.06313",
)


def _decades(largest: float, count: int) -> tuple[float, ...]:
    return tuple(largest * 10.0**-power for power in range(count))


# Presets (METHODS.md, from the ProAct authors' two code versions):
#   toolbox-v1: AdamW (decoupled decay) over 4e-1 ... 4e-11, tolerance 1.5 points, lr 1e-2 for 15 epochs at
#       scalar bounds and 1e-3 for 105 epochs at the neuron-wise last call site, loss 0.8 CE + 0.1 KD;
#   toolbox-v2: Adam (L2 decay) over 4e-5 ... 4e-15, tolerance 0.2 points, loss CE + KD, 105 epochs;
#   fast: toolbox-v1's optimizer and loss with three decays and one or two epochs, for CPU (LeNet-5 in about a
#       minute).
PROACT_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"decays": _decades(4e-1, 3), "tolerance": 1.5, "epochs": 1, "last_epochs": 2, "lr": 1e-2,
             "last_lr": 1e-2, "ce_weight": 0.8, "kd_weight": 0.1, "decoupled": True},
    "toolbox-v1": {"decays": _decades(4e-1, 11), "tolerance": 1.5, "epochs": 15, "last_epochs": 105, "lr": 1e-2,
           "last_lr": 1e-3, "ce_weight": 0.8, "kd_weight": 0.1, "decoupled": True},
    "toolbox-v2": {"decays": _decades(4e-5, 11), "tolerance": 0.2, "epochs": 105, "last_epochs": 105, "lr": 1e-2,
           "last_lr": 1e-3, "ce_weight": 1.0, "kd_weight": 1.0, "decoupled": False},
}


class ProActProgressiveOptions(Options):
    """Options of ``proact-progressive``; unset values come from the preset."""

    preset: Literal["fast", "toolbox-v1", "toolbox-v2"] = pydantic.Field(
        default="fast", description="fast (CPU), or the authors' toolbox settings toolbox-v1 or toolbox-v2")
    decays: tuple[float, ...] | None = pydantic.Field(default=None, description="decay values, large to small")
    tolerance: float | None = pydantic.Field(default=None, ge=0, le=100,
                                             description="accepted validation accuracy loss per call site (points)")
    epochs: int | None = pydantic.Field(default=None, ge=1, le=10_000, description="epochs per decay, scalar bounds")
    last_epochs: int | None = pydantic.Field(default=None, ge=1, le=10_000,
                                             description="epochs per decay, the neuron-wise last call site")
    lr: float | None = pydantic.Field(default=None, gt=0, le=10, description="learning rate, scalar bounds")
    last_lr: float | None = pydantic.Field(default=None, gt=0, le=10, description="learning rate, last call site")
    ce_weight: float | None = pydantic.Field(default=None, ge=0, description="a: weight of cross-entropy")
    kd_weight: float | None = pydantic.Field(default=None, ge=0, description="c: weight of distillation")
    decoupled: bool | None = pydantic.Field(
        default=None, description="AdamW decoupled decay (toolbox-v1) or Adam L2 (toolbox-v2)")
    profile_fraction: float = pydantic.Field(default=1.0, gt=0, le=1,
                                             description="share of the training split profiled for the start")
    batch_size: int = pydantic.Field(default=128, ge=1, le=65536, description="training batch size")

    @pydantic.model_validator(mode="after")
    def _fill_from_preset(self) -> ProActProgressiveOptions:
        for key, value in PROACT_PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy at temperature 1: mean over the batch of -sum softmax(t) * log_softmax(s)."""
    return -(F.softmax(teacher, dim=1) * F.log_softmax(student, dim=1)).sum(dim=1).mean()


class ProActProgressive(ThresholdOptimizer):
    """Train one call site's bound at a time, last to first, with distillation and a decay sweep."""

    Options: ClassVar[type[Options]] = ProActProgressiveOptions

    def fit(self, model: nn.Module, sites: Sequence[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, ProActProgressiveOptions)
        modules = bounded_sites(model, sites)
        teacher = copy.deepcopy(model).eval()  # bounds at +inf: the unprotected model, exactly
        for module in bounded_sites(teacher, sites).values():
            module.bound.requires_grad_(False)
        set_profiled_bounds(model, sites, context, fraction=options.profile_fraction)
        a, c = float(options.ce_weight or 0.0), float(options.kd_weight or 0.0)

        def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                soft = teacher(images)
            return a * F.cross_entropy(logits, labels) + c * distillation_loss(logits, soft)

        schedule: list[dict[str, Any]] = []
        for index, name in reversed(list(enumerate(sites))):
            last = index == len(sites) - 1
            schedule.append({"site": name, **self._fit_site(model, modules[name].bound, loss, last, context, index)})
        return {"schedule": schedule, "order": [step["site"] for step in schedule]}

    def _fit_site(
        self, model: nn.Module, bound: torch.Tensor, loss: Any, last: bool, context: PrepareContext, index: int
    ) -> dict[str, Any]:
        """The decay sweep at one call site; the bound ends at the first accepted decay or as it started."""
        options = self.options
        assert isinstance(options, ProActProgressiveOptions)
        start_accuracy = validation_accuracy(model, context)
        start = bound.detach().clone()
        epochs = int(options.last_epochs if last else options.epochs)  # type: ignore[arg-type]
        lr = float(options.last_lr if last else options.lr)  # type: ignore[arg-type]
        optimizer_class = torch.optim.AdamW if options.decoupled else torch.optim.Adam
        for decay in options.decays or ():
            with torch.no_grad():
                bound.copy_(start)
            optimizer = optimizer_class([bound], lr=lr, weight_decay=decay)
            train_bounds(model, [bound], loss, optimizer, epochs, context, batch_size=options.batch_size,
                         seed=context.seed + index, description=f"proact site {index}")
            accuracy = validation_accuracy(model, context)
            if accuracy >= start_accuracy - float(options.tolerance or 0.0):
                return {"decay": decay, "start_accuracy": start_accuracy, "accuracy": accuracy,
                        "start_bound_mean": float(start.mean()), "bound_mean": float(bound.detach().mean()),
                        "values": bound.numel()}
        with torch.no_grad():
            bound.copy_(start)
        return {"decay": None, "start_accuracy": start_accuracy, "accuracy": start_accuracy,
                "start_bound_mean": float(start.mean()), "bound_mean": float(start.mean()), "values": bound.numel()}


class ProActOptions(RecipeOptions):
    """ProAct: HyReLU (FitReLU form, hybrid granularity), progressive bound training."""

    activation: ComponentSpec = pydantic.Field(default=ComponentSpec(name="fitrelu"),
                                               description="activation scheme")
    optimizer: ComponentSpec = pydantic.Field(default=ComponentSpec(name="proact-progressive"),
                                              description="threshold optimizer")
    granularity: Literal["layer", "channel", "neuron", "hybrid"] = pydantic.Field(
        default="hybrid", description="bound granularity (the paper: hybrid)")


class ProAct(Recipe):
    """ProAct: layer-wise bounds except a neuron-wise last call site, trained progressively with distillation."""

    Options = ProActOptions
    citation = PROACT
    notes = ("bounds trained on the training split with weights and batch norm frozen, decay accepted on the "
             "validation split (the authors' code used the test set); default preset 'fast' for CPU; presets "
             "toolbox-v1/toolbox-v2 are the settings of the authors' reliable-relu-toolbox code (2024, 2025); above "
             "the bound an infinite input gives 0 (the paper's Q15.16 has no inf)")


@hookimpl
def register_threshold_optimizers(register: Register) -> None:
    """Register ``proact-progressive``."""
    register("proact-progressive", ProActProgressive)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``proact``."""
    register("proact", ProAct)
