"""Figures from the results store: accuracy against BER with interval bands, and accuracy distributions.

The distribution figure follows FitAct's figure 5 (Ghavami et al.): one box per method and BER,
showing how bimodal trial accuracy under faults is.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from resbench.files import replace_atomically
from resbench.report.keys import format_ber
from resbench.report.tables import LeaderboardTable

__all__ = ["plot_accuracy_curves", "plot_distributions", "write_figures"]

FIGURE_SUFFIXES = (".png", ".svg")


def _slug(table: LeaderboardTable) -> str:
    parts = (table.dataset, table.model, table.format, table.fault_model, *([table.setup] if table.setup else []))
    text = "_".join(parts)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def plot_accuracy_curves(table: LeaderboardTable) -> plt.Figure:
    """Estimated mean accuracy against BER (log axis), one line per method (labelled with its rank and
    resilience score) with its 95% interval band."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for index, (_, row) in enumerate(table.rows.iterrows()):
        color = sns.color_palette("tab10")[index % 10]
        means = [row[f"acc@{format_ber(b)}"] for b in table.bers]
        lows = [row[f"ci_low@{format_ber(b)}"] for b in table.bers]
        highs = [row[f"ci_high@{format_ber(b)}"] for b in table.bers]
        lows = [mean if math.isinf(low) else low for low, mean in zip(lows, means, strict=True)]
        highs = [mean if math.isinf(high) else high for high, mean in zip(highs, means, strict=True)]
        score = row.get("score", math.nan)
        label = str(row["method"]) if math.isnan(score) else f"{row['rank']} {row['method']} ({score:.3f})"
        axes.plot(table.bers, means, marker="o", color=color, label=label)
        axes.fill_between(table.bers, lows, highs, color=color, alpha=0.2, linewidth=0)
    axes.set_xscale("log")
    axes.set_xlabel("bit-error rate")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(table.title, fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(title="rank, method (score)", fontsize=8)
    figure.tight_layout()
    return figure


def plot_distributions(table: LeaderboardTable, trials: pd.DataFrame) -> plt.Figure:
    """Box plots of trial accuracy per BER and method (FitAct, figure 5); for conditional campaigns the
    trials are those given at least one flip (the zero-flip share is clean accuracy), for critical-bit
    strata the trials of every stratum as drawn (the catastrophic strata over-represented)."""
    faulty = trials[trials["ber"] > 0].copy()
    faulty["BER"] = faulty["ber"].map(format_ber)
    order = [format_ber(ber) for ber in table.bers]
    methods = [str(method) for method in table.rows["method"]]
    figure, axes = plt.subplots(figsize=(max(6.4, 1.2 * len(order) * max(1, len(methods)) / 2), 4.2))
    with warnings.catch_warnings():
        # seaborn passes matplotlib's deprecated ``vert`` argument; not resbench's to fix.
        warnings.filterwarnings("ignore", "vert: bool", category=DeprecationWarning)
        sns.boxplot(data=faulty, x="BER", y="accuracy", hue="method", order=order, hue_order=methods, ax=axes,
                    fliersize=2, linewidth=0.8)
    designs = set(faulty["sampling"]) if "sampling" in faulty else set()
    axes.set_ylabel("accuracy given at least one flip (%)" if "conditional" in designs
                    else "accuracy per trial, strata unweighted (%)" if "critical-bits" in designs
                    else "accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(table.title, fontsize=10)
    figure.tight_layout()
    return figure


def _save_atomically(figure: plt.Figure, path: Path) -> None:
    """Draw into a temporary file beside ``path``, then rename: a kill or a full disk leaves the previous
    figure in place, never a truncated one."""
    # A fixed salt gives stable SVG element ids: regenerated figures differ only where the data do.
    with replace_atomically(path) as temporary, matplotlib.rc_context({"svg.hashsalt": "resbench"}):
        figure.savefig(temporary, dpi=120, format=path.suffix[1:],
                       metadata={"Date": None} if path.suffix == ".svg" else None)


def _save(figure: plt.Figure, folder: Path, stem: str) -> list[Path]:
    written = []
    try:
        for suffix in FIGURE_SUFFIXES:
            path = folder / f"{stem}{suffix}"  # not with_suffix: stems hold dots (q15.16)
            _save_atomically(figure, path)
            written.append(path)
    finally:
        plt.close(figure)
    return written


def write_figures(tables: list[LeaderboardTable], trials: pd.DataFrame, output: Path) -> list[Path]:
    """Both figures for every table, as PNG and SVG under ``output``; returns the files written."""
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in tables:
        if not table.bers:  # one fault per inference: no BER axis to plot against
            continue
        group_trials = trials[trials["cell_id"].isin(table.cell_ids)]
        if not (group_trials["ber"] > 0).any():  # its campaign failed: a table without a curve to draw
            continue
        written += _save(plot_accuracy_curves(table), output, f"accuracy_{_slug(table)}")
        written += _save(plot_distributions(table, group_trials), output, f"distribution_{_slug(table)}")
    return written
