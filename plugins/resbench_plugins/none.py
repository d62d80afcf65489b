"""``none``: the unprotected model, the baseline every method is compared with."""

from __future__ import annotations

from typing import Any

from resbench.methods import Method
from resbench.plugins import hookimpl

__all__ = ["Unprotected", "register_methods"]


class Unprotected(Method):
    """Unprotected baseline: the trained model as it is."""

    citation = "baseline"


@hookimpl
def register_methods(register: Any) -> None:
    """Register ``none``."""
    register("none", Unprotected)
