"""Ranger (Chen et al., DSN 2021): clamp every activation to a profiled bound.

Components: the ``clamp`` activation scheme (saturate at the bound) and the ``profile-max`` threshold
optimizer (maximum, or a quantile, of per-image maxima over a seeded random fraction of the training
split); the ``ranger`` recipe combines them with the paper's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pydantic
import torch
from torch import nn

from resbench.config import ComponentSpec
from resbench.hookspecs import Register
from resbench.methods import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    Citation,
    PrepareContext,
    Recipe,
    RecipeOptions,
    ThresholdOptimizer,
    bound_shape,
    set_profiled_bounds,
)
from resbench.options import Options
from resbench.plugins import hookimpl

__all__ = ["Clamp", "ClampedActivation", "ProfileMax", "Ranger", "register_activation_schemes",
           "register_methods", "register_threshold_optimizers"]

RANGER = Citation(
    authors="Z. Chen, G. Li, K. Pattabiraman",
    title="A Low-cost Fault Corrector for Deep Neural Networks through Range Restriction",
    venue="DSN",
    year=2021,
    link="https://arxiv.org/abs/2003.13874",
)


class ClampedActivation(BoundedActivation):
    """``min(act(x), b)``: values above the bound saturate at it (Ranger, Sec. III-B)."""

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.minimum(activated, self.bound)


class Clamp(ActivationScheme):
    """Saturate each activation at its bound (Ranger)."""

    def build(self, site: CallSiteSpec) -> BoundedActivation:
        return ClampedActivation(site.activation, bound_shape(site.output_shape, site.granularity))


class ProfileMaxOptions(Options):
    """Options of ``profile-max``."""

    fraction: float = pydantic.Field(default=0.2, gt=0, le=1,
                                     description="seeded random share of the training split to profile "
                                     "(Ranger: 20%)")
    quantile: float | None = pydantic.Field(default=None, gt=0, le=1,
                                            description="layer-wise bounds: this quantile of per-image maxima "
                                            "instead of the maximum")
    ceil: bool = pydantic.Field(default=False, description="round bounds up to the next integer (Ranger)")


class ProfileMax(ThresholdOptimizer):
    """Bounds at the profiled maximum (or a quantile of per-image maxima) on a sample of the training split."""

    Options: ClassVar[type[Options]] = ProfileMaxOptions

    def fit(self, model: nn.Module, sites: Sequence[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, ProfileMaxOptions)
        profiles = set_profiled_bounds(model, sites, context, fraction=options.fraction,
                                       quantile=options.quantile, ceil=options.ceil)
        return {"profiled_images": next(iter(profiles.values())).images if profiles else 0}


class RangerOptions(RecipeOptions):
    """Ranger: clamp, layer-wise, bound = ceil of the maximum over 20% of the training split."""

    activation: ComponentSpec = pydantic.Field(default=ComponentSpec(name="clamp"),
                                               description="activation scheme")
    optimizer: ComponentSpec = pydantic.Field(
        default=ComponentSpec(name="profile-max", options={"fraction": 0.2, "ceil": True}),
        description="threshold optimizer")


class Ranger(Recipe):
    """Ranger: clamp each activation to the ceiling of its profiled maximum (layer-wise)."""

    Options = RangerOptions
    citation = RANGER
    notes = ("published for transient faults in activations (one flip per inference); resbench applies it "
             "to faults in stored weights and bounds. Hyperparameters: the paper's (maximum over 20% of the "
             "training data, rounded up). The extra clamps after pooling and flatten are not added.")


@hookimpl
def register_activation_schemes(register: Register) -> None:
    """Register ``clamp``."""
    register("clamp", Clamp)


@hookimpl
def register_threshold_optimizers(register: Register) -> None:
    """Register ``profile-max``."""
    register("profile-max", ProfileMax)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``ranger``."""
    register("ranger", Ranger)
