"""``A+B``: two methods applied together (``saf-tanh+proact``, ``wscale+fitact``).

See :mod:`resbench.methods.composition` for the order the parts are built and fitted in and for which
combinations are refused.
"""

from __future__ import annotations

from resbench.hookspecs import Register
from resbench.methods.composition import COMPOSITION_PATTERN, Composition
from resbench.plugins import hookimpl

__all__ = ["register_methods"]


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``compose``, which also answers every ``A+B`` name."""
    register("compose", Composition, pattern=COMPOSITION_PATTERN,
             description="two methods applied together; also written A+B (e.g. saf-tanh+proact)")
