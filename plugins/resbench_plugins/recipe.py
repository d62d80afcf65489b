"""``recipe``: an ad-hoc combination of an activation scheme and a threshold optimizer, for ablations.

``{name: recipe, activation: fitrelu, optimizer: profile-max, granularity: channel}`` is FitAct's
activation without its post-training, for example.
"""

from __future__ import annotations

from resbench.hookspecs import Register
from resbench.methods import Recipe
from resbench.plugins import hookimpl

__all__ = ["AdHocRecipe", "register_methods"]


class AdHocRecipe(Recipe):
    """A recipe spelled out in the suite: activation scheme, threshold optimizer, granularity."""

    citation = "ad-hoc recipe of resbench components"


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``recipe``."""
    register("recipe", AdHocRecipe)
