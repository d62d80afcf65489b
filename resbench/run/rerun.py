"""Which stored cells a run replaces, and the refusal to mix rows of other plugin versions into a cell.

A cell's id includes the versions of the plugins providing its method's parts
(:func:`resbench.run.cells.method_identity`), so rows computed by another version never join a cell.
Cells of the suite stored by another version are *stale*: a run refuses to start beside them (they would
stand next to the new rows in the leaderboard) until ``--rerun stale`` replaces them. ``--rerun`` also
replaces rows on purpose:

* ``failed``: the suite's cells whose last attempt failed (their rows and failure records);
* ``stale``: the suite's cells stored by other plugin versions;
* a method as written in the suite (``fitact``, ``saf-tanh+proact``): every cell of that method;
* a cell id: that cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resbench.errors import UsageError
from resbench.run.cells import CellKeys, Group, plugin_versions, unversioned
from resbench.run.store import ResultStore

__all__ = ["RERUN_KEYWORDS", "StaleCell", "cells_to_replace", "check_rerun", "stale_cells"]

RERUN_KEYWORDS = ("failed", "stale")


@dataclass(frozen=True)
class StaleCell:
    """A stored cell of the suite computed by other plugin versions than this run's."""

    cell_id: str
    method: str
    stored: dict[str, str]
    current: dict[str, str]


def _planned(keys: CellKeys, groups: Sequence[Group]) -> dict[str, tuple[Group, str]]:
    """Every cell of the run: (group, definition) by cell id."""
    return {cell_id: (group, definition) for group in groups
            for cell_id, definition in keys.all_definitions(group).items()}


def check_rerun(tokens: Sequence[str], keys: CellKeys, groups: Sequence[Group]) -> None:
    """Refuse a ``--rerun`` token that is neither a keyword, a method of the suite nor one of its cell ids."""
    methods = {group.method_spec.label for group in groups}
    planned = _planned(keys, groups)
    unknown = [token for token in tokens if token not in RERUN_KEYWORDS and token not in methods
               and token not in planned]
    if unknown:
        raise UsageError(f"--rerun: {', '.join(map(repr, unknown))} is neither failed, stale, a method of the suite "
                         f"({', '.join(sorted(methods))}) nor one of its cell ids")


def _versions_text(versions: dict[str, str]) -> str:
    return ", ".join(f"{plugin} {version}" for plugin, version in versions.items()) or "unrecorded versions"


def stale_cells(store: ResultStore, keys: CellKeys, groups: Sequence[Group]) -> list[StaleCell]:
    """Stored cells that are cells of this run but for the plugin versions that computed them."""
    planned = _planned(keys, groups)
    by_content = {unversioned(definition): (cell_id, definition) for cell_id, (_, definition) in planned.items()}
    stale = []
    stored = store.cells_frame()
    for cell_id, method, definition in zip(stored["cell_id"], stored["method"], stored["definition"], strict=True):
        match = by_content.get(unversioned(str(definition)))
        if match is not None and match[0] != cell_id:
            stale.append(StaleCell(str(cell_id), str(method), plugin_versions(str(definition)),
                                   plugin_versions(match[1])))
    return stale


def _refusal(store: ResultStore, stale: list[StaleCell]) -> UsageError:
    seen: dict[str, StaleCell] = {}
    for cell in stale:
        seen.setdefault(cell.method, cell)
    changes = "; ".join(f"{method}: stored by {_versions_text(cell.stored)}, this run has "
                        f"{_versions_text(cell.current)}" for method, cell in sorted(seen.items()))
    return UsageError(f"{store.path}: {len(stale)} stored cells of this suite were computed by other plugin versions "
                      f"({changes}); pass --rerun stale to replace them, or another --store")


def cells_to_replace(tokens: Sequence[str], store: ResultStore, keys: CellKeys, groups: Sequence[Group]) -> set[str]:
    """The stored cells ``--rerun tokens`` replaces; refuses (:class:`UsageError`) when stale cells remain."""
    stale = stale_cells(store, keys, groups)
    if stale and "stale" not in tokens:
        raise _refusal(store, stale)
    planned = _planned(keys, groups)
    chosen = {cell.cell_id for cell in stale}
    if "failed" in tokens:
        chosen |= {str(cell_id) for cell_id in store.failures_frame()["cell_id"] if cell_id in planned}
    chosen |= {token for token in tokens if token in planned}
    methods = set(tokens)
    chosen |= {cell_id for cell_id, (group, _) in planned.items() if group.method_spec.label in methods}
    return chosen
