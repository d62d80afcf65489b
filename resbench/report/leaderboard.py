"""Leaderboard tables: one per (dataset, model, format, fault model), one row per method.

Columns (``results/README.md`` explains each for readers):

* ``clean_accuracy``: accuracy after encoding in the number format, with no fault (the BER-0 row).
* ``acc@BER``: mean trial accuracy with its 95% Student-t confidence interval.
* ``auc``: area under mean accuracy over log10 BER across the grid (trapezoid rule), divided by clean
  accuracy and by the grid's width in decades, so 1.0 means no loss anywhere on the grid.
* ``tolerable_ber``: the largest BER of the grid at which mean accuracy, and that at every smaller BER,
  stays within 1 point of clean accuracy.
* ``added_bits_pct``: stored bits the method adds to the fault space, relative to the unprotected model.
* ``overhead_pct``: clean inference time relative to the unprotected model.
* ``prepare_s``: time spent preparing the method (profiling, search, post-training).
* ``trials_min``, ``trials_max``: the fewest and most trials behind any BER of the row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from resbench.statistics import summarize, trapezoid_auc

__all__ = ["TOLERANCE_POINTS", "LeaderboardTable", "build_leaderboard", "format_ber"]

TOLERANCE_POINTS = 1.0
GROUP_COLUMNS = ["dataset", "model", "format", "fault_model"]


@dataclass(frozen=True)
class LeaderboardTable:
    """One leaderboard: the group it covers, its BER grid and one row per method (sorted by AUC)."""

    dataset: str
    model: str
    format: str
    fault_model: str
    bers: list[float]
    rows: pd.DataFrame

    @property
    def title(self) -> str:
        """``dataset / model / format / fault model``."""
        return f"{self.dataset} / {self.model} / {self.format} / {self.fault_model}"


def format_ber(ber: float) -> str:
    """``1e-06`` style, short and sortable by eye."""
    return f"{ber:.0e}"


def _resilience_auc(bers: list[float], means: list[float], clean: float) -> float:
    if len(bers) < 2 or clean <= 0 or any(math.isnan(m) for m in means):
        return math.nan
    decades = [math.log10(ber) for ber in bers]
    width = decades[-1] - decades[0]
    return trapezoid_auc(decades, means) / width / clean


def _tolerable_ber(bers: list[float], means: list[float], clean: float) -> float:
    tolerable = math.nan
    if math.isnan(clean):
        return tolerable
    for ber, mean in zip(bers, means, strict=True):
        if math.isnan(mean) or mean < clean - TOLERANCE_POINTS:
            break
        tolerable = ber
    return tolerable


def _method_row(method: str, cells: pd.DataFrame, trials: pd.DataFrame, bers: list[float]) -> dict[str, object]:
    first = cells.iloc[0]
    clean_trials = trials[trials["ber"] == 0]["accuracy"]
    clean = float(clean_trials.mean()) if len(clean_trials) else math.nan
    row: dict[str, object] = {"method": method, "clean_accuracy": clean}
    means = []
    counts = []
    for ber in bers:
        values = trials[np.isclose(trials["ber"], ber, rtol=1e-9, atol=0)]["accuracy"].tolist()
        if values:
            summary = summarize(values)
            means.append(summary.mean)
            counts.append(summary.count)
            row[f"acc@{format_ber(ber)}"] = summary.mean
            row[f"ci_low@{format_ber(ber)}"] = summary.ci_low
            row[f"ci_high@{format_ber(ber)}"] = summary.ci_high
        else:
            means.append(math.nan)
            for prefix in ("acc", "ci_low", "ci_high"):
                row[f"{prefix}@{format_ber(ber)}"] = math.nan
    baseline_bits = int(first["baseline_bits"])
    row["auc"] = _resilience_auc(bers, means, clean)
    row["tolerable_ber"] = _tolerable_ber(bers, means, clean)
    row["added_bits_pct"] = 100 * (int(first["stored_bits"]) - baseline_bits) / baseline_bits if baseline_bits else 0.0
    baseline_seconds = float(first["baseline_eval_seconds"])
    row["overhead_pct"] = (
        100 * (float(first["clean_eval_seconds"]) / baseline_seconds - 1) if baseline_seconds > 0 else math.nan
    )
    row["prepare_s"] = float(first["prepare_seconds"])
    row["trials_min"] = min(counts) if counts else 0
    row["trials_max"] = max(counts) if counts else 0
    row["citation"] = str(first["citation"])
    row["notes"] = str(first["notes"])
    return row


def build_leaderboard(cells: pd.DataFrame, trials: pd.DataFrame) -> list[LeaderboardTable]:
    """Leaderboard tables from the store's cell frame and its trial frame (trials joined with cells)."""
    tables: list[LeaderboardTable] = []
    if cells.empty:
        return tables
    for key, group_cells in cells.groupby(GROUP_COLUMNS, sort=True):
        dataset, model, number_format, fault_model = (str(part) for part in key)
        bers = sorted(float(ber) for ber in group_cells["ber"].unique() if ber > 0)
        group_trials = trials[(trials[GROUP_COLUMNS] == pd.Series(key, index=GROUP_COLUMNS)).all(axis=1)]
        rows = [
            _method_row(str(method), method_cells, group_trials[group_trials["method"] == method], bers)
            for method, method_cells in group_cells.groupby("method", sort=True)
        ]
        frame = pd.DataFrame(rows).sort_values("auc", ascending=False, na_position="last", kind="stable")
        tables.append(LeaderboardTable(dataset, model, number_format, fault_model, bers, frame.reset_index(drop=True)))
    return tables
