"""Methods as recipes of components: an activation scheme and a threshold optimizer, by name.

``ranger``, ``clipact``, ``fitact`` and ``proact`` are named recipes (see ``resbench_plugins``); a suite
can also spell out an ad-hoc one, for ablations::

    methods:
      - {name: recipe, activation: fitrelu, optimizer: profile-max, granularity: channel}

Components are looked up by name in their registries, so a third-party activation scheme or optimizer
combines with the built-in ones. A recipe's options are normalized when validated: each component
becomes ``{name, options}`` with every option filled in, so equal recipes are one cell and one cache entry.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import pydantic
import torch
from torch import nn

from resbench.config import ComponentSpec
from resbench.errors import PluginError, blame_plugin
from resbench.methods.base import Method, PrepareContext
from resbench.methods.components import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    Granularity,
    ThresholdOptimizer,
    bound_shape,
)
from resbench.methods.guards import check_finite
from resbench.models.callsites import (
    activation_call_sites,
    call_site_details,
    replace_call_site,
    rewrite_activation_call_sites,
)
from resbench.options import Options
from resbench.registry import Built

__all__ = ["Recipe", "RecipeOptions", "normalized_spec", "site_output_shapes"]

RecipeGranularity = Literal["layer", "channel", "neuron", "hybrid"]


def normalized_spec(family: str, spec: ComponentSpec, where: str) -> ComponentSpec:
    """``spec`` with the registered name and every option filled in (defaults included), validated.

    Normalized specs make equal configurations one cell and one cache entry. An option error names
    ``where``, the item and its plugin (``recipe optimizer 'profile-max' (plugin resbench_plugins.ranger)``).
    """
    from resbench.plugins import get_registries

    registry = getattr(get_registries(), family)
    named, _ = registry.resolve(spec.name)
    entry, options = registry.options_for(spec.name, spec.options, f"{where} {named.name!r} (plugin {named.plugin})")
    return ComponentSpec(name=entry.name, options=options.model_dump(mode="json"))


class RecipeOptions(Options):
    """Options of an ad-hoc recipe: which components, at which granularity."""

    activation: ComponentSpec = pydantic.Field(description="activation scheme (name or {name, options})")
    optimizer: ComponentSpec = pydantic.Field(description="threshold optimizer (name or {name, options})")
    granularity: RecipeGranularity = pydantic.Field(
        default="layer",
        description="bounds per call site (layer), channel or neuron; hybrid: layer-wise except the last "
        "call site, which is neuron-wise (ProAct's HyReLU)",
    )

    @pydantic.model_validator(mode="after")
    def _normalize_components(self) -> RecipeOptions:
        # Frozen model: fill every component option in place once, so dumps (cell ids, cache keys) agree.
        object.__setattr__(self, "activation", normalized_spec("activations", self.activation, "recipe activation"))
        object.__setattr__(self, "optimizer", normalized_spec("optimizers", self.optimizer, "recipe optimizer"))
        return self


def site_output_shapes(model: nn.Module, sites: list[str], image_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Output shape (one image) of each call site, from one forward pass of a blank image."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _module, _inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape[1:]))
        )
        for name in sites
    ]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


class Recipe(Method):
    """An activation scheme at every activation call site, with bounds set by a threshold optimizer."""

    Options: ClassVar[type[Options]] = RecipeOptions
    changes: ClassVar[frozenset[str]] = frozenset({"activations"})

    def __init__(self, options: RecipeOptions) -> None:
        super().__init__(options)
        from resbench.plugins import get_registries

        registries = get_registries()
        self.recipe = options
        self.scheme: Built[Any] = registries.activations.build(options.activation.name, options.activation.options)
        self.optimizer: Built[Any] = registries.optimizers.build(options.optimizer.name, options.optimizer.options)

    @property
    def format_dependent(self) -> bool:
        optimizer: ThresholdOptimizer = self.optimizer.value
        return optimizer.format_dependent

    def quantized_refusal(self) -> str | None:
        reason = self.scheme.value.not_quantizable
        return None if reason is None else f"activation scheme {self.scheme.entry.name}: {reason}"

    def cache_identity(self) -> dict[str, Any]:
        from resbench.plugins import get_registries

        plugins = get_registries().plugins
        return {
            part.entry.name: {"plugin": part.entry.plugin, "version": plugins[part.entry.plugin].version}
            for part in (self.scheme, self.optimizer)
        }

    def granularity_of(self, index: int, count: int) -> Granularity:
        """Granularity of the ``index``-th of ``count`` call sites (hybrid: neuron-wise at the last only)."""
        granularity = self.recipe.granularity
        if granularity == "hybrid":
            return "neuron" if index == count - 1 else "layer"
        return granularity

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        rewritten = rewrite_activation_call_sites(model, copy_model=False)
        details = call_site_details(rewritten)
        shapes = site_output_shapes(rewritten, [site.name for site in details], context.image_shape)
        scheme: ActivationScheme = self.scheme.value
        label = f"activation scheme {self.scheme.entry.name!r}"
        built: dict[str, BoundedActivation] = {}
        for index, site in enumerate(details):
            granularity = self.granularity_of(index, len(details))
            activation = rewritten.get_submodule(site.name)
            spec = CallSiteSpec(site.name, site.kind, activation, shapes[site.name], granularity)
            with blame_plugin(self.scheme.entry.plugin, label, "build"):
                bounded = scheme.build(spec)
            if not isinstance(bounded, BoundedActivation):
                raise PluginError(self.scheme.entry.plugin, label, "build",
                                  f"built {type(bounded).__name__}, not a BoundedActivation")
            expected = bound_shape(spec.output_shape, granularity)
            if tuple(bounded.bound.shape) != expected:
                raise PluginError(self.scheme.entry.plugin, label, "build",
                                  f"built a bound of shape {tuple(bounded.bound.shape)} for call site "
                                  f"{site.name!r}, expected {expected} ({granularity})")
            self._probe(bounded, spec)
            replace_call_site(rewritten, site.name, bounded)
            built[site.name] = bounded
        with blame_plugin(self.scheme.entry.plugin, label, "build"):
            scheme.extend(rewritten, built)
        return rewritten

    def _probe(self, bounded: BoundedActivation, site: CallSiteSpec) -> None:
        """Run the bounded module once on one image's worth of input, with a finite bound, and check that
        its output has the call site's shape: a wrong ``limit`` is blamed on the scheme here, not on the
        optimizer that runs the first forward pass."""
        plugin, label = self.scheme.entry.plugin, f"activation scheme {self.scheme.entry.name!r}"
        probe = torch.linspace(-2.0, 2.0, steps=max(1, math.prod(site.output_shape)), device=bounded.bound.device)
        stored = bounded.bound.detach().clone()
        try:
            with torch.no_grad(), blame_plugin(plugin, label, "build (a probe of its module)"):
                bounded.bound.fill_(1.0)
                limited = bounded.limit(bounded.activation(probe.reshape(1, *site.output_shape)))
        finally:
            with torch.no_grad():
                bounded.bound.copy_(stored)
        if tuple(limited.shape) != (1, *site.output_shape):
            raise PluginError(plugin, label, "build", f"limit() at call site {site.name!r} returned shape "
                              f"{tuple(limited.shape)} for an activation output of shape {(1, *site.output_shape)}; "
                              "it must keep that shape")

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        optimizer: ThresholdOptimizer = self.optimizer.value
        label = f"threshold optimizer {self.optimizer.entry.name!r}"
        with blame_plugin(self.optimizer.entry.plugin, label, "fit"):
            metrics = optimizer.fit(model, activation_call_sites(model), context)
        check_finite(model, self.optimizer.entry.plugin, label, "fit")
        return dict(metrics)
