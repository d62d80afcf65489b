"""Leaderboard columns for transient faults in activations (``act-single``, ``act-bitflip``).

Every inference of an activation campaign gets its own faults, drawn independently of every other, so
an outcome (SDC, critical SDC, DUE, correct) is a Bernoulli event per inference. Counts are pooled over
the cell's trials and images and given with 95% Wilson intervals (Wilson 1927). Images differ in how
vulnerable they are, so the events are independent but not identically distributed: the variance of the
count is then at most the binomial one, and the Wilson interval is conservative.

Columns added to a method's row (percent of inferences):

* one fault per inference (``act-single``, the primary figures): ``sdc``, ``critical_sdc``, ``due`` and
  ``accuracy`` with ``*_low`` / ``*_high`` bounds, ``inferences``, and ``sdc_vs_none``: how many times
  fewer SDCs than the unprotected model (``none``'s SDC rate over the method's), with a 95% Katz log
  interval (Katz et al. 1978). Methods see the same faults (common random numbers), which correlates the
  two rates positively; the Katz interval ignores that correlation and is therefore conservative.
* per BER (``act-bitflip``): ``sdc_low@BER`` / ``sdc_high@BER`` around the weight columns' ``sdc@BER``,
  ``critical_sdc@BER`` and ``due_rate@BER`` (inferences with NaN or Inf logits) with their bounds.

Rows of ``act-single`` tables are ranked by accuracy under faults, so a model that is always wrong (and
therefore never silently corrupted) can never rank first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from resbench.statistics import wilson_interval

if TYPE_CHECKING:
    from resbench.report.leaderboard import LeaderboardTable

__all__ = ["activation_columns", "activation_display_frame", "activation_latex_table", "activation_legend",
           "katz_ratio_interval", "rank_single_fault_rows"]

MISSING = "\u2013"

ONE_FAULT_PER_INFERENCE = -1.0  # resbench.activation_faults.ONE_FAULT_PER_INFERENCE (no torch import here)


def _events(trials: pd.DataFrame, column: str, eval_samples: int) -> int:
    """Events over the trials: each trial's rate (percent of ``eval_samples``) back to a count."""
    return int(np.rint(trials[column].to_numpy(dtype=float) * eval_samples / 100).sum())


def _rate(prefix: str, suffix: str, events: int, total: int) -> dict[str, float]:
    low, high = wilson_interval(events, total)
    return {f"{prefix}{suffix}": 100 * events / total if total else math.nan,
            f"{prefix}_low{suffix}": 100 * low, f"{prefix}_high{suffix}": 100 * high}


def katz_ratio_interval(events_a: int, total_a: int, events_b: int, total_b: int) -> tuple[float, float, float]:
    """Ratio of two proportions ``(a / total_a) / (b / total_b)`` with its 95% Katz log interval.

    A zero count gets 0.5 added to both counts of its proportion (Haldane's correction), so the ratio
    stays finite.
    """
    if min(total_a, total_b) <= 0:
        return math.nan, math.nan, math.nan
    a, b, n_a, n_b = float(events_a), float(events_b), float(total_a), float(total_b)
    if a == 0 or b == 0:
        a, b, n_a, n_b = a + 0.5, b + 0.5, n_a + 0.5, n_b + 0.5
    ratio = (a / n_a) / (b / n_b)
    spread = 1.959963984540054 * math.sqrt(max(0.0, 1 / a - 1 / n_a + 1 / b - 1 / n_b))
    return ratio, ratio * math.exp(-spread), ratio * math.exp(spread)


def _single_fault_columns(trials: pd.DataFrame, eval_samples: int) -> dict[str, float]:
    total = len(trials) * eval_samples
    row: dict[str, float] = {"inferences": float(total)}
    for prefix, column in (("sdc", "sdc_rate"), ("critical_sdc", "critical_sdc_rate"), ("due", "due_rate"),
                           ("accuracy", "accuracy")):
        events = _events(trials, column, eval_samples) if total else 0
        row.update(_rate(prefix, "", events, total))
        row[f"{prefix}_events"] = float(events)
    return row


def _per_ber_columns(trials: pd.DataFrame, eval_samples: int, bers: list[float]) -> dict[str, float]:
    row: dict[str, float] = {}
    for ber in bers:
        key = f"@{ber:.0e}"
        at_ber = trials[np.isclose(trials["ber"], ber, rtol=1e-9, atol=0)]
        total = len(at_ber) * eval_samples
        for prefix, column in (("sdc", "sdc_rate"), ("critical_sdc", "critical_sdc_rate"), ("due_rate", "due_rate")):
            if total:
                row.update(_rate(prefix, key, _events(at_ber, column, eval_samples), total))
        row.pop(f"sdc{key}", None)  # the weight columns' mean SDC rate: the same figure
    return row


def activation_columns(trials: pd.DataFrame, eval_samples: int, bers: list[float]) -> dict[str, float]:
    """The columns one method's row gains (see the module docstring) from its faulty trial rows."""
    single = trials[trials["ber"] == ONE_FAULT_PER_INFERENCE]
    if len(single):
        return _single_fault_columns(single, eval_samples)
    return _per_ber_columns(trials, eval_samples, bers)


