"""Tables as people read them: the one place that turns computed columns into text.

Every renderer (markdown, HTML, LaTeX) shows what this module makes: intervals as ``mean [low, high]``,
an en dash for a value that does not exist, BERs in the one spelling of :mod:`resbench.report.keys`,
citations short and linked. What differs by fault target (a weight table's accuracy per BER and score;
an activation table's rates with Wilson intervals) is a :class:`TableView`, chosen by the table's target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from resbench.methods.base import CITATION_SEPARATOR
from resbench.report.keys import ber_column, format_ber
from resbench.report.tables import LeaderboardTable

__all__ = [
    "MISSING",
    "TableView",
    "citation_link",
    "differences_frame",
    "display_frame",
    "legend",
    "number",
    "short_citation",
    "split_citations",
    "view_of",
    "with_interval",
]

MISSING = "\u2013"  # an en dash marks a value that does not exist

_URL = re.compile(r"https?://[^\s,;)]+")
_CITATION = re.compile(r"^(?P<authors>[^\u201c]+),\s*\u201c(?P<title>[^\u201d]+)\u201d,\s*(?P<venue>[^,]+)")


# -- numbers and intervals ------------------------------------------------------------------------------------


def number(value: object, digits: int = 1) -> str:
    """``value`` rounded to ``digits``; :data:`MISSING` where there is none (NaN, not a number)."""
    if not isinstance(value, int | float) or math.isnan(value):
        return MISSING
    return f"{value:.{digits}f}"


def with_interval(mean: object, low: object, high: object, digits: int = 1) -> str:
    """``mean [low, high]``; the mean alone where there is no finite interval."""
    if not isinstance(mean, int | float) or math.isnan(mean):
        return MISSING
    bounds = (low, high)
    if not all(isinstance(bound, int | float) and math.isfinite(bound) for bound in bounds):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _column_interval(row: pd.Series, name: str, ber: float | None = None, digits: int = 2) -> str:
    """Column ``name`` (at ``ber``) with its ``name_low`` / ``name_high`` bounds."""
    def column(suffix: str) -> str:
        return ber_column(f"{name}{suffix}", ber) if ber is not None else f"{name}{suffix}"

    return with_interval(row.get(column(""), math.nan), row.get(column("_low"), math.nan),
                         row.get(column("_high"), math.nan), digits)


def _accuracy(row: pd.Series, ber: float) -> str:
    """Estimated mean accuracy at ``ber`` with its interval."""
    return with_interval(row[ber_column("acc", ber)], row[ber_column("ci_low", ber)], row[ber_column("ci_high", ber)])


def _trial_range(fewest: int, most: int, between: str = MISSING) -> str:
    return str(fewest) if fewest == most else f"{fewest}{between}{most}"


def _trials_of(table: LeaderboardTable) -> str:
    """The trial counts behind a table: ``30`` or ``30 to 50``."""
    return _trial_range(int(table.rows["trials_min"].min()), int(table.rows["trials_max"].max()), " to ")


def _tolerable_ber(row: pd.Series, bers: list[float]) -> str:
    """'estimate [guaranteed, allowed]'; 0 (the smallest BER fails) reads '<smallest BER'."""

    def shown(value: float) -> str:
        if math.isnan(value):
            return MISSING
        return f"<{format_ber(bers[0])}" if value == 0 else format_ber(value)

    if math.isnan(row["tolerable_ber"]):
        return MISSING
    return f"{shown(row['tolerable_ber'])} [{shown(row['tolerable_ber_low'])}, {shown(row['tolerable_ber_high'])}]"


# -- citations ------------------------------------------------------------------------------------------------


def citation_link(text: str) -> str | None:
    """The first link in a citation, if it has one."""
    match = _URL.search(text)
    return match.group() if match else None


def short_citation(text: str) -> str:
    """``Hoang et al., DATE 2020`` from a full citation (``authors, \u201ctitle\u201d, venue year, link``)."""
    match = _CITATION.match(text)
    if not match:
        return _URL.sub("", text).strip(" ,")
    authors = [part.strip() for part in match.group("authors").split(",") if part.strip()]
    surname = authors[0].split()[-1] if authors else ""
    return f"{surname}{' et al.' if len(authors) > 1 else ''}, {match.group('venue').strip()}"


def split_citations(text: str) -> list[str]:
    """The citations in a cell: one, or a composed method's parts' (joined by ``CITATION_SEPARATOR``)."""
    return [part for part in text.split(CITATION_SEPARATOR) if part.strip()] or [text]


# -- weight faults: accuracy per BER, score, tolerable BER -----------------------------------------------------


def _weight_rows(table: LeaderboardTable) -> pd.DataFrame:
    """Accuracy 'mean [95% interval]' per BER, score, tolerable BER and costs, one row per method."""
    rows = []
    several_seeds = len(table.seeds) > 1
    for _, row in table.rows.iterrows():
        shown: dict[str, str] = {"method": str(row["method"]), "rank": str(row["rank"]),
                                 "clean": number(row["clean_accuracy"]),
                                 "clean vs none": number(row.get("clean_vs_none", math.nan))}
        for ber in table.bers:
            shown[f"BER {format_ber(ber)}"] = _accuracy(row, ber)
        shown["score"] = with_interval(row["score"], row["score_low"], row["score_high"], 3)
        if several_seeds:
            shown["seed sd"] = number(row["score_seed_sd"], 3)
        shown.update(
            {
                "tolerable BER": _tolerable_ber(row, table.bers),
                "added values": str(int(row["added_values"])),
                "added bits %": number(row["added_bits_pct"], 2),
                "added ops": _added_operations(row),
                "overhead %": _overhead(row),
                "prepare s": number(row["prepare_s"]),
                "trials": _trial_range(int(row["trials_min"]), int(row["trials_max"])),
                "citation": str(row["citation"]),
                "plugins": str(row.get("plugins", "")),
            }
        )
        rows.append(shown)
    return pd.DataFrame(rows)


def _added_operations(row: pd.Series) -> str:
    """``+MACs / +elementwise`` per inference, in thousands."""
    macs, elementwise = row.get("added_multiply_adds", math.nan), row.get("added_elementwise", math.nan)
    if not all(isinstance(value, int | float) and math.isfinite(value) for value in (macs, elementwise)):
        return MISSING
    return f"{macs / 1000:+.1f}k / {elementwise / 1000:+.1f}k"


def _overhead(row: pd.Series) -> str:
    """The timed overhead with its interval, marked ``(wide)`` where the interval is too wide to read."""
    shown = with_interval(row["overhead_pct"], row["overhead_low"], row["overhead_high"])
    return f"{shown} (wide)" if bool(row.get("overhead_wide", False)) and shown != MISSING else shown


def _timing_conditions(table: LeaderboardTable) -> str:
    conditions = sorted({str(value) for value in table.rows.get("overhead_conditions", []) if value})
    return f" Overhead timed on {'; '.join(conditions)}." if conditions else ""


def _setup_plugins(table: LeaderboardTable) -> str:
    plugins = sorted({str(value) for value in table.rows.get("setup_plugins", []) if value})
    return f" Model, dataset, format or fault model from: {'; '.join(plugins)}." if plugins else ""


def _weight_legend(table: LeaderboardTable) -> str:
    trials = _trials_of(table)
    return (f"*{table.description} {trials} trials per BER (one sampled fault pattern each); faults "
            f"({table.fault_model}) in the stored {table.format} values.{_setup_plugins(table)}"
            f"{_timing_conditions(table)} Columns are defined in results/README.md.*")


# -- activation faults: rates with Wilson intervals -------------------------------------------------------------


def _single_fault_columns(row: pd.Series) -> dict[str, str]:
    return {
        "accuracy %": _column_interval(row, "accuracy", digits=1),
        "SDC %": _column_interval(row, "sdc"),
        "critical SDC %": _column_interval(row, "critical_sdc"),
        "DUE %": _column_interval(row, "due"),
        "x fewer SDCs than none": _column_interval(row, "sdc_vs_none", digits=1),
        "inferences": number(row.get("inferences", math.nan), 0),
    }


def _sweep_columns(row: pd.Series, bers: list[float]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for ber in bers:
        shown[f"acc {format_ber(ber)}"] = _accuracy(row, ber)
    for ber in bers:
        shown[f"SDC % {format_ber(ber)}"] = _column_interval(row, "sdc", ber)
    for ber in bers:
        shown[f"DUE % {format_ber(ber)}"] = _column_interval(row, "due_rate", ber)
    shown["score"] = number(row["score"], 3)
    return shown


def _activation_rows(table: LeaderboardTable) -> pd.DataFrame:
    """Rates in percent with their 95% Wilson intervals, one row per method."""
    rows = []
    for _, row in table.rows.iterrows():
        shown = {"method": str(row["method"]), "clean": number(row["clean_accuracy"], 1)}
        shown.update(_single_fault_columns(row) if table.per_inference else _sweep_columns(row, table.bers))
        shown.update({
            "overhead %": number(row["overhead_pct"], 1),
            "prepare s": number(row["prepare_s"], 1),
            "trials": _trial_range(int(row["trials_min"]), int(row["trials_max"])),
            "citation": str(row["citation"]),
        })
        rows.append(shown)
    return pd.DataFrame(rows)


def _activation_legend(table: LeaderboardTable) -> str:
    trials = _trials_of(table)
    where = f"faults ({table.fault_model}) in conv/linear outputs unless the fault model says otherwise"
    if table.per_inference:
        return (f"*One single-bit flip per inference, {where}; rates in % of inferences ({trials} trials x the test "
                f"split) with 95% Wilson intervals; ranked by accuracy under faults.{_setup_plugins(table)} Columns "
                "are defined in results/README.md.*")
    return (f"*Every output bit flips with probability BER, anew for every image, {where}; accuracy: mean over "
            f"{trials} trials [95% interval]; SDC in % of inferences with 95% Wilson intervals.{_setup_plugins(table)}"
            " Columns are defined in results/README.md.*")


# -- one view per fault target --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableView:
    """How a table of one fault target reads: its rows as text and the legend under it."""

    rows: Callable[[LeaderboardTable], pd.DataFrame]
    legend: Callable[[LeaderboardTable], str]


_VIEWS: dict[str, TableView] = {
    "weights": TableView(_weight_rows, _weight_legend),
    "activations": TableView(_activation_rows, _activation_legend),
}


def view_of(table: LeaderboardTable) -> TableView:
    """The view of ``table``'s fault target."""
    return _VIEWS[table.target]


