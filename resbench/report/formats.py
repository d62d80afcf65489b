"""Leaderboard output formats: markdown, csv, json, LaTeX and a self-contained HTML page."""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

import pandas as pd

from resbench import __version__
from resbench.plugins import hookimpl
from resbench.report.leaderboard import LeaderboardTable, format_ber

MISSING = "\u2013"  # an en dash marks a value that does not exist

__all__ = ["display_frame", "register_report_formats", "render_csv", "render_html", "render_json", "render_latex",
           "render_markdown"]


def _number(value: object, digits: int = 1) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return MISSING
    return f"{value:.{digits}f}"


def _trial_range(fewest: int, most: int) -> str:
    return str(fewest) if fewest == most else f"{fewest}{MISSING}{most}"


def _accuracy_with_ci(row: pd.Series, ber: float) -> str:
    key = format_ber(ber)
    mean, high = row[f"acc@{key}"], row[f"ci_high@{key}"]
    if math.isnan(mean):
        return MISSING
    if math.isinf(high) or math.isnan(high):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {high - mean:.1f}"


def display_frame(table: LeaderboardTable) -> pd.DataFrame:
    """The table as people read it: accuracy 'mean ± CI half-width' per BER, rounded columns."""
    rows = []
    for _, row in table.rows.iterrows():
        shown: dict[str, str] = {"method": str(row["method"]), "clean": _number(row["clean_accuracy"])}
        for ber in table.bers:
            shown[f"BER {format_ber(ber)}"] = _accuracy_with_ci(row, ber)
        tolerable = row["tolerable_ber"]
        shown.update(
            {
                "AUC": _number(row["auc"], 3),
                "tolerable BER": MISSING if math.isnan(tolerable) else format_ber(tolerable),
                "added values": str(int(row["added_values"])),
                "added bits %": _number(row["added_bits_pct"], 2),
                "overhead %": _number(row["overhead_pct"]),
                "prepare s": _number(row["prepare_s"]),
                "trials": _trial_range(int(row["trials_min"]), int(row["trials_max"])),
                "citation": str(row["citation"]),
            }
        )
        rows.append(shown)
    return pd.DataFrame(rows)


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |" for row in frame.values]
    return "\n".join([header, rule, *body])


def render_markdown(tables: list[LeaderboardTable]) -> str:
    """One markdown section per table; accuracy in percent, mean ± 95% CI half-width."""
    sections = [f"## {table.title}\n\n{_markdown_table(display_frame(table))}\n" for table in tables]
    return "\n".join(sections) if sections else "No results in the store.\n"


def _numeric_frame(tables: list[LeaderboardTable]) -> pd.DataFrame:
    frames = []
    for table in tables:
        frame = table.rows.copy()
        for column, value in (("dataset", table.dataset), ("model", table.model), ("format", table.format),
                              ("fault_model", table.fault_model)):
            frame.insert(0, column, value)
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
            "bers": table.bers,
            "rows": [{key: _json_safe(value) for key, value in row.items()}
                     for row in table.rows.to_dict(orient="records")],
        }
        for table in tables
    ]
    return json.dumps({"resbench_version": __version__, "tables": records}, indent=2)


def _latex_escape(text: str) -> str:
    for plain, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                           ("±", r"$\pm$"), (MISSING, "--")):
        text = text.replace(plain, escaped)
    return text


def render_latex(tables: list[LeaderboardTable]) -> str:
    """One ``tabular`` per table (booktabs rules), ready to paste into a paper."""
    parts = []
    for table in tables:
        frame = display_frame(table).drop(columns=["citation"])
        columns = "l" + "r" * (len(frame.columns) - 1)
        lines = [f"% {table.title}", f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
                 " & ".join(_latex_escape(str(c)) for c in frame.columns) + r" \\", "\\midrule"]
        lines += [" & ".join(_latex_escape(str(v)) for v in row) + r" \\" for row in frame.values]
        lines += ["\\bottomrule", "\\end{tabular}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 2rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td:last-child { text-align: left; }
thead th { background: #f0f0f0; }
"""


def render_html(tables: list[LeaderboardTable]) -> str:
    """A self-contained HTML page (inline style, no scripts or external resources)."""
    sections = []
    for table in tables:
        frame = display_frame(table)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in frame.values
        )
        sections.append(
            f"<h2>{html.escape(table.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    content = "\n".join(sections) or "<p>No results in the store.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>resbench leaderboard</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>resbench leaderboard</h1>\n<p>Accuracy in percent: mean ± 95% confidence half-width over trials. "
        f"resbench {html.escape(__version__)}.</p>\n{content}\n</body>\n</html>\n"
    )


@hookimpl
def register_report_formats(register: Any) -> None:
    """Register the built-in leaderboard formats."""
    register("md", render_markdown)
    register("csv", render_csv)
    register("json", render_json)
    register("latex", render_latex)
    register("html", render_html)
