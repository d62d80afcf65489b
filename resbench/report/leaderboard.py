"""Leaderboard tables: one per (dataset, model, format, fault model), one row per method.

Columns (``results/README.md`` explains each for readers):

* ``clean_accuracy``: accuracy after encoding in the number format, with no fault (the BER-0 row).
* ``acc@BER``: mean trial accuracy with its 95% Student-t confidence interval.
* ``auc``: area under mean accuracy over log10 BER across the grid (trapezoid rule), divided by clean
  accuracy and by the grid's width in decades, so 1.0 means no loss anywhere on the grid.
* ``tolerable_ber``: the largest BER of the grid at which mean accuracy, and that at every smaller BER,
  stays within 1 point of clean accuracy.
* ``added_values``: stored values the method adds to the fault space (bounds, thresholds).
* ``added_bits_pct``: stored bits the method adds to the fault space, relative to the unprotected model.
* ``overhead_pct``: clean inference time relative to the unprotected model.
* ``prepare_s``: time spent preparing the method (profiling, search, post-training).
* ``trials_min``, ``trials_max``: the fewest and most trials behind any BER of the row.
* ``sdc@BER``: mean SDC rate (%); ``due_trials@BER``: share of trials (%) with at least one DUE, with
  its 95% Wilson interval (``due_low@BER``, ``due_high@BER``).

Cells are grouped by their *setup* too (everything in a cell's definition but the method and the BER:
seed, training recipe, fault-space options, BER sweep, ...), so suites sharing a store never pool
different setups into one row; tables with the same names but different setups name their setup.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from resbench.report.activation_leaderboard import activation_columns, rank_single_fault_rows
from resbench.statistics import summarize, trapezoid_auc, wilson_interval

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
    cell_ids: tuple[str, ...] = ()
    setup: str = ""
    #: Where the results come from (versions, suites, seeds, dates), for page footers; filled by the caller.
    provenance: dict[str, Any] = field(default_factory=dict)
    #: what the faults hit: ``weights`` or ``activations`` (see :mod:`resbench.report.activation_leaderboard`)
    target: str = "weights"

    @property
    def per_inference(self) -> bool:
        """Whether the table reports one fault per inference (``act-single``) rather than a BER sweep."""
        return self.target == "activations" and not self.bers

    @property
    def title(self) -> str:
        """``dataset / model / format / fault model / target``, plus ``setup X`` where names alone are ambiguous."""
        title = f"{self.dataset} / {self.model} / {self.format} / {self.fault_model} / faults in {self.target}"
        return f"{title} / setup {self.setup}" if self.setup else title


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


def _rates(trials: pd.DataFrame, key: str) -> dict[str, float]:
    """Mean SDC rate, and the share of trials with a DUE with its Wilson interval, in percent."""
    with_due = int((trials["due_rate"] > 0).sum())
    low, high = wilson_interval(with_due, len(trials))
    return {
        f"sdc@{key}": float(trials["sdc_rate"].mean()),
        f"due_trials@{key}": 100 * with_due / len(trials),
        f"due_low@{key}": 100 * low,
        f"due_high@{key}": 100 * high,
    }


def _target_of(definition: str) -> str:
    """The fault target a cell's definition names (weight cells predate the key)."""
    return str(json.loads(definition).get("fault_target", "weights"))


def _setup_of(definition: str) -> str:
    """A short id of everything in a cell's definition but the method and the BER."""
    setup = {key: value for key, value in json.loads(definition).items() if key not in ("method", "ber")}
    return hashlib.blake2b(json.dumps(setup, sort_keys=True).encode(), digest_size=3).hexdigest()


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
            row.update(_rates(trials[np.isclose(trials["ber"], ber, rtol=1e-9, atol=0)], format_ber(ber)))
        else:
            means.append(math.nan)
            for prefix in ("acc", "ci_low", "ci_high", "sdc", "due_trials", "due_low", "due_high"):
                row[f"{prefix}@{format_ber(ber)}"] = math.nan
    baseline_bits = int(first["baseline_bits"])
    row["auc"] = _resilience_auc(bers, means, clean)
    row["tolerable_ber"] = _tolerable_ber(bers, means, clean)
    row["added_values"] = _added_values(str(first["fault_space"]))
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


def _added_values(fault_space: str) -> int:
    """Stored values the method adds (its tensors in the cell's fault space: bounds, thresholds)."""
    return sum(math.prod(entry["shape"]) for entry in json.loads(fault_space) if entry["kind"] == "method")


def _with_activation_columns(
    frame: pd.DataFrame, cells: pd.DataFrame, trials: pd.DataFrame, bers: list[float]
) -> pd.DataFrame:
    """Rows of an activation-fault table with per-inference rates and their Wilson intervals."""
    samples = int(cells["eval_samples"].iloc[0])
    extra = pd.DataFrame([
        {"method": method, **activation_columns(trials[(trials["method"] == method) & (trials["ber"] != 0)],
                                                samples, bers)}
        for method in frame["method"]
    ])
    merged = frame.merge(extra, on="method", how="left")
    if bers:
        return merged
    counts = trials[trials["ber"] != 0].groupby("method")["trial"].count()
    merged["trials_min"] = merged["trials_max"] = [int(counts.get(method, 0)) for method in merged["method"]]
    return rank_single_fault_rows(merged)


def build_leaderboard(cells: pd.DataFrame, trials: pd.DataFrame) -> list[LeaderboardTable]:
    """Leaderboard tables from the store's cell frame and its trial frame (trials joined with cells)."""
    tables: list[LeaderboardTable] = []
    if cells.empty:
        return tables
    cells = cells.assign(setup=cells["definition"].map(_setup_of))
    setups_per_name = cells.groupby(GROUP_COLUMNS)["setup"].nunique()
    for key, group_cells in cells.groupby([*GROUP_COLUMNS, "setup"], sort=True):
        dataset, model, number_format, fault_model, setup = (str(part) for part in key)
        bers = sorted(float(ber) for ber in group_cells["ber"].unique() if ber > 0)
        group_trials = trials[trials["cell_id"].isin(group_cells["cell_id"])]
        rows = [
            _method_row(str(method), method_cells, group_trials[group_trials["method"] == method], bers)
            for method, method_cells in group_cells.groupby("method", sort=True)
        ]
        frame = pd.DataFrame(rows).sort_values("auc", ascending=False, na_position="last", kind="stable")
        target = _target_of(str(group_cells["definition"].iloc[0]))
        if target == "activations":
            frame = _with_activation_columns(frame, group_cells, group_trials, bers)
        shown_setup = setup if setups_per_name[tuple(key[:4])] > 1 else ""
        tables.append(LeaderboardTable(dataset, model, number_format, fault_model, bers,
                                       frame.reset_index(drop=True), tuple(group_cells["cell_id"]), shown_setup,
                                       target=target))
    return tables
