"""Computed columns of leaderboard tables for transient faults in activations (``act-single``, ``act-bitflip``).

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

import numpy as np
import pandas as pd

from resbench.engine.bers import ONE_FAULT_PER_INFERENCE
from resbench.report.keys import ber_column
from resbench.statistics import wilson_interval

__all__ = ["activation_columns", "katz_ratio_interval", "rank_single_fault_rows"]


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
        key = ber_column("", ber)
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