def rank_single_fault_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``act-single`` rows with ``sdc_vs_none`` against the ``none`` row, ranked by accuracy under faults."""
    frame = frame.copy()
    baseline = frame[frame["method"] == "none"]
    for column in ("sdc_vs_none", "sdc_vs_none_low", "sdc_vs_none_high"):
        frame[column] = math.nan
    if len(baseline):
        reference = baseline.iloc[0]
        for index, row in frame[frame["method"] != "none"].iterrows():
            ratio = katz_ratio_interval(int(reference["sdc_events"]), int(reference["inferences"]),
                                        int(row["sdc_events"]), int(row["inferences"]))
            frame.loc[index, ["sdc_vs_none", "sdc_vs_none_low", "sdc_vs_none_high"]] = ratio
    return frame.sort_values("accuracy", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _shown(value: object, digits: int = 2) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return MISSING
    return f"{value:.{digits}f}"


def _with_interval(row: pd.Series, name: str, suffix: str = "", digits: int = 2) -> str:
    value = row.get(f"{name}{suffix}", math.nan)
    if not isinstance(value, int | float) or math.isnan(value):
        return MISSING
    low, high = row[f"{name}_low{suffix}"], row[f"{name}_high{suffix}"]
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _single_fault_display(row: pd.Series) -> dict[str, str]:
    return {
        "accuracy %": _with_interval(row, "accuracy", digits=1),
        "SDC %": _with_interval(row, "sdc"),
        "critical SDC %": _with_interval(row, "critical_sdc"),
        "DUE %": _with_interval(row, "due"),
        "x fewer SDCs than none": _with_interval(row, "sdc_vs_none", digits=1),
        "inferences": _shown(row.get("inferences", math.nan), 0),
    }


def _sweep_display(row: pd.Series, bers: list[float]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for ber in bers:
        key = f"@{ber:.0e}"
        mean, low, high = row[f"acc{key}"], row[f"ci_low{key}"], row[f"ci_high{key}"]
        finite = not any(math.isnan(value) or math.isinf(value) for value in (mean, low, high))
        shown[f"acc {ber:.0e}"] = f"{mean:.1f} [{low:.1f}, {high:.1f}]" if finite else _shown(mean, 1)
    for ber in bers:
        shown[f"SDC % {ber:.0e}"] = _with_interval(row, "sdc", f"@{ber:.0e}")
    for ber in bers:
        shown[f"DUE % {ber:.0e}"] = _with_interval(row, "due_rate", f"@{ber:.0e}")
    shown["score"] = _shown(row["score"], 3)
    return shown


def activation_display_frame(table: LeaderboardTable) -> pd.DataFrame:
    """An activation table as people read it: rates in percent with their 95% Wilson intervals."""
    rows = []
    for _, row in table.rows.iterrows():
        shown = {"method": str(row["method"]), "clean": _shown(row["clean_accuracy"], 1)}
        shown.update(_single_fault_display(row) if table.per_inference else _sweep_display(row, table.bers))
        fewest, most = int(row["trials_min"]), int(row["trials_max"])
        shown.update({
            "overhead %": _shown(row["overhead_pct"], 1),
            "prepare s": _shown(row["prepare_s"], 1),
            "trials": str(fewest) if fewest == most else f"{fewest}{MISSING}{most}",
            "citation": str(row["citation"]),
        })
        rows.append(shown)
    return pd.DataFrame(rows)


def activation_legend(table: LeaderboardTable) -> str:
    """The short legend under a markdown activation table."""
    low, high = int(table.rows["trials_min"].min()), int(table.rows["trials_max"].max())
    trials = f"{low}" if low == high else f"{low} to {high}"
    where = f"faults ({table.fault_model}) in conv/linear outputs unless the fault model says otherwise"
    if table.per_inference:
        return (f"*One single-bit flip per inference, {where}; rates in % of inferences ({trials} trials x the test "
                "split) with 95% Wilson intervals; ranked by accuracy under faults. Columns are defined in "
                "results/README.md.*")
    return (f"*Every output bit flips with probability BER, anew for every image, {where}; accuracy: mean over "
            f"{trials} trials [95% interval]; SDC in % of inferences with 95% Wilson intervals. Columns are "
            "defined in results/README.md.*")


def activation_latex_table(table: LeaderboardTable) -> str:
    """One LaTeX ``table`` float of an activation table (booktabs rules)."""
    from resbench.report.latex import latex_escape  # latex imports the leaderboard, which imports this module

    frame = activation_display_frame(table).drop(columns=["citation", "overhead %", "prepare s", "trials"])
    header = " & ".join(latex_escape(str(column)) for column in frame.columns) + r" \\"
    body = [" & ".join(latex_escape(str(value)).replace("±", r"$\pm$") for value in row) + r" \\"
            for row in frame.values]
    setting = "one bit flip per inference" if table.per_inference else "per-bit flips at each BER"
    caption = (f"Silent data corruption of {latex_escape(table.model)} on {latex_escape(table.dataset)} under "
               f"transient faults in activations ({setting}, {latex_escape(table.fault_model)}), in \\% of "
               "inferences with 95\\% Wilson intervals (resbench).")
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
                      rf"\begin{{tabular}}{{l{'r' * (len(frame.columns) - 1)}}}", r"\toprule", header, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
