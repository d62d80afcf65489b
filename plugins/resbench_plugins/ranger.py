"""Ranger (Chen et al., DSN 2021): clamp every activation to a profiled bound.

Components: the ``clamp`` activation scheme (saturate at the bound) and the ``profile-max`` threshold
optimizer (maximum, or a quantile, of per-image maxima over a seeded random fraction of the training
split); the ``ranger`` recipe combines them with the paper's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import fx, nn

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

__all__ = ["Clamp", "ClampOptions", "ClampedActivation", "FollowingClamp", "ProfileMax", "Ranger",
           "register_activation_schemes", "register_methods", "register_threshold_optimizers"]

RANGER = Citation(
    authors="Z. Chen, G. Li, K. Pattabiraman",
    title="A Low-cost Fault Corrector for Deep Neural Networks through Range Restriction",
    venue="DSN",
    year=2021,
    link="https://arxiv.org/abs/2003.13874",
)


class ClampedActivation(BoundedActivation):
    """``min(act(x), b)``: values above the bound saturate at it (Ranger, Sec. III-B). ``min(a, +inf)`` is
    ``a`` for every ``a``, so no guard is needed at an unset bound."""

    exact_when_unbounded = True

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.minimum(activated, self.bound)

    def limit_(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.minimum(activated, self.bound, out=activated)


_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                   F.adaptive_max_pool2d, F.adaptive_max_pool3d)
_FLATTEN_METHODS = ("flatten", "view", "reshape")


class FollowingClamp(nn.Module):
    """``min(x, b)`` after a pooling or flatten that follows a clamped activation, with that activation's
    bound ``b`` (Ranger, Sec. III-B: the restriction extends to operations that keep the value range).

    The bound is shared, not copied: it is stored once, at its call site, and faults in it reach both.
    """

    def __init__(self, source: BoundedActivation) -> None:
        super().__init__()
        self.__dict__["source"] = source  # not a submodule: the bound belongs to the call site's module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        source: BoundedActivation = self.__dict__["source"]
        if torch.is_grad_enabled() or isinstance(inputs, torch.fx.Proxy) or inputs.requires_grad:
            return torch.minimum(inputs, source.bound)  # recording gradients, or tracing a graph
        # Clamps follow a chain of single-user operations (see Clamp.extend): nothing else reads the input.
        return torch.minimum(inputs, source.bound, out=inputs)


def _following_kind(model: nn.Module, node: fx.Node) -> str | None:
    """``pool`` or ``flatten`` for a node that keeps its input's value range, else None."""
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        return "pool" if isinstance(module, _POOL_MODULES) else "flatten" if isinstance(module, nn.Flatten) else None
    if node.op == "call_function":
        return "pool" if node.target in _POOL_FUNCTIONS else "flatten" if node.target is torch.flatten else None
    if node.op == "call_method" and node.target in _FLATTEN_METHODS:
        return "flatten"
    return None


class ClampOptions(Options):
    """Options of ``clamp``."""

    after: tuple[Literal["pool", "flatten"], ...] = pydantic.Field(
        default=("pool", "flatten"),
        description="also clamp the outputs of pooling and flatten operations that directly follow a clamped "
        "activation, with its layer-wise bound (Ranger, as published; () for none)")


class Clamp(ActivationScheme):
    """Saturate each activation at its bound (Ranger)."""

    Options: ClassVar[type[Options]] = ClampOptions
    not_quantizable: ClassVar[str | None] = None  # a hard bound on the dequantized activation

    def build(self, site: CallSiteSpec) -> BoundedActivation:
        return ClampedActivation(site.activation, bound_shape(site.output_shape, site.granularity))

    def extend(self, model: nn.Module, bounded: dict[str, BoundedActivation]) -> None:
        """Insert a :class:`FollowingClamp` after each chosen operation in the chain that directly follows a
        layer-wise clamped call site (a channel or neuron bound does not fit the pooled shape)."""
        options = self.options
        assert isinstance(options, ClampOptions)
        if not options.after or not isinstance(model, fx.GraphModule):
            return
        nodes = {str(node.target): node for node in model.graph.nodes if node.op == "call_module"}
        for name, module in bounded.items():
            if module.bound.dim() == 0:
                self._clamp_chain(model, nodes[name], module, options.after)
        model.recompile()

    @staticmethod
    def _clamp_chain(model: fx.GraphModule, node: fx.Node, source: BoundedActivation, after: Sequence[str]) -> None:
        while len(node.users) == 1:
            user = next(iter(node.users))
            kind = _following_kind(model, user)
            if kind is None:
                return
            node = user
            if kind in after:
                index = sum(1 for name, _ in model.named_children() if name.startswith("ranger_clamp_"))
                model.add_submodule(f"ranger_clamp_{index}", FollowingClamp(source))
                with model.graph.inserting_after(user):
                    clamp = model.graph.call_module(f"ranger_clamp_{index}", (user,))
                user.replace_all_uses_with(clamp, delete_user_cb=lambda other, clamp=clamp: other is not clamp)
                node = clamp


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
    notes = ("published for transient faults in activations (one flip per inference: the act-single fault "
             "model); resbench applies it to faults in stored weights and bounds too. Hyperparameters: the "
             "paper's (maximum over 20% of the training data, rounded up), profiled with the evaluation transforms. "
             "As published, layer-wise clamps also follow the pooling and flatten operations after a clamped "
             "activation (activation: {name: clamp, after: []} leaves them out; concatenations are not "
             "clamped); they change nothing unless faults hit pooling or flatten outputs. Activation faults at "
             "a call site hit the ReLU output before the clamp, as in the paper.")


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
