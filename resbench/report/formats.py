"""Leaderboard output formats: markdown, csv, json, LaTeX and a self-contained HTML page."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from resbench import __version__
from resbench.plugins import hookimpl
from resbench.report.activation_leaderboard import activation_display_frame, activation_legend
from resbench.report.html import citation_link, render_html, short_citation, split_citations
from resbench.report.latex import render_latex
from resbench.report.leaderboard import LeaderboardTable, format_ber

MISSING = "\u2013"  # an en dash marks a value that does not exist

__all__ = ["differences_frame", "display_frame", "register_report_formats", "render_csv", "render_html",
           "render_json", "render_latex", "render_markdown"]


def _number(value: object, digits: int = 1) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return MISSING
    return f"{value:.{digits}f}"


def _trial_range(fewest: int, most: int) -> str:
    return str(fewest) if fewest == most else f"{fewest}{MISSING}{most}"


def _tolerable_ber(row: pd.Series, bers: list[float]) -> str:
    """'estimate [guaranteed, allowed]'; 0 (the smallest BER fails) reads '<smallest BER'."""

    def shown(value: float) -> str:
        if math.isnan(value):
            return MISSING
        return f"<{format_ber(bers[0])}" if value == 0 else format_ber(value)

    if math.isnan(row["tolerable_ber"]):
        return MISSING
    return f"{shown(row['tolerable_ber'])} [{shown(row['tolerable_ber_low'])}, {shown(row['tolerable_ber_high'])}]"


def _with_interval(mean: object, low: object, high: object, digits: int = 1) -> str:
    """``mean [low, high]``; the mean alone where there is no interval."""
    if not isinstance(mean, int | float) or math.isnan(mean):
        return MISSING
    if not isinstance(low, int | float) or not isinstance(high, int | float) or math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _accuracy_with_ci(row: pd.Series, ber: float) -> str:
    key = format_ber(ber)
    return _with_interval(row[f"acc@{key}"], row[f"ci_low@{key}"], row[f"ci_high@{key}"])


def display_frame(table: LeaderboardTable) -> pd.DataFrame:
    """The table as people read it: accuracy 'mean [95% interval]' per BER, rounded columns."""
    if table.target == "activations":
        return activation_display_frame(table)
    rows = []
    several_seeds = len(table.seeds) > 1
    for _, row in table.rows.iterrows():
        shown: dict[str, str] = {"method": str(row["method"]), "rank": str(row["rank"]),
                                 "clean": _number(row["clean_accuracy"]),
                                 "clean vs none": _number(row.get("clean_vs_none", math.nan))}
        for ber in table.bers:
            shown[f"BER {format_ber(ber)}"] = _accuracy_with_ci(row, ber)
        shown["score"] = _with_interval(row["score"], row["score_low"], row["score_high"], 3)
        if several_seeds:
            shown["seed sd"] = _number(row["score_seed_sd"], 3)
        shown.update(
            {
                "tolerable BER": _tolerable_ber(row, table.bers),
                "added values": str(int(row["added_values"])),
                "added bits %": _number(row["added_bits_pct"], 2),
                "overhead %": _with_interval(row["overhead_pct"], row["overhead_low"], row["overhead_high"]),
                "prepare s": _number(row["prepare_s"]),
                "trials": _trial_range(int(row["trials_min"]), int(row["trials_max"])),
                "citation": str(row["citation"]),
                "plugins": str(row.get("plugins", "")),
            }
        )
        rows.append(shown)
    return pd.DataFrame(rows)


def differences_frame(table: LeaderboardTable) -> pd.DataFrame:
    """Paired differences to ``none`` per BER: 'diff [95% interval]', with ``*`` where the
    Holm-adjusted paired test rejects equality at 5%."""
    rows = []
    for _, row in table.rows.iterrows():
        if row["method"] == "none":
            continue
        shown = {"method": str(row["method"])}
        for ber in table.bers:
            key = format_ber(ber)
            text = _with_interval(row.get(f"diff@{key}"), row.get(f"diff_low@{key}"), row.get(f"diff_high@{key}"))
            p_value = row.get(f"p_holm@{key}")
            significant = isinstance(p_value, float) and not math.isnan(p_value) and p_value < 0.05
            shown[f"BER {key}"] = text + (" *" if significant else "")
        rows.append(shown)
    return pd.DataFrame(rows)


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |" for row in frame.values]
    return "\n".join([header, rule, *body])


def _legend(table: LeaderboardTable) -> str:
    """The short legend under a markdown table."""
    if table.target == "activations":
        return activation_legend(table)
    low, high = int(table.rows["trials_min"].min()), int(table.rows["trials_max"].max())
    trials = f"{low}" if low == high else f"{low} to {high}"
    return (f"*{table.description} {trials} trials per BER (one sampled fault pattern each); faults "
            f"({table.fault_model}) in the stored {table.format} values. Columns are defined in results/README.md.*")


def _markdown_citation(text: str) -> str:
    """``[Chen et al., DSN 2021](link)``: short, linked to the paper (a composition's parts joined by +)."""
    shown = []
    for part in split_citations(text):
        link = citation_link(part)
        shown.append(f"[{short_citation(part)}]({link})" if link else short_citation(part))
    return " + ".join(shown)


def render_markdown(tables: list[LeaderboardTable]) -> str:
    """One markdown section per table, with a short legend under it."""
    sections = []
    for table in tables:
        frame = display_frame(table)
        frame["citation"] = frame["citation"].map(_markdown_citation)
        section = f"## {table.title}\n\n{_markdown_table(frame)}\n\n{_legend(table)}\n"
        if table.method_notes:
            section += "\nHow each method's setting differs from its paper:\n\n" + "".join(
                f"* **{method}**: {text}\n" for method, text in table.method_notes)
        differences = differences_frame(table)
        if table.bers and not differences.empty:  # one fault per inference has no BER to compare at
            section += (f"\nPaired difference to none (points) [95% interval]; * = significant after Holm "
                        f"correction:\n\n{_markdown_table(differences)}\n")
        sections.append(section)
    return "\n".join(sections) if sections else "No results in the store.\n"


def _numeric_frame(tables: list[LeaderboardTable]) -> pd.DataFrame:
    frames = []
    for table in tables:
        frame = table.rows.copy()
        for column, value in (("dataset", table.dataset), ("model", table.model), ("format", table.format),
                              ("fault_model", table.fault_model)):
            frame.insert(0, column, value)
        frame["fault_target"] = table.target
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def render_csv(tables: list[LeaderboardTable]) -> str:
    """All tables in one CSV with numeric columns (mean, CI bounds per BER)."""
    buffer = io.StringIO()
    _numeric_frame(tables).to_csv(buffer, index=False)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def render_json(tables: list[LeaderboardTable]) -> str:
    """A JSON list of tables, each with its group, BER grid and numeric rows (NaN as null)."""
    records = [
        {
            "dataset": table.dataset,
            "model": table.model,
            "format": table.format,
            "fault_model": table.fault_model,
            "fault_target": table.target,
            "bers": table.bers,
            "seeds": list(table.seeds),
            "notes": list(table.notes),
            "rows": [{key: _json_safe(value) for key, value in row.items()}
                     for row in table.rows.to_dict(orient="records")],
        }
        for table in tables
    ]
    return json.dumps({"resbench_version": __version__, "tables": records}, indent=2)


@hookimpl
def register_report_formats(register: Any) -> None:
    """Register the built-in leaderboard formats."""
    register("md", render_markdown)
    register("csv", render_csv)
    register("json", render_json)
    register("latex", render_latex)
    register("html", render_html)
