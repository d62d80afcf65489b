"""How a model is protected: the method interface, its components (activation schemes, threshold
optimizers, weight transforms), recipes, compositions, call sites and profiling.

Everything a method plugin needs is importable from here (see ``docs/plugins.md``).
"""

from __future__ import annotations

from resbench.methods.base import Citation, Method, PrepareContext
from resbench.methods.components import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    Granularity,
    ThresholdOptimizer,
    bound_shape,
    bounded_sites,
    may_modify_in_place,
    profiled_bound,
    set_profiled_bounds,
)
from resbench.methods.composition import Composition, CompositionOptions
from resbench.methods.profiling import ActivationProfile, profile_activations
from resbench.methods.recipes import Recipe, RecipeOptions
from resbench.methods.transforms import (
    TransformMethod,
    TransformMethodOptions,
    WeightTransform,
    apply_weight_transform,
    transformed_layers,
    weight_layers,
)
from resbench.models.callsites import (
    CallSite,
    activation_call_sites,
    call_site_details,
    get_call_site,
    replace_call_site,
    rewrite_activation_call_sites,
)

__all__ = [
    "ActivationProfile",
    "ActivationScheme",
    "BoundedActivation",
    "CallSite",
    "CallSiteSpec",
    "Citation",
    "Composition",
    "CompositionOptions",
    "Granularity",
    "Method",
    "PrepareContext",
    "Recipe",
    "RecipeOptions",
    "ThresholdOptimizer",
    "TransformMethod",
    "TransformMethodOptions",
    "WeightTransform",
    "activation_call_sites",
    "apply_weight_transform",
    "bound_shape",
    "bounded_sites",
    "call_site_details",
    "get_call_site",
    "may_modify_in_place",
    "profile_activations",
    "profiled_bound",
    "replace_call_site",
    "rewrite_activation_call_sites",
    "set_profiled_bounds",
    "transformed_layers",
    "weight_layers",
]
