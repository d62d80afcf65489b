"""Import paths that moved after resbench 0.1, kept working until the next minor release.

``import resbench.formats`` (and the other old paths below) still works: it warns with a
:class:`DeprecationWarning` naming the new path and returns a module that forwards every attribute to
the new one, so ``from resbench.faults import FaultModel`` gives the very class of
:mod:`resbench.engine.faults`. The old paths are removed in resbench 0.2.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MOVED_MODULES", "REMOVED_IN", "install"]

#: Old module path -> new module path.
MOVED_MODULES: dict[str, str] = {
    "resbench.formats": "resbench.engine.formats",
    "resbench.faultspace": "resbench.engine.faultspace",
    "resbench.faults": "resbench.engine.faults",
    "resbench.injection": "resbench.engine.injection",
    "resbench.estimator": "resbench.engine.estimator",
    "resbench.activation_faults": "resbench.engine.activation_faults",
    "resbench.activation_injection": "resbench.engine.activation_injection",
    "resbench.run.evaluation": "resbench.engine.evaluation",
    "resbench.measures": "resbench.run.measures",
    "resbench.provenance": "resbench.run.provenance",
    "resbench.score": "resbench.report.score",
    "resbench.methods.callsites": "resbench.models.callsites",
    "resbench.report.formats": "resbench.report.renderers",
    "resbench.report.leaderboard": "resbench.report.tables",
    "resbench.report.activation_leaderboard": "resbench.report.activation_rates",
}

#: The release that drops the old paths.
REMOVED_IN = "0.2"


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED_MODULES` and loads each as a forwarder to its new module."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path is removed in "
                      f"resbench {REMOVED_IN})", DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        forwarder = types.ModuleType(spec.name, f"Deprecated alias of {new}.")

        def forward(name: str) -> Any:
            return getattr(target, name)

        forwarder.__dict__.update(__getattr__=forward, __all__=list(getattr(target, "__all__", ())))
        return forwarder

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the forwarder reads the new module."""


def install() -> None:
    """Let the old import paths resolve (once per interpreter)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
