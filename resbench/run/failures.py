"""Failures confined to the cells they touch: which cells, which phase, which plugin to blame, one line.

A job that fails yields a :class:`Failed` for the cells it could not measure; the driver records it and
the other cells go on. The plugin blamed is the one whose module raised (the deepest traceback frame in a
module of one of the group's items), else the plugin of the phase's item.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from resbench.cache import ArtifactCacheError
from resbench.config import ComponentSpec
from resbench.errors import PluginError, ResbenchError
from resbench.plugins import get_registries
from resbench.run.cells import CellKeys, Group
from resbench.run.store import CellFailure

__all__ = ["PHASE_FAMILY", "Failed", "failures"]


@dataclass(frozen=True)
class Failed:
    """Cells that could not be measured, with the phase, the plugin to blame and the error; ``details``
    is the traceback, for the driver's log (``resbench -v``)."""

    failures: tuple[CellFailure, ...]
    details: str = ""


def _error_text(error: BaseException) -> str:
    """One line: resbench's own errors (a plugin named, bad input) as they are, others with their type."""
    if isinstance(error, ResbenchError):
        return " ".join(str(error).split())
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _culprit(error: BaseException, group: Group, default_family: str) -> str:
    """The plugin whose code raised ``error``: the deepest traceback frame in a module of one of the
    group's items (method, model, dataset, format, fault models); else the plugin of the phase's item."""
    if isinstance(error, PluginError):
        return error.plugin
    if isinstance(error, ArtifactCacheError):  # the machine's or the cluster's set-up, no plugin's doing
        return "resbench"
    registries = get_registries()
    specs = {"methods": group.method_spec, "models": group.model_spec, "datasets": group.dataset_spec,
             "formats": group.format_spec}
    owners: dict[str, str] = {}
    default = ""
    for family, spec in specs.items():
        try:
            entry = getattr(registries, family).resolve(spec.name)[0]
        except Exception:  # a name that no longer resolves blames nobody
            continue
        owners[getattr(entry.item, "__module__", "")] = entry.plugin
        info = registries.plugins.get(entry.plugin)
        if info is not None and not info.builtin:  # a third-party package owns all its modules
            owners[info.module.split(".")[0]] = entry.plugin
        if family == default_family:
            default = entry.plugin
    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        module = str(frame.f_globals.get("__name__", ""))
        for candidate in (module, module.split(".")[0]):
            if candidate in owners:
                return owners[candidate]
    return default or "resbench"


def failures(keys: CellKeys, group: Group, phase: str, error: BaseException, default_family: str,
             faults: list[ComponentSpec] | None = None) -> Failed:
    """A :class:`Failed` for every cell of ``group`` (of ``faults``, default all fault models)."""
    plugin = _culprit(error, group, default_family)
    text = _error_text(error)
    failures = [
        CellFailure(keys.cell_id(group, fault_spec, ber), group.method_spec.label, group.model_spec.label,
                    group.dataset_spec.label, group.format_spec.label, fault_spec.label, ber, phase, plugin, text)
        for fault_spec in (faults if faults is not None else keys.suite.faults)
        for ber in [0.0, *keys.bers(fault_spec)]
    ]
    details = "".join(traceback.format_exception(error))
    return Failed(tuple(failures), details)


#: The plugin family blamed for a failure in each phase, when no frame of a plugin's module raised.
PHASE_FAMILY = {"load": "datasets", "baseline": "models", "prepare": "methods", "deploy": "formats",
                 "campaign": "methods"}
