"""The parts methods are made of: bounded activations, activation schemes and threshold optimizers.

A bounding method (Ranger, Clip-Act, FitAct, ProAct) is a recipe of two components
(:mod:`resbench.methods.recipes`):

* an :class:`ActivationScheme` builds, for one activation call site, a :class:`BoundedActivation`: the
  original activation followed by a limit that depends on a stored ``bound`` tensor (clamp to it, zero
  above it, a smooth FitReLU). The bound's shape follows a granularity: one scalar per call site
  (``layer``), one value per channel (``channel``) or per output element (``neuron``).
* a :class:`ThresholdOptimizer` sets or trains the bounds of a model whose call sites carry bounded
  modules (profiling, a fault-driven search, post-training, progressive distillation), from the
  training and validation splits in the :class:`resbench.methods.base.PrepareContext`.

Bounds start at +inf until an optimizer sets them; :func:`set_profiled_bounds` is the usual first step.
Wherever a bound is +inf the bounded module returns the original activation exactly, whatever its
``limit`` computes there (``b * tanh(a / b)`` is NaN at ``b = +inf``), and no gradient flows through
``limit`` at those positions: where some bound is +inf, :meth:`BoundedActivation.forward` calls ``limit``
with a finite stand-in for the infinite entries and discards its result there.

The forward pass costs what the method's math costs: a scheme whose ``limit`` is already exact at +inf
(a clamp, a zero-above) declares it (:attr:`BoundedActivation.exact_when_unbounded`) and pays no guard;
another pays one check of its bound tensor (one value per call site, channel or neuron: never the size of
a batch), and the guard only where a bound is +inf. Without gradients (evaluation, fault campaigns) the
bound is applied in place to the activation's fresh output (:meth:`BoundedActivation.limit_`), so a
bounded call site allocates no more than the activation it replaces.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from resbench.datasets.base import random_subset
from resbench.methods.base import PrepareContext
from resbench.methods.profiling import ActivationProfile, profile_activations
from resbench.options import NoOptions
from resbench.options import Options as OptionsModel

__all__ = [
    "ActivationScheme",
    "BoundedActivation",
    "CallSiteSpec",
    "Granularity",
    "ThresholdOptimizer",
    "bound_shape",
    "bounded_sites",
    "may_modify_in_place",
    "profiled_bound",
    "set_profiled_bounds",
]

Granularity = Literal["layer", "channel", "neuron"]


def bound_shape(output_shape: Sequence[int], granularity: Granularity) -> tuple[int, ...]:
    """Shape of the bound for a call site whose output (one image) has ``output_shape``.

    ``layer``: a scalar; ``channel``: one per channel, broadcast over the rest ((C, 1, 1) for a conv
    feature map, (F,) for features); ``neuron``: the whole output shape, (C, H, W) or (F,).
    """
    if granularity == "layer" or not output_shape:
        return ()
    if granularity == "channel":
        return (output_shape[0], *([1] * (len(output_shape) - 1)))
    return tuple(output_shape)


def may_modify_in_place(output: torch.Tensor, inputs: torch.Tensor) -> bool:
    """Whether an operation may overwrite ``output``, the result it just computed from ``inputs``: no
    gradient is being recorded and ``output`` shares no memory with ``inputs`` (an identity activation
    returns its input, which others may still read)."""
    if torch.is_grad_enabled() or isinstance(output, torch.fx.Proxy) or output.requires_grad:
        return False  # recording gradients, or tracing a graph (which records the out-of-place operation)
    return output.untyped_storage().data_ptr() != inputs.untyped_storage().data_ptr()


@dataclass(frozen=True)
class CallSiteSpec:
    """What an activation scheme needs to build the bounded module of one call site."""

    name: str
    kind: str
    activation: nn.Module
    output_shape: tuple[int, ...]
    granularity: Granularity


class BoundedActivation(nn.Module, ABC):
    """The original activation followed by a limit set by a stored ``bound`` tensor.

    The bound is a parameter (so optimizers can train it) declared stored through ``stored_tensors``:
    it joins the fault space by default (``fault_space: {method_tensors: false}`` leaves it out), and
    the declaration survives copies and the artifact cache. Subclasses implement :meth:`limit`.
    """

    stored_tensors: ClassVar[tuple[str, ...]] = ("bound",)
    #: Where activation faults at this call site land: the original activation's output, before the bound
    #: (as in Ranger, Chen et al. 2021, whose clamp follows the faulty ReLU), so the bound acts on them.
    faulty_output: ClassVar[str] = "activation"

    def __init__(self, activation: nn.Module, shape: Sequence[int]) -> None:
        super().__init__()
        self.activation = activation
        self.bound = nn.Parameter(torch.full(tuple(shape), math.inf))

    #: Whether :meth:`limit` returns the activation's output unchanged, bit for bit, wherever the bound is
    #: +inf (for every input, NaN and infinities included), with finite gradients there: the forward pass
    #: then calls it directly, without checking the bound for +inf.
    exact_when_unbounded: ClassVar[bool] = False

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        activated = self.activation(inputs)
        if not self.exact_when_unbounded and bool(torch.isposinf(self.bound).any()):
            return self._limit_where_bounded(activated)
        if may_modify_in_place(activated, inputs):
            return self.limit_(activated)
        return self.limit(activated)

    def _limit_where_bounded(self, activated: torch.Tensor) -> torch.Tensor:
        """``limit`` where the bound is finite, the activation itself where it is +inf."""
        unbounded = torch.isposinf(self.bound)
        with self._finite_bound(unbounded):
            limited = self.limit(activated)
        return torch.where(unbounded, activated, limited)

    @contextmanager
    def _finite_bound(self, unbounded: torch.Tensor) -> Iterator[None]:
        """Inside the block ``self.bound`` reads 1 where it is +inf (a value every sane ``limit`` handles),
        so ``limit`` computes nothing non-finite there, in the forward pass or the backward pass."""
        stored = self._parameters["bound"]
        assert stored is not None
        self._parameters["bound"] = torch.where(unbounded, torch.ones_like(stored), stored)  # type: ignore[assignment]
        try:
            yield
        finally:
            self._parameters["bound"] = stored

    @abstractmethod
    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        """Apply the bound (``self.bound``, finite wherever this is called on it) to the activation's output.

        Entries of an infinite bound never reach ``limit``'s result: the module returns the original
        activation there (unless the class declares :attr:`exact_when_unbounded`).
        """

    def limit_(self, activated: torch.Tensor) -> torch.Tensor:
        """:meth:`limit` computed in place in ``activated`` (a fresh tensor, no gradient recorded), returning
        it: the same values, without allocating a tensor of the batch's size. The default calls
        :meth:`limit`; a scheme overrides it with in-place operations that compute exactly what ``limit``
        does."""
        return self.limit(activated)

    def extra_repr(self) -> str:
        return f"bound={tuple(self.bound.shape)}"


class ActivationScheme(ABC):
    """Builds the bounded module of one call site (registered with ``register_activation_schemes``)."""

    Options: ClassVar[type[OptionsModel]] = NoOptions
    #: Why a model on quantized kernels cannot carry the scheme (one line); None when it can: a hard bound
    #: (clamp, zero above) is applied to the dequantized activation, which is then quantized again.
    not_quantizable: ClassVar[str | None] = "no quantized kernel is known to compute this activation scheme"

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    @abstractmethod
    def build(self, site: CallSiteSpec) -> BoundedActivation:
        """The bounded module for ``site``, its bound shaped ``bound_shape(site.output_shape, site.granularity)``."""

    def extend(self, model: nn.Module, bounded: dict[str, BoundedActivation]) -> None:
        """Called once every call site holds its bounded module (``bounded``, by call-site name): add modules
        elsewhere in the rewritten ``model`` (Ranger's clamps after pooling). The default adds nothing."""
        return None


class ThresholdOptimizer(ABC):
    """Sets or trains the bounds of bounded call sites (registered with ``register_threshold_optimizers``).

    Use ``context.train`` and ``context.validation`` only; the test split never reaches a method.
    """

    Options: ClassVar[type[OptionsModel]] = NoOptions
    #: Whether the bounds found depend on the deployment number format (a fault-driven search does).
    format_dependent: ClassVar[bool] = False

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    @abstractmethod
    def fit(self, model: nn.Module, sites: Sequence[str], context: PrepareContext) -> dict[str, Any]:
        """Set the bounds of the call sites ``sites`` (in execution order) of ``model`` in place; returns
        metrics worth keeping (accuracies, bound statistics)."""


def bounded_sites(model: nn.Module, sites: Sequence[str]) -> dict[str, BoundedActivation]:
    """The bounded modules at ``sites``, by name."""
    found = {}
    for name in sites:
        module = model.get_submodule(name)
        if not isinstance(module, BoundedActivation):
            raise TypeError(f"call site {name!r} holds {type(module).__name__}, not a BoundedActivation")
        found[name] = module
    return found


def profiled_bound(profile: ActivationProfile, shape: Sequence[int], quantile: float | None = None) -> torch.Tensor:
    """The bound a profile suggests for a bound of ``shape``: the maximum at that granularity.

    A scalar bound is the maximum of the per-image maxima or, with ``quantile``, that quantile of them
    (Ranger, Chen et al. 2021, Sec. III); channel and neuron bounds are the per-channel or per-neuron
    maxima (FitAct, Ghavami et al., Sec. V: bounds start at the observed maxima).
    """
    if not shape:
        value = profile.max if quantile is None else profile.image_max_quantile(quantile)
        return torch.tensor(value, dtype=torch.float32)
    if len(shape) == profile.neuron_max.dim() and tuple(shape) == tuple(profile.neuron_max.shape):
        return profile.neuron_max.clone()
    return profile.channel_max.reshape(shape).clone()


def set_profiled_bounds(
    model: nn.Module,
    sites: Sequence[str],
    context: PrepareContext,
    *,
    fraction: float = 1.0,
    quantile: float | None = None,
    ceil: bool = False,
) -> dict[str, ActivationProfile]:
    """Set every bound of ``sites`` to its profiled maximum over a seeded random ``fraction`` of the
    training split, read with the evaluation transforms (``context.profiling``: no random crop or flip,
    as Ranger and the reference toolbox profile), so the bounds are the same, bit for bit, for a seed.
    All bounds are profiled together, unbounded, then set. Returns the profile of each site: the
    statistics of its output over those images (:class:`ActivationProfile`), by call-site name."""
    modules = bounded_sites(model, sites)
    with torch.no_grad():
        for module in modules.values():
            module.bound.fill_(math.inf)
    size = max(1, round(fraction * len(context.profiling)))  # type: ignore[arg-type]
    data = random_subset(context.profiling, size, context.seed)
    profiles = profile_activations(model, data, context.device, sites=list(sites), batch_size=context.batch_size,
                                   seed=context.seed, value_samples=0)
    with torch.no_grad():
        for name, module in modules.items():
            bound = profiled_bound(profiles[name], tuple(module.bound.shape), quantile)
            module.bound.copy_(torch.ceil(bound) if ceil else bound)
    return profiles