def display_frame(table: LeaderboardTable) -> pd.DataFrame:
    """The table as people read it (its fault target's view): rounded values, intervals, short text."""
    return view_of(table).rows(table)


def legend(table: LeaderboardTable) -> str:
    """The short legend under a table (what its figures estimate, trials, fault model)."""
    return view_of(table).legend(table)


def differences_frame(table: LeaderboardTable) -> pd.DataFrame:
    """Paired differences to ``none`` per BER: 'diff [95% interval]', with ``*`` where the
    Holm-adjusted paired test rejects equality at 5% and the interval excludes 0 (the test alone cannot see
    a catastrophe the trials have not met; the interval can)."""
    rows = []
    for _, row in table.rows.iterrows():
        if row["method"] == "none":
            continue
        shown = {"method": str(row["method"])}
        for ber in table.bers:
            text = with_interval(row.get(ber_column("diff", ber)), row.get(ber_column("diff_low", ber)),
                                 row.get(ber_column("diff_high", ber)))
            p_value = row.get(ber_column("p_holm", ber))
            low, high = row.get(ber_column("diff_low", ber)), row.get(ber_column("diff_high", ber))
            significant = (isinstance(p_value, float) and not math.isnan(p_value) and p_value < 0.05
                           and (low > 0 or high < 0))
            shown[f"BER {format_ber(ber)}"] = text + (" *" if significant else "")
        rows.append(shown)
    return pd.DataFrame(rows)
