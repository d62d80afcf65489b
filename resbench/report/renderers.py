"""Leaderboard renderers: markdown, csv and json here, LaTeX (:mod:`~resbench.report.latex`) and a
self-contained HTML page (:mod:`~resbench.report.html`) beside; all registered as report formats."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from resbench import __version__
from resbench.plugins import hookimpl
from resbench.report.display import (
    citation_link,
    differences_frame,
    display_frame,
    legend,
    short_citation,
    split_citations,
)
from resbench.report.html import render_html
from resbench.report.latex import render_latex
from resbench.report.tables import LeaderboardTable

__all__ = ["register_report_formats", "render_csv", "render_html", "render_json", "render_latex", "render_markdown"]


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |" for row in frame.values]
    return "\n".join([header, rule, *body])


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
        section = f"## {table.title}\n\n{_markdown_table(frame)}\n\n{legend(table)}\n"
        if table.method_notes:
            section += "\nHow each method's setting differs from its paper:\n\n" + "".join(
                f"* **{method}**: {text}\n" for method, text in table.method_notes)
        differences = differences_frame(table)
        if table.bers and not differences.empty:  # one fault per inference has no BER to compare at
            section += (f"\nPaired difference to none (points) [95% interval]; * = significant after Holm "
                        f"correction, with an interval that excludes 0:\n\n{_markdown_table(differences)}\n")
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
