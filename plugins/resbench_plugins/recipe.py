"""Ad-hoc methods spelled out in a suite, for ablations and third-party components.

* ``recipe``: an activation scheme and a threshold optimizer.
  ``{name: recipe, activation: fitrelu, optimizer: profile-max, granularity: channel}`` is FitAct's
  activation without its post-training, for example.
* ``transform``: one weight transform. ``{name: transform, transform: {name: saf, function: arctan}}``.
"""

from __future__ import annotations

from resbench.hookspecs import Register
from resbench.methods import Recipe
from resbench.methods.transforms import TransformMethod
from resbench.plugins import hookimpl

__all__ = ["AdHocRecipe", "AdHocTransform", "register_methods"]


class AdHocRecipe(Recipe):
    """A recipe spelled out in the suite: activation scheme, threshold optimizer, granularity."""

    citation = "ad-hoc recipe of resbench components"


class AdHocTransform(TransformMethod):
    """A weight transform named in the suite, applied to every conv/linear weight."""

    citation = "ad-hoc weight transform of resbench components"


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``recipe`` and ``transform``."""
    register("recipe", AdHocRecipe)
    register("transform", AdHocTransform)
